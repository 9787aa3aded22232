// The CUDA backend's host side, without a GPU: how a call's work is cut and
// where its arrays sit in the workspace (backend/cuda/layout.hpp), and the
// capacity of api.hpp.

#include <algorithm>
#include <array>
#include <vector>

#include <catch2/catch.hpp>
#include <freepruner/backend/cuda/api.hpp>
#include <freepruner/backend/cuda/layout.hpp>

namespace {

namespace fp = freepruner;
namespace impl = freepruner::detail::cuda;
using fp::index_t;

impl::layout layout_of(index_t batch, index_t layers, index_t heads, index_t tokens, std::size_t element_size,
                      const fp::budget& b = fp::budget::ratio(0.5), const fp::options& o = {}) {
  impl::layout l;
  const fp::status s = impl::make_layout({batch, layers, heads, tokens, tokens}, b, o, element_size, l);
  INFO(s.message());
  REQUIRE(s.ok());
  return l;
}

}  // namespace

TEST_CASE("CUDA layout: the work covers every column and row, within one launch each", "[cuda]") {
  for (index_t n : {1, 2, 31, 33, 577, 729, 1024, 1025, 4096})
    for (std::size_t element_size : {std::size_t{2}, std::size_t{4}})
      for (index_t batch : {1, 3, 64}) {
        const index_t layers = 2, heads = 16;
        const impl::layout l = layout_of(batch, layers, heads, n, element_size);
        const impl::tiling& t = l.t;
        INFO("N = " << n << ", element size " << element_size << ", batch " << batch);
        CHECK(t.tile_width <= impl::tile_bytes / static_cast<int>(element_size));
        CHECK(static_cast<index_t>(t.tiles) * t.tile_width >= n);
        CHECK(static_cast<index_t>(t.tiles - 1) * t.tile_width < n);
        const index_t rows = heads * n;
        CHECK(t.rows_per_chunk % impl::stage_rows == 0);
        CHECK(t.chunks * t.rows_per_chunk >= rows);
        CHECK((t.chunks - 1) * t.rows_per_chunk < rows);
        CHECK(t.column_blocks * 32 >= n);
        CHECK(t.groups >= 1);
        CHECK(t.groups <= std::min<index_t>(impl::max_groups, n));
        CHECK(l.degree_blocks == batch * layers * t.tiles * t.chunks);
        CHECK(l.reduce_blocks == batch * layers * t.column_blocks);
        CHECK(l.complement_blocks == batch * t.groups);
      }
}

TEST_CASE("CUDA layout: workspace arrays are 256-byte aligned, in order, inside the size", "[cuda]") {
  const impl::layout l = layout_of(5, 3, 4, 577, 2);
  const std::vector<std::size_t> at{l.partials, l.degrees,    l.status, l.pivot_count, l.arrivals, l.pivots, l.ranks,
                                    l.is_pivot, l.is_outlier, l.keep,   l.scores,      l.affinity, l.located};
  for (std::size_t k = 0; k < at.size(); ++k) {
    CHECK(at[k] % 256 == 0);
    if (k > 0) CHECK(at[k] > at[k - 1]);
  }
  const index_t n = 577, z = 5 * 3;
  CHECK(l.degrees - l.partials >= static_cast<std::size_t>(z * l.t.chunks * n) * sizeof(double));
  CHECK(l.affinity - l.scores >= static_cast<std::size_t>(5 * l.t.groups * n) * sizeof(double));
  CHECK(l.bytes >= l.located + sizeof(unsigned long long));
  CHECK(l.bytes % 256 == 0);
  // The size depends on the shape, budget and options only: the same on every query.
  CHECK(layout_of(5, 3, 4, 577, 2).bytes == l.bytes);
  CHECK(layout_of(0, 3, 4, 577, 2).bytes > 0);
}

TEST_CASE("CUDA layout: the kernel parameters follow the options", "[cuda]") {
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 2;
  o.pivots_per_layer = 1000;
  o.complementary_layer = -1;
  o.pivot_layers = {2, 0};
  o.complementary_from = fp::direction::column;
  const impl::layout l = layout_of(2, 3, 4, 50, 4, fp::budget::count(10), o);
  const std::vector<float> maps(1);
  const fp::batched_attention_view<const float, fp::device_memory> v(maps.data(), {2, 3, 4, 50, 50},
                                                                     {30000, 10000, 2500, 1, 50});
  const impl::problem p = impl::problem_of(l, v, o);
  CHECK(p.first == 1);
  CHECK(p.last == 48);
  CHECK(p.top_k == 47);  // clamped to M
  CHECK(!p.budget.is_adaptive());
  CHECK(p.budget.count() == 10);
  CHECK(p.complementary_layer == 2);
  CHECK(p.column);
  CHECK(p.pivot_layer_count == 2);
  CHECK(p.pivot_layers[0] == 2);
  CHECK(p.pivot_layers[1] == 0);
  CHECK(p.row_stride == 1);
  CHECK(p.key_stride == 50);
  CHECK(layout_of(1, 1, 1, 10, 4, fp::budget::adaptive()).budget.is_adaptive());
}

TEST_CASE("CUDA layout: bad input, and what one launch cannot hold", "[cuda]") {
  impl::layout l;
  fp::options o;
  CHECK(impl::make_layout({-1, 1, 1, 4, 4}, fp::budget::adaptive(), o, 4, l).code() == fp::errc::invalid_shape);
  CHECK(impl::make_layout({1, 1, 1, 4, 5}, fp::budget::adaptive(), o, 4, l).code() == fp::errc::invalid_shape);
  CHECK(impl::make_layout({1, 1, 1, 4, 4}, fp::budget::count(0), o, 4, l).code() == fp::errc::invalid_budget);
  const fp::status huge = impl::make_layout({index_t{1} << 40, 2, 16, 577, 577}, fp::budget::adaptive(), o, 2, l);
  CHECK(huge.code() == fp::errc::invalid_shape);
  CHECK(huge.message().find("too large for one launch") != std::string::npos);
  fp::options deep;
  for (index_t k = 0; k < 257; ++k) deep.pivot_layers.push_back(k);
  const fp::status s = impl::make_layout({1, 257, 1, 4, 4}, fp::budget::adaptive(), deep, 4, l);
  CHECK(s.code() == fp::errc::invalid_layer);
  CHECK(s.message().find("at most 256") != std::string::npos);
}

TEST_CASE("CUDA capacity: the fixed count, or M for adaptive", "[cuda]") {
  fp::options cls;
  cls.prefix_tokens = 1;
  index_t c = 0;
  CHECK(fp::cuda::capacity(fp::budget::ratio(0.5), 577, cls, c).ok());
  CHECK(c == 288);
  CHECK(fp::cuda::capacity(fp::budget::count(1000), 577, cls, c).ok());
  CHECK(c == 576);
  CHECK(fp::cuda::capacity(fp::budget::adaptive(), 577, cls, c).ok());
  CHECK(c == 576);
  CHECK(fp::cuda::capacity(fp::budget::ratio(2.0), 577, cls, c).code() == fp::errc::invalid_budget);
  CHECK(fp::cuda::capacity(fp::budget::adaptive(), 0, cls, c).code() == fp::errc::invalid_shape);
  const auto m = fp::cuda::device_maps::contiguous(nullptr, fp::cuda::dtype::f16, 2, 3, 4, 5);
  CHECK(m.strides == std::array<index_t, 5>{300, 100, 25, 5, 1});
}

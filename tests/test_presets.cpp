// Presets (presets.hpp) and merge pooling (merge.hpp): every preset's numbers
// add up and match its model's config, select with each preset's options on
// random maps of its shape agrees with the float64 reference, pooling to
// merged tokens agrees with a float64 pooling written out here, and every bad
// input is rejected with the argument and its value.

#include <catch2/catch.hpp>

#include <freepruner/freepruner.hpp>
#include <freepruner/extras/presets.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"

namespace fp = freepruner;
using fp::errc;
using fp::index_t;
using Catch::Matchers::Contains;

namespace {

std::vector<fp::preset> every_preset() {
  std::vector<fp::preset> out;
  for (const auto& name : fp::presets::names())
    if (name.find('<') == std::string::npos) out.push_back(fp::presets::by_name(name));
  out.push_back(fp::presets::qwen2_vl(32, 32));
  out.push_back(fp::presets::qwen2_vl(2, 2));
  out.push_back(fp::presets::qwen2_vl(36, 54, 4));
  return out;
}

// The reference's configuration for a preset's selection on `heads` heads.
fpref::config config_of(const fp::preset& p, int heads, fpref::budget_kind kind, double value) {
  fpref::config c;
  c.layers = static_cast<int>(p.capture_layers.size());
  c.heads = heads;
  c.tokens = static_cast<int>(p.select_tokens());
  c.prefix = static_cast<int>(p.prefix_tokens());
  c.suffix = static_cast<int>(p.suffix_tokens());
  c.kind = kind;
  c.budget_value = value;
  c.pivots_per_layer = static_cast<int>(p.select_options.pivots_per_layer);
  c.fence_factor = p.select_options.fence_factor;
  c.column = p.select_options.complementary_from == fp::direction::column;
  c.complementary_layer = static_cast<int>(p.select_options.complementary_layer);
  for (index_t l : p.select_options.pivot_layers) c.pivot_layers.push_back(static_cast<int>(l));
  return c;
}

// Float64 pooling written out from the formula: A'[I][J] = (1/g) sum_{i in I} sum_{j in J} A[i][j],
// with group I's members listed in `members[I]`.
std::vector<double> pool_reference(const std::vector<double>& maps, int layers, int heads, int n,
                                   const std::vector<std::vector<int>>& members) {
  const int m = static_cast<int>(members.size());
  std::vector<double> out(static_cast<std::size_t>(layers) * heads * m * m);
  for (int lh = 0; lh < layers * heads; ++lh)
    for (int gi = 0; gi < m; ++gi)
      for (int gj = 0; gj < m; ++gj) {
        double s = 0;
        for (int i : members[static_cast<std::size_t>(gi)])
          for (int j : members[static_cast<std::size_t>(gj)])
            s += maps[(static_cast<std::size_t>(lh) * n + i) * n + j];
        out[(static_cast<std::size_t>(lh) * m + gi) * m + gj] = s / static_cast<double>(members[0].size());
      }
  return out;
}

std::vector<std::vector<int>> consecutive_groups(int n, int g) {
  std::vector<std::vector<int>> out(static_cast<std::size_t>(n / g));
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i / g)].push_back(i);
  return out;
}

std::vector<std::vector<int>> block_groups(int rows, int cols, int f) {
  std::vector<std::vector<int>> out(static_cast<std::size_t>((rows / f) * (cols / f)));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[static_cast<std::size_t>((r / f) * (cols / f) + c / f)].push_back(r * cols + c);
  return out;
}

template <class F>
void require_error(F&& call, errc code, const std::string& text) {
  try {
    call();
    FAIL("no error for: " << text);
  } catch (const fp::error& e) {
    CHECK(e.code() == code);
    CHECK_THAT(e.what(), Contains(text));
  }
}

}  // namespace

TEST_CASE("every preset is self-consistent", "[presets]") {
  for (const auto& p : every_preset()) {
    INFO(p.name);
    const auto s = fp::check_preset(p);
    INFO(s.message());
    REQUIRE(s.ok());
    const index_t m = p.spatial_merge;
    CHECK(p.grid_rows * p.grid_cols + (m == 1 ? p.prefix_tokens() + p.suffix_tokens() : 0) == p.tokens);
    CHECK(p.select_tokens() * m * m == p.tokens);
    CHECK(p.llm_tokens() == (p.grid_rows / m) * (p.grid_cols / m));
    const auto g = p.layout();
    CHECK(g.rows * g.cols == p.llm_tokens());
    CHECK(fp::check_layout(g).ok());
    // Complementary tokens come from the layer the projector reads (the paper's penultimate for LLaVA).
    CHECK(p.select_options.complementary_layer == -1);
    CHECK(p.capture_layers.back() == p.feature_layer);
    CHECK(p.select_options.pivot_layers.empty());
    CHECK(p.kept_tokens(fp::budget::ratio(1.0)) == std::optional<index_t>(p.llm_tokens()));
    CHECK(!p.source.empty());
    // The name gives the same preset back.
    const auto again = fp::presets::by_name(p.name);
    CHECK(again.tokens == p.tokens);
    CHECK(again.name == p.name);
    CHECK(again.prefix_tokens() == p.prefix_tokens());
    CHECK(again.suffix_tokens() == p.suffix_tokens());
    CHECK(again.capture_layers == p.capture_layers);
  }
}

TEST_CASE("preset numbers match the models' configs", "[presets]") {
  const auto llava = fp::presets::llava_1_5();
  CHECK(llava.tokens == 577);
  CHECK(llava.prefix_tokens() == 1);
  CHECK(llava.suffix_tokens() == 0);
  CHECK(llava.grid_rows == 336 / 14);
  CHECK(llava.encoder_layers == 24);
  CHECK(llava.feature_layer == 24 - 2);  // vision_feature_layer -2
  CHECK(llava.heads == 16);
  CHECK(llava.llm_tokens() == 576);
  CHECK(llava.kept_tokens(fp::budget::ratio(0.5)) == std::optional<index_t>(288));
  CHECK_THAT(llava.source, Contains("clip-vit-large-patch14-336") && Contains("-2") && Contains("2411.15446"));

  const auto next = fp::presets::llava_next_crop();
  CHECK(next.tokens == 577);
  CHECK(next.feature_layer == 22);
  CHECK_THAT(next.source, Contains("image_grid_pinpoints") && Contains("[672,672]"));

  const auto video = fp::presets::video_llava();
  CHECK(video.tokens == 257);
  CHECK(video.grid_rows * video.grid_cols == 256);
  CHECK(video.frames == 8);
  CHECK(video.frames * video.llm_tokens() == 2048);
  CHECK_THAT(video.source, Contains("LanguageBind"));

  const auto siglip = fp::presets::siglip_so400m();
  CHECK(siglip.tokens == 729);
  CHECK(siglip.grid_rows == 384 / 14);
  CHECK(siglip.prefix_tokens() + siglip.suffix_tokens() == 0);
  CHECK(siglip.encoder_layers == 27);
  CHECK_THAT(siglip.source, Contains("so400m-patch14-384"));

  const auto qwen = fp::presets::qwen2_vl(36, 54);
  CHECK(qwen.name == "qwen2-vl:36x54");
  CHECK(qwen.tokens == 36 * 54);
  CHECK(qwen.spatial_merge == 2);
  CHECK(qwen.merge_groups == fp::merge_layout::consecutive);
  CHECK(qwen.select_tokens() == 18 * 27);
  CHECK(qwen.layout().rows == 18);
  CHECK(qwen.layout().cols == 27);
  CHECK(qwen.encoder_layers == 32);
  CHECK(qwen.feature_layer == 31);
  CHECK(qwen.kept_tokens(fp::budget::count(100)) == std::optional<index_t>(100));
  CHECK_THAT(qwen.source, Contains("spatial_merge_size 2") && Contains("temporal_patch_size 2"));
  CHECK(fp::presets::qwen2_vl(4, 6, 3).frames == 3);
}

TEST_CASE("the CLS-last variants put CLS after the patches", "[presets]") {
  for (const char* base : {"llava-1.5", "llava-next-crop", "video-llava"}) {
    INFO(base);
    const auto first = fp::presets::by_name(base);
    const auto last = fp::presets::by_name(std::string(base) + "-cls-last");
    CHECK(last.name == std::string(base) + "-cls-last");
    CHECK(last.prefix_tokens() == 0);
    CHECK(last.suffix_tokens() == 1);
    CHECK(last.tokens == first.tokens);
    CHECK(last.llm_tokens() == first.llm_tokens());
    CHECK(fp::check_preset(last).ok());
    CHECK(first.with_cls_last().name == last.name);
    CHECK(last.layout().suffix_tokens == 1);
  }
  const auto siglip = fp::presets::siglip_so400m();
  CHECK(siglip.with_cls_last().name == siglip.name);  // no CLS: nothing moves
  CHECK(siglip.with_cls_last().suffix_tokens() == 0);
  const auto qwen = fp::presets::qwen2_vl(4, 4);
  CHECK(qwen.with_cls_last().name == qwen.name);
}

TEST_CASE("by_name rejects unknown names and bad Qwen2-VL grids", "[presets][errors]") {
  for (const char* name : {"", "llava", "LLaVA-1.5", "siglip-so400m-cls-last", "llava-1.5-cls-last-cls-last", "qwen2-vl",
                           "qwen2-vl:", "qwen2-vl:32", "qwen2-vl:32x", "qwen2-vl:x32", "qwen2-vl:ax4", "qwen2-vl:-4x4",
                           "qwen2-vl:1234567x2"}) {
    INFO(name);
    try {
      (void)fp::presets::by_name(name);
      FAIL("accepted");
    } catch (const fp::error& e) {
      CHECK(e.code() == errc::invalid_option);
      CHECK_THAT(e.what(), Contains(std::string("preset name = \"") + name + "\""));
      for (const auto& known : fp::presets::names()) CHECK_THAT(e.what(), Contains(known));
    }
  }
  require_error([] { (void)fp::presets::by_name("qwen2-vl:31x32"); }, errc::invalid_shape, "grid_rows = 31");
  require_error([] { (void)fp::presets::by_name("qwen2-vl:32x0"); }, errc::invalid_shape, "grid_cols = 0");
  require_error([] { (void)fp::presets::qwen2_vl(4, 5); }, errc::invalid_shape, "grid_cols = 5");
  require_error([] { (void)fp::presets::qwen2_vl(-2, 4); }, errc::invalid_shape, "grid_rows = -2");
  require_error([] { (void)fp::presets::qwen2_vl(46342, 4); }, errc::invalid_shape, "grid_rows = 46342");
  require_error([] { (void)fp::presets::qwen2_vl(4, 4, 0); }, errc::invalid_shape, "temporal_patches = 0");
  CHECK(fp::presets::by_name("qwen2-vl:2x46340").tokens == 2 * 46340);
}

TEST_CASE("check_preset names the inconsistent field", "[presets][errors]") {
  const auto good = fp::presets::llava_1_5();
  REQUIRE(fp::check_preset(good).ok());
  struct bad_case {
    void (*edit)(fp::preset&);
    errc code;
    const char* text;
  };
  const bad_case cases[] = {
      {[](fp::preset& p) { p.name.clear(); }, errc::invalid_option, "preset name is empty"},
      {[](fp::preset& p) { p.tokens = 576; }, errc::invalid_shape, "24 * 24 + 1 + 0 does not match tokens = 576"},
      {[](fp::preset& p) { p.grid_cols = 23; }, errc::invalid_shape, "24 * 23 + 1 + 0 does not match tokens = 577"},
      {[](fp::preset& p) { p.select_options.suffix_tokens = 1; }, errc::invalid_shape, "24 * 24 + 1 + 1"},
      {[](fp::preset& p) { p.tokens = 0; }, errc::invalid_shape, "tokens = 0"},
      {[](fp::preset& p) { p.heads = 0; }, errc::invalid_shape, "heads = 0"},
      {[](fp::preset& p) { p.frames = 0; }, errc::invalid_shape, "frames = 0"},
      {[](fp::preset& p) { p.grid_rows = -24; }, errc::invalid_shape, "grid_rows = -24"},
      {[](fp::preset& p) { p.select_options.prefix_tokens = -1; }, errc::invalid_tokens, "options.prefix_tokens = -1"},
      {[](fp::preset& p) { p.spatial_merge = 0; }, errc::invalid_shape, "spatial_merge = 0"},
      {[](fp::preset& p) { p.spatial_merge = 5; }, errc::invalid_shape, "spatial_merge = 5 does not divide grid_rows = 24"},
      {[](fp::preset& p) { p.spatial_merge = 2; }, errc::invalid_tokens, "prefix_tokens = 1"},
      {[](fp::preset& p) { p.feature_layer = 24; }, errc::invalid_layer, "feature_layer = 24"},
      {[](fp::preset& p) { p.capture_layers.clear(); }, errc::invalid_layer, "capture_layers is empty"},
      {[](fp::preset& p) { p.capture_layers = {21, 23}; }, errc::invalid_layer, "capture_layers[1] = 23 is outside 0..feature_layer = 0..22"},
      {[](fp::preset& p) { p.capture_layers = {22, 21}; }, errc::invalid_layer, "capture_layers[1] = 21 does not follow"},
      {[](fp::preset& p) { p.capture_layers = {-1, 22}; }, errc::invalid_layer, "capture_layers[0] = -1"},
      {[](fp::preset& p) { p.select_options.complementary_layer = 2; }, errc::invalid_layer, "options.complementary_layer = 2"},
      {[](fp::preset& p) { p.select_options.pivot_layers = {0, 0}; }, errc::invalid_layer, "names layer 0 twice"},
      {[](fp::preset& p) { p.select_options.fence_factor = -1; }, errc::invalid_option, "options.fence_factor = -1"},
  };
  for (const auto& c : cases) {
    fp::preset p = good;
    c.edit(p);
    const auto s = fp::check_preset(p);
    INFO(c.text << " -> " << s.message());
    CHECK(s.code() == c.code);
    CHECK_THAT(s.message(), Contains(c.text));
    if (!p.name.empty()) CHECK_THAT(s.message(), Contains("preset \"llava-1.5\": "));
  }
  fp::preset merged = fp::presets::qwen2_vl(4, 4);
  merged.grid_cols = 6;
  CHECK_THAT(fp::check_preset(merged).message(), Contains("4 * 6 + 0 + 0 does not match tokens = 16"));
}

TEST_CASE("select with each preset's options on random maps of its shape", "[presets][reference]") {
  for (const auto& p : every_preset()) {
    if (p.tokens > 1100) continue;  // shapes up to CLIP/SigLIP size; merged below
    const int layers = static_cast<int>(p.capture_layers.size()), heads = 2, n = static_cast<int>(p.tokens);
    const int items = p.frames > 1 ? 2 : 1;  // two frames of a video as a batch
    INFO(p.name);
    std::vector<float> maps;
    std::vector<std::vector<double>> per_item;
    for (int b = 0; b < items; ++b) {
      per_item.push_back(fptest::widen(fptest::convert<float>(fptest::random_maps(layers, heads, n))));
      for (double x : per_item.back()) maps.push_back(static_cast<float>(x));
    }
    if (p.spatial_merge > 1) {
      // Select on the merged maps: indices count merged tokens.
      std::vector<double> pooled;
      const auto view = p.merge_maps(fp::attention_view<const float>(maps.data(), layers, heads, n), pooled);
      REQUIRE(view.tokens() == p.select_tokens());
      const auto groups = consecutive_groups(n, static_cast<int>(p.spatial_merge * p.spatial_merge));
      const auto want_maps = pool_reference(per_item[0], layers, heads, n, groups);
      for (auto kind : {fpref::budget_kind::adaptive, fpref::budget_kind::ratio}) {
        const auto c = config_of(p, heads, kind, 0.5);
        const auto got = fp::select(view, fptest::budget_of(c), p.select_options);
        const auto want = fpref::select(want_maps, c);
        CHECK(got.indices == fptest::tokens_of(want.indices));
        for (auto t : got.indices) CHECK(t < p.select_tokens());
        if (kind == fpref::budget_kind::ratio) CHECK(static_cast<index_t>(got.size()) == *p.kept_tokens(fp::budget::ratio(0.5)));
      }
      continue;
    }
    for (auto kind : {fpref::budget_kind::adaptive, fpref::budget_kind::ratio, fpref::budget_kind::count}) {
      const auto c = config_of(p, heads, kind, kind == fpref::budget_kind::count ? 100 : 0.5);
      const fp::batched_attention_view<const float> batch(maps.data(), items, layers, heads, n);
      const auto got = fp::select(batch, fptest::budget_of(c), p.select_options);
      REQUIRE(static_cast<int>(got.size()) == items);
      for (int b = 0; b < items; ++b) {
        const auto want = fpref::select(per_item[static_cast<std::size_t>(b)], c);
        CHECK(got[static_cast<std::size_t>(b)].indices == fptest::tokens_of(want.indices));
        CHECK(got[static_cast<std::size_t>(b)].pivotal == fptest::tokens_of(want.pivotal));
        if (kind != fpref::budget_kind::adaptive)
          CHECK(static_cast<index_t>(got[static_cast<std::size_t>(b)].size()) == *p.kept_tokens(fptest::budget_of(c)));
        // Never CLS, wherever the preset puts it.
        for (auto t : got[static_cast<std::size_t>(b)].indices) {
          CHECK(t >= p.prefix_tokens());
          CHECK(t < p.tokens - p.suffix_tokens());
        }
      }
    }
  }
}

TEST_CASE("select on merged Qwen2-VL maps returns merged-token indices", "[presets][merge]") {
  const auto p = fp::presets::qwen2_vl(16, 20);  // 320 patches, 80 LLM tokens
  const int layers = 2, heads = 3, n = 320;
  const auto maps = fptest::convert<float>(fptest::random_maps(layers, heads, n));
  std::vector<float> pooled;
  const auto view = p.merge_maps(fp::attention_view<const float>(maps.data(), layers, heads, n), pooled);
  REQUIRE(view.tokens() == 80);
  const auto kept = fp::select(view, fp::budget::count(40), p.select_options);
  REQUIRE(kept.size() == 40);
  for (auto t : kept.indices) CHECK(t < 80);
  // Positions on the merged 8 x 10 grid.
  const auto places = fp::grid_positions(kept.indices, p.layout());
  for (std::size_t k = 0; k < places.size(); ++k) {
    CHECK(places[k].row == kept.indices[k] / 10);
    CHECK(places[k].col == kept.indices[k] % 10);
  }
}

TEST_CASE("merge pooling matches the float64 formula", "[merge][reference]") {
  for (int trial = 0; trial < 40; ++trial) {
    const int layers = fptest::uniform_int(1, 3), heads = fptest::uniform_int(1, 3);
    const int f = fptest::uniform_int(1, 3), rows = f * fptest::uniform_int(1, 4), cols = f * fptest::uniform_int(1, 4);
    const int n = rows * cols;
    const bool grid = fptest::uniform_int(0, 1) == 1;
    INFO("L=" << layers << " H=" << heads << " rows=" << rows << " cols=" << cols << " f=" << f << " grid=" << grid);
    const auto maps = fptest::random_maps(layers, heads, n);
    const auto groups = grid ? block_groups(rows, cols, f) : consecutive_groups(n, f * f);
    const auto want = pool_reference(maps, layers, heads, n, groups);
    const int m = n / (f * f);
    const fp::attention_view<const double> in(maps.data(), layers, heads, n);

    std::vector<double> out;
    const auto view = grid ? fp::merge_attention_grid(in, rows, cols, f, out) : fp::merge_attention(in, f * f, out);
    REQUIRE(view.layers() == layers);
    REQUIRE(view.heads() == heads);
    REQUIRE(view.tokens() == m);
    REQUIRE(view.data() == out.data());
    REQUIRE(out.size() == want.size());
    for (std::size_t k = 0; k < out.size(); ++k) REQUIRE(out[k] == Approx(want[k]).epsilon(1e-13));
    // Rows of softmax maps still sum to 1.
    for (int lh = 0; lh < layers * heads; ++lh)
      for (int i = 0; i < m; ++i) {
        double s = 0;
        for (int j = 0; j < m; ++j) s += view(lh / heads, lh % heads, i, j);
        REQUIRE(s == Approx(1.0).epsilon(1e-12));
      }
    // float storage: the same sums, rounded once.
    std::vector<float> out_f;
    const auto view_f = grid ? fp::merge_attention_grid(in, rows, cols, f, out_f) : fp::merge_attention(in, f * f, out_f);
    for (std::size_t k = 0; k < out_f.size(); ++k) REQUIRE(out_f[k] == static_cast<float>(out[k]));
    REQUIRE(view_f.tokens() == m);
  }
}

TEST_CASE("merge pooling reads strided maps and half types", "[merge]") {
  const int layers = 2, heads = 2, n = 8;
  const auto maps = fptest::random_maps(layers, heads, n);
  // The same maps stored [head][layer][key][query] and read through strides.
  std::vector<double> shuffled(maps.size());
  for (int l = 0; l < layers; ++l)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
          shuffled[((static_cast<std::size_t>(h) * layers + l) * n + j) * n + i] =
              maps[((static_cast<std::size_t>(l) * heads + h) * n + i) * n + j];
  const fp::attention_view<const double> strided(shuffled.data(), {layers, heads, n, n}, {n * n, layers * n * n, 1, n});
  std::vector<double> a, b;
  (void)fp::merge_attention(fp::attention_view<const double>(maps.data(), layers, heads, n), 4, a);
  (void)fp::merge_attention(strided, 4, b);
  CHECK(a == b);
  const auto halves = fptest::convert<Eigen::half>(maps);
  std::vector<double> c;
  (void)fp::merge_attention(fp::attention_view<const Eigen::half>(halves.data(), layers, heads, n), 4, c);
  const auto want = pool_reference(fptest::widen(halves), layers, heads, n, consecutive_groups(n, 4));
  for (std::size_t k = 0; k < c.size(); ++k) CHECK(c[k] == Approx(want[k]).epsilon(1e-13));
  // Group 1 is a copy.
  std::vector<double> same;
  (void)fp::merge_attention(fp::attention_view<const double>(maps.data(), layers, heads, n), 1, same);
  CHECK(same == maps);
}

TEST_CASE("merge pooling rejects bad shapes, groups and values", "[merge][errors]") {
  std::vector<float> maps(2 * 1 * 6 * 6, 1.0f / 6);
  const fp::attention_view<const float> v(maps.data(), 2, 1, 6);
  std::vector<double> out;
  require_error([&] { (void)fp::merge_attention(v, 4, out); }, errc::invalid_shape, "merge group = 4 does not divide tokens = 6");
  require_error([&] { (void)fp::merge_attention(v, 0, out); }, errc::invalid_shape, "merge group = 0 (must be >= 1)");
  require_error([&] { (void)fp::merge_attention(v, -2, out); }, errc::invalid_shape, "merge group = -2");
  require_error([&] { (void)fp::merge_attention_grid(v, 2, 2, 1, out); }, errc::invalid_shape,
                "grid rows * cols = 2 * 2 does not match tokens = 6");
  require_error([&] { (void)fp::merge_attention_grid(v, 2, 3, 2, out); }, errc::invalid_shape,
                "merge factor = 2 does not divide grid rows = 2 and cols = 3");
  require_error([&] { (void)fp::merge_attention_grid(v, 2, 3, 0, out); }, errc::invalid_shape, "merge factor = 0");
  require_error([&] { (void)fp::merge_attention_grid(v, 0, 3, 1, out); }, errc::invalid_shape, "grid rows = 0, cols = 3");
  require_error([&] { (void)fp::merge_attention_grid(v, std::numeric_limits<index_t>::max(), 3, 1, out); },
                errc::invalid_shape, "does not match tokens = 6");
  const fp::attention_view<const float> not_square(maps.data(), {1, 1, 6, 5}, {36, 36, 6, 1});
  require_error([&] { (void)fp::merge_attention(not_square, 2, out); }, errc::invalid_shape, "not square");
  const fp::attention_view<const float> null(nullptr, 2, 1, 6);
  require_error([&] { (void)fp::merge_attention(null, 2, out); }, errc::null_data, "data of layer 0 is null");
  auto bad = maps;
  bad[1 * 36 + 4 * 6 + 5] = std::numeric_limits<float>::quiet_NaN();
  const fp::attention_view<const float> with_nan(bad.data(), 2, 1, 6);
  require_error([&] { (void)fp::merge_attention(with_nan, 2, out); }, errc::non_finite,
                "attention maps[layer 1][head 0][query 4][key 5] = nan");
  bad[1 * 36 + 4 * 6 + 5] = std::numeric_limits<float>::infinity();
  require_error([&] { (void)fp::merge_attention_grid(with_nan, 2, 3, 1, out); }, errc::non_finite, "[query 4][key 5] = inf");
  // try_ form: a status, the view left as it was.
  fp::attention_view<const double> view;
  const auto s = fp::try_merge_attention(v, 4, out, view);
  CHECK(!s.ok());
  CHECK(view.data() == nullptr);
  CHECK(fp::try_merge_attention(v, 2, out, view).ok());
  CHECK(view.tokens() == 3);
}

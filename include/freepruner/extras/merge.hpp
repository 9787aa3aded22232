#pragma once
/// \file merge.hpp
/// Attention maps pooled to merged tokens, for models whose projector merges
/// g patches into one LLM token (Qwen2-VL: 2x2 patches). Selecting on the
/// pooled maps returns merged-token indices, so a budget counts the tokens
/// the LLM sees.
///
/// For groups I, J of g tokens each:
///
///     A'[l][h][I][J] = (1/g) * sum_{i in I} sum_{j in J} A[l][h][i][j]
///
/// A row of A' is the mean of its members' rows summed over each group of
/// keys, so rows of softmax maps still sum to 1, and A' is again an
/// attention tensor. Groups are either g consecutive tokens (Qwen2-VL's patch
/// order) or f x f blocks of a row-major patch grid. Every token is pooled:
/// inputs with a CLS or register token need it removed first.

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../backend/cpu/backend.hpp"
#include "../backend/cpu/scores.hpp"
#include "../detail/validate.hpp"
#include "../error.hpp"
#include "../traits.hpp"
#include "../view.hpp"

namespace freepruner {

namespace detail {

// Pools every layer and head over the groups `members` (group I is
// members[I*g .. I*g+g-1], each ascending) into `out`, contiguous
// [L][H][N/g][N/g]. Sums in double, in member order.
template <class Tensor, class Out>
status pool_groups(const Tensor& t, const std::vector<index_t>& members, index_t g, std::vector<Out>& out,
                   attention_view<const Out>& view) {
  using tr = attention_traits<Tensor>;
  const auto e = tr::extents(t);
  const index_t layers = e[0], heads = e[1], n = e[2], ks = tr::key_stride(t), m = n / g;
  for (index_t l = 0; l < layers; ++l)
    if (tr::row(t, l, 0, 0) == nullptr)
      return null_maps(l, layers, heads, n);
  out.assign(static_cast<std::size_t>(layers * heads * m * m), Out(0));
  std::vector<double> sum(static_cast<std::size_t>(n));
  const double scale = 1.0 / static_cast<double>(g);
  for (index_t l = 0; l < layers; ++l)
    for (index_t h = 0; h < heads; ++h)
      for (index_t qi = 0; qi < m; ++qi) {
        // The group's rows summed over its members, for every key j.
        std::fill(sum.begin(), sum.end(), 0.0);
        for (index_t k = 0; k < g; ++k) {
          const auto* row = tr::row(t, l, h, members[static_cast<std::size_t>(qi * g + k)]);
          for (index_t j = 0; j < n; ++j) sum[static_cast<std::size_t>(j)] += cpu::to_double(row[j * ks]);
        }
        Out* dst = &out[static_cast<std::size_t>(((l * heads + h) * m + qi) * m)];
        bool finite = true;
        for (index_t kj = 0; kj < m; ++kj) {
          double s = 0;
          for (index_t k = 0; k < g; ++k) s += sum[static_cast<std::size_t>(members[static_cast<std::size_t>(kj * g + k)])];
          s *= scale;
          finite = finite && std::isfinite(s);
          dst[kj] = static_cast<Out>(s);
        }
        if (!finite) {
          const std::vector<index_t> rows(members.begin() + static_cast<std::ptrdiff_t>(qi * g),
                                          members.begin() + static_cast<std::ptrdiff_t>(qi * g + g));
          return cpu::locate_non_finite(t, l, rows, {});
        }
      }
  view = attention_view<const Out>(out.data(), layers, heads, m);
  return {};
}

template <class Out>
constexpr bool assert_pool_output() {
  static_assert(std::is_same<Out, float>::value || std::is_same<Out, double>::value,
                "freepruner: merged maps are stored as float or double");
  return true;
}

}  // namespace detail

/// Pools `maps` [L][H][N][N] over groups of `group` consecutive tokens
/// (tokens g*I .. g*I+g-1 form merged token I; Qwen2-VL: group = 4) into
/// `out`, and returns a view of the [L][H][N/g][N/g] result over `out`.
/// Never throws; on failure `view` is left as it was.
template <class Tensor, class Out>
status try_merge_attention(const Tensor& maps, index_t group, std::vector<Out>& out, attention_view<const Out>& view) {
  static_assert(detail::assert_host_tensor<Tensor>(), "");
  static_assert(detail::assert_pool_output<Out>(), "");
  const auto e = attention_traits<Tensor>::extents(maps);
  if (auto s = detail::check_shape(e); !s) return s;
  if (group < 1)
    return detail::below_one(errc::invalid_shape, group, "merge group");
  if (e[2] % group != 0)
    return detail::fail(errc::invalid_shape, "merge group = ", group,
                        " does not divide tokens = ", e[2]);
  std::vector<index_t> members(static_cast<std::size_t>(e[2]));
  for (index_t i = 0; i < e[2]; ++i) members[static_cast<std::size_t>(i)] = i;
  return detail::pool_groups(maps, members, group, out, view);
}

/// Pools `maps` over `factor` x `factor` blocks of a row-major grid of
/// `rows` x `cols` tokens (N = rows * cols). Merged tokens are the blocks in
/// row-major order over the (rows/factor) x (cols/factor) grid. Never throws.
template <class Tensor, class Out>
status try_merge_attention_grid(const Tensor& maps, index_t rows, index_t cols, index_t factor, std::vector<Out>& out,
                                attention_view<const Out>& view) {
  static_assert(detail::assert_host_tensor<Tensor>(), "");
  static_assert(detail::assert_pool_output<Out>(), "");
  const auto e = attention_traits<Tensor>::extents(maps);
  if (auto s = detail::check_shape(e); !s) return s;
  if (rows < 1 || cols < 1)
    return detail::fail(errc::invalid_shape, "grid rows = ", rows, ", cols = ",
                        cols, " (both must be >= 1)");
  if (factor < 1)
    return detail::below_one(errc::invalid_shape, factor, "merge factor");
  if (rows > e[2] / cols || rows * cols != e[2])
    return detail::fail(errc::invalid_shape, "grid rows * cols = ", rows, " * ",
                        cols, " does not match tokens = ", e[2]);
  if (rows % factor != 0 || cols % factor != 0)
    return detail::fail(errc::invalid_shape, "merge factor = ", factor,
                        " does not divide grid rows = ", rows, " and cols = ",
                        cols);
  std::vector<index_t> members;
  members.reserve(static_cast<std::size_t>(e[2]));
  for (index_t br = 0; br < rows / factor; ++br)
    for (index_t bc = 0; bc < cols / factor; ++bc)
      for (index_t dr = 0; dr < factor; ++dr)
        for (index_t dc = 0; dc < factor; ++dc) members.push_back((br * factor + dr) * cols + bc * factor + dc);
  return detail::pool_groups(maps, members, factor * factor, out, view);
}

/// As `try_merge_attention`; throws `freepruner::error` on bad input.
template <class Tensor, class Out>
attention_view<const Out> merge_attention(const Tensor& maps, index_t group, std::vector<Out>& out) {
  attention_view<const Out> view;
  detail::check(try_merge_attention(maps, group, out, view));
  return view;
}

/// As `try_merge_attention_grid`; throws `freepruner::error` on bad input.
template <class Tensor, class Out>
attention_view<const Out> merge_attention_grid(const Tensor& maps, index_t rows, index_t cols, index_t factor,
                                               std::vector<Out>& out) {
  attention_view<const Out> view;
  detail::check(try_merge_attention_grid(maps, rows, cols, factor, out, view));
  return view;
}

}  // namespace freepruner

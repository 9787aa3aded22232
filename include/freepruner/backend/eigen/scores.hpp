#pragma once
// Eigen CPU backend: the memory-bound passes over the maps. Each reads the
// maps in place (any strides), accumulates in double, and checks
// finiteness on the accumulated sums, so the check costs nothing per element.

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../../detail/validate.hpp"
#include "../../traits.hpp"

namespace freepruner {
namespace detail {
namespace cpu {

/// Element types the CPU backend reads.
template <class E>
inline constexpr bool is_host_element_v =
    std::is_same<E, float>::value || std::is_same<E, double>::value || std::is_same<E, Eigen::half>::value ||
    std::is_same<E, Eigen::bfloat16>::value;

template <class E>
inline double to_double(E x) noexcept {
  return static_cast<double>(static_cast<std::conditional_t<std::is_same<E, double>::value, double, float>>(x));
}

/// acc[0..n) += row[0..n) (elements `stride` apart), vectorized by Eigen when contiguous.
template <class E>
inline void accumulate_row(const E* row, index_t n, index_t stride, double* acc) {
  Eigen::Map<Eigen::ArrayXd> a(acc, n);
  using row_t = Eigen::Array<E, Eigen::Dynamic, 1>;
  if (stride == 1)
    a += Eigen::Map<const row_t>(row, n).template cast<double>();
  else
    a += Eigen::Map<const row_t, 0, Eigen::InnerStride<>>(row, n, Eigen::InnerStride<>(stride)).template cast<double>();
}

inline const char* kind_name(double x) noexcept { return std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf"); }

/// Finds the first non-finite element of layer `l` among rows `rows` and
/// keys `keys` (all when empty), for the error message.
template <class Tensor>
status locate_non_finite(const Tensor& t, index_t l, const std::vector<index_t>& rows, const std::vector<index_t>& keys) {
  using tr = attention_traits<Tensor>;
  const auto e = tr::extents(t);
  const index_t ks = tr::key_stride(t);
  const auto n_rows = rows.empty() ? e[2] : static_cast<index_t>(rows.size());
  const auto n_keys = keys.empty() ? e[3] : static_cast<index_t>(keys.size());
  for (index_t h = 0; h < e[1]; ++h)
    for (index_t r = 0; r < n_rows; ++r) {
      const index_t i = rows.empty() ? r : rows[static_cast<std::size_t>(r)];
      const auto* row = tr::row(t, l, h, i);
      for (index_t c = 0; c < n_keys; ++c) {
        const index_t j = keys.empty() ? c : keys[static_cast<std::size_t>(c)];
        const double x = to_double(row[j * ks]);
        if (!std::isfinite(x))
          return fail(errc::non_finite, "attention maps[layer ", static_cast<long long>(l), "][head ",
                      static_cast<long long>(h), "][query ", static_cast<long long>(i), "][key ",
                      static_cast<long long>(j), "] = ", kind_name(x), " (every value read must be finite)");
      }
    }
  return fail(errc::non_finite, "attention maps of layer ", static_cast<long long>(l),
              ": a sum over heads overflows (values too large to be attention probabilities)");
}

/// SPEC steps 0-1 for layer `l`, one pass over its maps:
/// r[i] = (1/H) (sum_h sum_j A[h][j][i] - sum_h A[h][i][i]), for i in 0..N-1.
template <class Tensor>
status contribution_degree(const Tensor& t, index_t l, double* r) {
  using tr = attention_traits<Tensor>;
  const auto e = tr::extents(t);
  const index_t heads = e[1], n = e[2], ks = tr::key_stride(t);
  Eigen::Map<Eigen::ArrayXd> acc(r, n);
  acc.setZero();
  for (index_t h = 0; h < heads; ++h)
    for (index_t i = 0; i < n; ++i) accumulate_row(tr::row(t, l, h, i), n, ks, r);
  if (!acc.allFinite()) return locate_non_finite(t, l, {}, {});
  for (index_t i = 0; i < n; ++i) {
    double diagonal = 0;
    for (index_t h = 0; h < heads; ++h) diagonal += to_double(tr::row(t, l, h, i)[i * ks]);
    r[i] = (r[i] - diagonal) / static_cast<double>(heads);
  }
  return {};
}

/// SPEC step 3 scores from layer `c`: out[k * N + j] = v_{P[k]}[j], the head
/// mean of row P[k] (all j) or of column P[k] (j in the candidates).
template <class Tensor>
status complementary_scores(const Tensor& t, index_t c, const std::vector<token_t>& pivots, const plan& p, direction dir,
                            std::vector<double>& out) {
  using tr = attention_traits<Tensor>;
  const index_t heads = p.heads, n = p.tokens, ks = tr::key_stride(t);
  const std::size_t np = pivots.size();
  out.assign(np * static_cast<std::size_t>(n), 0.0);
  Eigen::Map<Eigen::ArrayXXd> v(out.data(), n, static_cast<index_t>(np));  // column k = v_{P[k]}
  if (dir == direction::row) {
    for (std::size_t k = 0; k < np; ++k)
      for (index_t h = 0; h < heads; ++h) accumulate_row(tr::row(t, c, h, pivots[k]), n, ks, &out[k * static_cast<std::size_t>(n)]);
  } else {
    // One pass over the candidate rows of layer c, gathering the pivot columns.
    for (index_t h = 0; h < heads; ++h)
      for (index_t j = p.first; j < p.last; ++j) {
        const auto* row = tr::row(t, c, h, j);
        for (std::size_t k = 0; k < np; ++k) v(j, static_cast<index_t>(k)) += to_double(row[pivots[k] * ks]);
      }
  }
  if (!v.allFinite()) {
    std::vector<index_t> lines(pivots.begin(), pivots.end()), candidates;
    if (dir == direction::row) return locate_non_finite(t, c, lines, {});
    for (index_t j = p.first; j < p.last; ++j) candidates.push_back(j);
    return locate_non_finite(t, c, candidates, lines);
  }
  v /= static_cast<double>(heads);
  return {};
}

}  // namespace cpu
}  // namespace detail
}  // namespace freepruner

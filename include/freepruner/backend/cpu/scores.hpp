#pragma once
// Eigen CPU backend: the memory-bound passes over the maps. Each reads the
// maps in place (any strides), accumulates in double, and checks
// finiteness on the accumulated sums, so the check costs nothing per element.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../../detail/eigen.hpp"

#include "../../detail/decisions.hpp"
#include "../../detail/messages.hpp"
#include "../../detail/validate.hpp"
#include "../../traits.hpp"
#include "simd.hpp"

namespace freepruner {
namespace detail {
namespace cpu {

/// Element types the CPU backend reads.
template <class E>
inline constexpr bool is_host_element_v =
    std::is_same<E, float>::value || std::is_same<E, double>::value || std::is_same<E, Eigen::half>::value ||
    std::is_same<E, Eigen::bfloat16>::value;

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
        if (!std::isfinite(x)) return non_finite_map(l, h, i, j, x);
      }
    }
  return heads_overflow(l);
}

/// The loops of the CPU backend's complement_builder: AVX2 where the CPU has
/// it (the partition bound by its compares and stores), scalar_loops
/// otherwise. Each gives the same results.
class fast_loops : public scalar_loops {
 public:
  template <class S>
  std::size_t operator()(S* x, std::size_t lo, std::size_t hi, S pivot) const {
#if FREEPRUNER_X86_SIMD
    if constexpr (std::is_same<S, double>::value)
      if (hi - lo >= 16 && active_simd() >= simd_level::avx2) {
        if (tmp_.size() < hi - lo) tmp_.resize(hi - lo);
        return partition_avx2(x, lo, hi, pivot, tmp_.data());
      }
#endif
    return scalar_partition{}(x, lo, hi, pivot);
  }

  template <class S>
  static void scan(const S* x, index_t from, index_t to, S* affinity, S* copy, S& lo, S& hi) {
#if FREEPRUNER_X86_SIMD
    if constexpr (std::is_same<S, double>::value)
      if (active_simd() >= simd_level::avx2) return scan_scores_avx2(x, from, to, affinity, copy, lo, hi);
#endif
    scalar_loops::scan(x, from, to, affinity, copy, lo, hi);
  }

  template <class S>
  static void mark_above(const S* x, index_t from, index_t to, S fence, unsigned char* out) {
#if FREEPRUNER_X86_SIMD
    if constexpr (std::is_same<S, double>::value)
      if (active_simd() >= simd_level::avx2) return mark_above_avx2(x, from, to, fence, out);
#endif
    scalar_loops::mark_above(x, from, to, fence, out);
  }

 private:
  mutable std::vector<double> tmp_;
};

/// The column sums and the diagonal of layer `l`, added into r and diagonal.
/// The H*N rows (h, i) form `Streams` segments read side by side, so each
/// block sums rows that are far apart in memory. An odd segment length keeps
/// the streams off a common power-of-two distance: at N = 4096 an even one
/// puts all four in the same DRAM banks and cache sets.
template <int Streams, class Tensor>
void degree_pass(const Tensor& t, index_t l, double* r, double* diagonal) {
  using tr = attention_traits<Tensor>;
  const auto e = tr::extents(t);
  const index_t heads = e[1], n = e[2], ks = tr::key_stride(t);
  const index_t total = heads * n, segment = ((total + Streams - 1) / Streams) | 1;
  index_t head[Streams], query[Streams];  // each segment's cursor (no division per row)
  for (int k = 0; k < Streams; ++k) {
    head[k] = (k * segment) / n;
    query[k] = (k * segment) % n;
  }
  const typename tr::value_type* rows[Streams];
  index_t at[Streams];
  for (index_t step = 0; step < segment; ++step) {
    int count = 0;
    for (int k = 0; k < Streams && k * segment + step < total; ++k) {
      at[count] = query[k];
      rows[count++] = tr::row(t, l, head[k], query[k]);
      if (++query[k] == n) {
        query[k] = 0;
        ++head[k];
      }
    }
    add_rows(rows, count, n, ks, r);
    // The diagonal after the rows are in cache: read first, it would start
    // each row's stream mid-row and defeat the prefetcher.
    for (int k = 0; k < count; ++k) diagonal[at[k]] += to_double(rows[k][at[k] * ks]);
  }
}

/// SPEC steps 0-1 for layer `l`, one pass over its maps:
/// r[i] = (1/H) (sum_h sum_j A[h][j][i] - sum_h A[h][i][i]), for i in 0..N-1.
/// `diagonal` is scratch of N values.
template <class Tensor>
status contribution_degree(const Tensor& t, index_t l, double* r, std::vector<double>& diagonal) {
  using value_type = typename attention_traits<Tensor>::value_type;
  const auto e = attention_traits<Tensor>::extents(t);
  const index_t heads = e[1], n = e[2];
  std::fill(r, r + n, 0.0);
  diagonal.assign(static_cast<std::size_t>(n), 0.0);
  // fp16 is bound by its conversions at any N: eight rows a block widen each
  // float sum (add_rows_avx2_half) half as often.
  if (n >= long_row || std::is_same<value_type, Eigen::half>::value)
    degree_pass<long_row_block>(t, l, r, diagonal.data());
  else
    degree_pass<row_block>(t, l, r, diagonal.data());
  for (index_t i = 0; i < n; ++i) r[i] = (r[i] - diagonal[static_cast<std::size_t>(i)]) / static_cast<double>(heads);
  // A NaN or infinity read, or a sum that overflowed, leaves r non-finite.
  if (!Eigen::Map<const Eigen::ArrayXd>(r, n).allFinite()) return locate_non_finite(t, l, {}, {});
  return {};
}

/// Heads of one pivot read side by side in step 3: more lines in flight than
/// `row_block`, and no more than an L1 set's 8 ways (at a power-of-two N the
/// rows of one query lie in one set). Blocks of four whose next block is
/// requested whole put too many lines in flight at once: the prefetches
/// stall.
inline constexpr int pivot_rows = 8;

/// acc[j] += sum over heads of A[c][h][q][j], all j: the row sums of step 3,
/// heads added in blocks of `pivot_rows` (the kept matrix of stream.hpp adds
/// in the same order, so the two agree to the bit).
template <class Tensor>
void pivot_row_sum(const Tensor& t, index_t c, token_t q, double* acc) {
  using tr = attention_traits<Tensor>;
  const auto e = tr::extents(t);
  const index_t heads = e[1];
  const typename tr::value_type* rows[pivot_rows];
  for (index_t h = 0; h < heads; h += pivot_rows) {
    const int count = static_cast<int>(std::min<index_t>(pivot_rows, heads - h));
    for (int b = 0; b < count; ++b) rows[b] = tr::row(t, c, h + b, q);
    add_rows(rows, count, e[3], tr::key_stride(t), acc);
  }
}

/// SPEC step 3 scores from layer `c`: out[k * N + j] = v_{P[k]}[j], the head
/// mean of row P[k] (all j) or of column P[k] (j in the candidates).
/// Column scores take one pass over the candidate rows of layer c. `then`,
/// when >= 0, is the pivot whose rows the caller reads next (each row's first
/// line prefetched).
template <class Tensor>
status complementary_scores(const Tensor& t, index_t c, const std::vector<token_t>& pivots, const plan& p, direction dir,
                            std::vector<double>& out, token_t then = -1) {
  using tr = attention_traits<Tensor>;
  const index_t heads = p.heads, n = p.tokens, ks = tr::key_stride(t);
  const std::size_t np = pivots.size();
  // Zeroed by memset (+0.0 is all zero bits): assign's element loop, once
  // per pivot, took a tenth of step 3 at N = 577.
  out.resize(np * static_cast<std::size_t>(n));
  if (!out.empty()) std::memset(out.data(), 0, out.size() * sizeof(double));
  Eigen::Map<Eigen::ArrayXXd> v(out.data(), n, static_cast<index_t>(np));  // column k = v_{P[k]}
  if (dir == direction::row) {
    for (std::size_t k = 0; k < np; ++k) pivot_row_sum(t, c, pivots[k], &out[k * static_cast<std::size_t>(n)]);
    // The next pivot's first line of each row, requested now, arrives while
    // the caller works on these scores.
    if (then >= 0 && ks == 1)
      for (index_t h = 0; h < heads; ++h) prefetch(tr::row(t, c, h, then), 1);
  } else {
    // One pass over the candidate rows of layer c, gathering the pivot columns.
    for (index_t h = 0; h < heads; ++h)
      for (index_t j = p.first; j < p.last; ++j) {
        const auto* row = tr::row(t, c, h, j);
        for (std::size_t k = 0; k < np; ++k) v(j, static_cast<index_t>(k)) += to_double(row[pivots[k] * ks]);
      }
  }
  if (!divide_finite(out.data(), static_cast<index_t>(out.size()), heads)) {
    std::vector<index_t> lines(pivots.begin(), pivots.end()), candidates;
    if (dir == direction::row) return locate_non_finite(t, c, lines, {});
    for (index_t j = p.first; j < p.last; ++j) candidates.push_back(j);
    return locate_non_finite(t, c, candidates, lines);
  }
  return {};
}

/// Pivots per call of `complementary_scores` in chunked step 3: a chunk
/// decides which error `select` reports (a non-finite value of any of its
/// pivots comes before a spread error of one), so every path walks the same
/// chunks. The column scores of a chunk take one pass over layer c.
inline std::size_t score_chunk(index_t tokens) {
  return std::max<std::size_t>(1, (std::size_t{1} << 21) / static_cast<std::size_t>(tokens));
}

/// SPEC step 3 row scores, one pivot at a time: `sink(p, v)` (v = v_p indexed
/// by token, in `buffer`) right after each v_p is summed, so the sink's work
/// (the pivot's fence) runs while the next pivot's first rows, already
/// requested, arrive (rather than all of a chunk's scores first, which
/// leaves the fences waiting on memory). Errors are chunked step 3's.
template <class Tensor, class Sink>
status each_row_scores(const Tensor& t, index_t c, const std::vector<token_t>& pivots, const plan& p,
                       std::vector<double>& buffer, Sink&& sink) {
  const std::size_t np = pivots.size();
  std::vector<token_t> one(1);
  for (std::size_t k = 0; k < np; ++k) {
    one[0] = pivots[k];
    status s = complementary_scores(t, c, one, p, direction::row, buffer, k + 1 < np ? pivots[k + 1] : -1);
    if (s) s = sink(pivots[k], static_cast<const double*>(buffer.data()));
    if (s) continue;
    // As a chunk would: the first non-finite value of pivots k.. of this
    // chunk (those before k are finite), found over all its lines.
    const std::size_t chunk = score_chunk(p.tokens), from = k / chunk * chunk, to = std::min(np, from + chunk);
    for (std::size_t q = k; q < to; ++q) {
      one[0] = pivots[q];
      if (!complementary_scores(t, c, one, p, direction::row, buffer)) {
        const std::vector<index_t> lines(pivots.begin() + static_cast<std::ptrdiff_t>(from),
                                         pivots.begin() + static_cast<std::ptrdiff_t>(to));
        return locate_non_finite(t, c, lines, {});
      }
    }
    return s;
  }
  return {};
}

/// SPEC step 3 scores from layer c for each pivot, `sink(p, v)` in pivot
/// order: row scores one pivot at a time, column scores in chunks (one pass
/// over layer c each, the buffer never above about 16 MB).
template <class Tensor, class Sink>
status each_scores(const Tensor& t, index_t c, const std::vector<token_t>& pivots, const plan& p, direction dir,
                   std::vector<double>& buffer, Sink&& sink) {
  if (dir == direction::row) return each_row_scores(t, c, pivots, p, buffer, sink);
  const auto n = static_cast<std::size_t>(p.tokens);
  const std::size_t chunk = score_chunk(p.tokens);
  std::vector<token_t> part;
  for (std::size_t first = 0; first < pivots.size(); first += chunk) {
    part.assign(pivots.begin() + static_cast<std::ptrdiff_t>(first),
                pivots.begin() + static_cast<std::ptrdiff_t>(std::min(pivots.size(), first + chunk)));
    if (auto s = complementary_scores(t, c, part, p, dir, buffer); !s) return s;
    for (std::size_t k = 0; k < part.size(); ++k)
      if (auto s = sink(part[k], static_cast<const double*>(&buffer[k * n])); !s) return s;
  }
  return {};
}

}  // namespace cpu
}  // namespace detail
}  // namespace freepruner

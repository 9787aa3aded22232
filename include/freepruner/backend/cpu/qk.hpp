#pragma once
// Eigen CPU backend for the Q/K path: the attention probabilities of a layer
// are rebuilt block by block from its per-head queries and keys, used and
// dropped, so no N x N buffer exists (except in head_mean, which returns one).
//
// Per head, query blocks of full rows, each row's softmax exp(S - lse) made
// as max, exp(S - max), sum, and a multiply by 1/sum. Float (float, half
// and bfloat16 inputs, widened): the head's keys packed once, then
// qk_kernels.hpp's kernels per group of 8 query rows (logits, then those
// rows' softmax while they are in L1), chosen at run time (scalar, SSE2,
// AVX2, AVX-512F) and equal to the bit on every level. Double: S = scale *
// Q_blk K^T by Eigen's GEMM, then the row steps with Eigen's exp. A
// tiled-key kernel (flash attention) needs the row log-sum-exp in a first
// pass and the column sums in a second; with whole rows in the tile, one
// pass per block has both.
//
// The three per-layer operations, used by select (qk.hpp) and by the
// streaming pruner:
//   layer_degrees          SPEC steps 0-1: r[i] for i in 0..N-1
//   pivot_scores           SPEC step 3: v_p for given pivots, row or column
//     for_each_pivot_scores  the same in select's chunks, one pivot at a time
//   head_mean              the head mean Ā[i][j] of the whole layer (N x N)
// They agree to the bit: a probability A_h[i][j] is the same float whichever
// operation computes it and wherever row i falls in a block, because
//  - float: a row's floats depend on its query and the keys only (each
//    logit one sum in dimension order, the row's sum in 16 fixed lanes;
//    qk_kernels.hpp), not on the block, the row's place in it or the level;
//  - double: every GEMM has N key rows, d depth and a multiple of 4 (>= 20)
//    query columns, so Eigen's kernel treats each query alike (its 4-wide
//    column panels; key positions never move; >= 20 avoids the small-size
//    path), and every tile row starts 64-byte aligned and has N entries, so
//    the vectorized max/exp/sum take the same steps on every row;
//  - sums run in double through simd.hpp's add_rows (equal on every
//    level), one head at a time: the degree pass sums each head into its
//    own buffers and adds the heads in head order after, so any executor
//    gives the same r.
// tests/test_qk.cpp checks this on shapes that exercise every remainder,
// and on every SIMD level.
//
// Bad values: Q and K are checked as they are loaded (vectorized, O(H N d),
// 1/N of the GEMM's work; a -inf key can otherwise hide as a zero
// probability), and each softmax row's sum catches logits that overflow.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../../detail/eigen.hpp"

#include "../../detail/validate.hpp"
#include "../../error.hpp"
#include "../../executor.hpp"
#include "../../options.hpp"
#include "qk_kernels.hpp"
#include "scores.hpp"
#include "simd.hpp"

namespace freepruner {
namespace detail {
namespace cpu {
namespace qk {

/// Arithmetic type of the GEMM and the softmax: double for double inputs,
/// float otherwise (half and bfloat16 are widened to float block-wise).
template <class E>
using compute_t = std::conditional_t<std::is_same<E, double>::value, double, float>;

/// One of a layer's Q or K: [heads][tokens][dim] at element strides.
template <class E>
struct operand {
  const E* data = nullptr;
  index_t heads = 0, tokens = 0, dim = 0;
  index_t head_stride = 0, token_stride = 0, dim_stride = 0;
  const char* name = "q";

  // GEMM reads float/double rows in place when each row is contiguous.
  bool in_place() const noexcept {
    return std::is_same<E, compute_t<E>>::value && dim_stride == 1 && token_stride >= dim;
  }
  const E* at(index_t h, index_t n, index_t t) const noexcept {
    return data + h * head_stride + n * token_stride + t * dim_stride;
  }
};

/// x as the compute type's pointer, for an operand that is in_place().
template <class C, class E>
const C* as_compute(const E* x) noexcept {
  if constexpr (std::is_same<E, C>::value) {
    return x;
  } else {
    (void)x;
    return nullptr;  // never reached: in_place() is false
  }
}

template <class Tensor>
operand<std::remove_cv_t<typename Tensor::element_type>> operand_of(const Tensor& t, const char* name) {
  operand<std::remove_cv_t<typename Tensor::element_type>> x;
  x.data = t.data();
  x.heads = t.extent(0);
  x.tokens = t.extent(1);
  x.dim = t.extent(2);
  x.head_stride = t.stride(0);
  x.token_stride = t.stride(1);
  x.dim_stride = t.stride(2);
  x.name = name;
  return x;
}

/// Rows per GEMM block: a tile of rows x ld compute elements of about
/// 256 KiB stays in L2 (smaller tiles gain nothing; larger ones spill to
/// L3), blocks balanced so the last one is not a sliver; a
/// multiple of 4, at least 20 (see the top of the file).
inline index_t block_rows(index_t tokens, index_t ld, std::size_t element_size) {
  const auto budget_rows = static_cast<index_t>((std::size_t{1} << 18) / (static_cast<std::size_t>(ld) * element_size));
  const index_t most = std::min<index_t>(256, std::max<index_t>(20, budget_rows & ~index_t{3}));
  const index_t blocks = (tokens + most - 1) / most;
  const index_t rows = (((tokens + blocks - 1) / blocks) + 3) & ~index_t{3};
  return std::max<index_t>(20, rows);
}

/// Query rows a GEMM call is given for `count` real rows (zero rows pad it).
inline index_t padded_rows(index_t count) { return std::max<index_t>(20, (count + 3) & ~index_t{3}); }

/// Working buffers of one layer pass, sized for N tokens and dim d. Float:
/// the keys packed for qk_kernels.hpp, blocks of a multiple of 8 rows.
template <class C>
class scratch {
 public:
  scratch(index_t tokens, index_t dim)
      : ld_((tokens + 15) & ~index_t{15}), rows_(block_rows(tokens, ld_, sizeof(C))) {
    if (std::is_same<C, float>::value) rows_ = (rows_ + 7) & ~index_t{7};
    tile_ = aligned(tile_storage_, static_cast<std::size_t>(rows_ * ld_));
    queries_.assign(static_cast<std::size_t>(rows_ * dim), C(0));
    if (std::is_same<C, float>::value) {
      packed_ = aligned(packed_storage_, static_cast<std::size_t>(ld_ * dim));
      work_ = aligned(work_storage_, static_cast<std::size_t>(softmax_work(dim)));
    }
  }

  index_t rows() const noexcept { return rows_; }
  index_t ld() const noexcept { return ld_; }
  C* tile() noexcept { return tile_; }
  C* row(index_t r) noexcept { return tile_ + r * ld_; }
  C* queries() noexcept { return queries_.data(); }
  std::vector<C>& keys() noexcept { return keys_; }
  /// Float: the head's keys as panels (qk_kernels.hpp's pack_keys).
  C* packed_keys() noexcept { return packed_; }
  /// Float: softmax_block's work buffer.
  C* work() noexcept { return work_; }
  /// Float: row r's sum of exponentials, from the last block.
  std::vector<C>& sums() noexcept { return sums_; }

 private:
  // 64-byte aligned storage of `count` elements: every row starts alike.
  static C* aligned(std::vector<C>& storage, std::size_t count) {
    storage.assign(count + 64 / sizeof(C), C(0));
    const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
    return storage.data() + ((64 - address % 64) % 64) / sizeof(C);
  }

  index_t ld_, rows_;
  std::vector<C> tile_storage_, queries_, keys_, packed_storage_, work_storage_, sums_;
  C* tile_ = nullptr;
  C* packed_ = nullptr;
  C* work_ = nullptr;
};

template <class C>
using row_matrix = Eigen::Matrix<C, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class C>
using const_rows = Eigen::Map<const row_matrix<C>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class C>
using tile_rows = Eigen::Map<row_matrix<C>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// False when any of the rows x dim values (row pitch `stride`) is not
/// finite: x * 0 is 0 for finite x and NaN otherwise, summed vectorized.
template <class C>
bool rows_finite(const C* x, index_t rows, index_t dim, index_t stride) {
  const const_rows<C> m(x, rows, dim, Eigen::OuterStride<>(stride));
  return (m.array() * C(0)).sum() == C(0);
}

/// The first non-finite element of x[head h] among the tokens token_of(0..count).
template <class E, class TokenOf>
status locate(const operand<E>& x, const std::string& label, index_t h, index_t count, TokenOf token_of) {
  for (index_t r = 0; r < count; ++r) {
    const index_t n = token_of(r);
    for (index_t t = 0; t < x.dim; ++t)
      if (!std::isfinite(to_double(*x.at(h, n, t))))
        return non_finite_value(kind_name(to_double(*x.at(h, n, t))), label, ".", x.name, "[head ", h, "][token ", n,
                                "][dim ", t, "]");
  }
  return fail(errc::non_finite, label, ".", x.name, " of head ", h, " holds a non-finite value");
}

/// Requests row n of head h of x (its d values, when contiguous) into cache.
template <class E>
void prefetch_row(const operand<E>& x, index_t h, index_t n) {
  if (x.dim_stride == 1)
    prefetch(x.at(h, n, 0), x.dim);
  else
    prefetch(x.at(h, n, 0), 1);
}

/// The packed keys of head h, checked finite.
template <class E>
status check_keys(const operand<E>& k, const std::string& label, index_t h, scratch<float>& s, const float*& keys,
                  index_t& stride) {
  keys = s.packed_keys();
  stride = 0;
  if (!rows_finite(keys, s.ld(), k.dim, k.dim)) return locate(k, label, h, k.tokens, [](index_t r) { return r; });
  return {};
}

/// Keys of head h as a row-major N x d matrix: in place, or widened into
/// `buffer`; for float, packed as panels into s.packed_keys() instead.
/// Checked finite.
template <class E, class C>
status load_keys(const operand<E>& k, const std::string& label, index_t h, scratch<C>& s, const C*& keys,
                 index_t& stride) {
  if constexpr (std::is_same<C, float>::value) {
    auto ahead = [&](index_t j) { prefetch_row(k, h, j); };
#if FREEPRUNER_X86_SIMD
    if constexpr (std::is_same<E, float>::value)
      if (k.dim_stride == 1) {
        pack_key_rows(k.tokens, k.dim, s.packed_keys(), [&](index_t j) { return k.at(h, j, 0); }, ahead);
        return check_keys(k, label, h, s, keys, stride);
      }
#endif
    pack_keys(
        k.tokens, k.dim, s.packed_keys(), [&](index_t j, index_t t) { return static_cast<float>(*k.at(h, j, t)); },
        ahead);
    return check_keys(k, label, h, s, keys, stride);
  } else {
    std::vector<C>& buffer = s.keys();
    if (k.in_place()) {
      keys = as_compute<C>(k.at(h, 0, 0));
      stride = k.token_stride;
    } else {
      buffer.resize(static_cast<std::size_t>(k.tokens * k.dim));
      for (index_t n = 0; n < k.tokens; ++n)
        for (index_t t = 0; t < k.dim; ++t)
          buffer[static_cast<std::size_t>(n * k.dim + t)] = static_cast<C>(*k.at(h, n, t));
      keys = buffer.data();
      stride = k.dim;
    }
    if (!rows_finite(keys, k.tokens, k.dim, stride))
      return locate(k, label, h, k.tokens, [](index_t r) { return r; });
    return {};
  }
}

/// SPEC step 0's per-head rows: softmax of one tile row of n logits, in
/// place. Returns the row's sum of exp(S - max): not finite when a logit was
/// +inf or NaN (the whole row is then NaN).
template <class C>
C softmax_row(C* row, index_t n) {
  Eigen::Map<Eigen::Array<C, 1, Eigen::Dynamic>> x(row, n);
  const C top = x.maxCoeff();
  x = (x - top).exp();
  const C sum = x.sum();
  x *= C(1) / sum;
  return sum;
}

/// The error for a softmax row whose sum is not finite.
template <class C>
status overflow(const std::string& label, index_t h, index_t n) {
  return fail(errc::non_finite, label, ": the logits q . k * scale of head ", h, ", query token ",
              n, " overflow ", std::is_same<C, double>::value ? "double" : "float",
              " (Q and K are finite, but their products leave that range)");
}

/// Softmax rows of head h for the queries token_of(0..count), a block of at
/// most scratch.rows() at a time: visit(k, token, row) sees row k of them
/// (valid until end_block(), called after each block). Float runs
/// qk_kernels.hpp's kernels on keys from load_keys; double, Eigen's GEMM
/// (queries read in place when they are consecutive tokens and fill it).
template <class E, class C, class TokenOf, class Visit, class EndBlock>
status for_each_row(const operand<E>& q, const std::string& label, index_t h, const C* keys, index_t key_stride,
                    index_t tokens, C scale, index_t count, bool consecutive, TokenOf token_of, scratch<C>& s,
                    Visit visit, EndBlock end_block) {
  const index_t d = q.dim;
  for (index_t first = 0; first < count; first += s.rows()) {
    const index_t rows = std::min(s.rows(), count - first);
    if constexpr (std::is_same<C, float>::value) {
      (void)key_stride;
      (void)consecutive;
      // The block's queries, checked, then scaled, padded with zero rows.
      float* buffer = s.queries();
      const index_t pad = grouped_rows(rows);
      for (index_t r = 0; r < rows; ++r) {
        if (r + ahead_keys < rows) prefetch_row(q, h, token_of(first + r + ahead_keys));
        const index_t n = token_of(first + r);
        for (index_t t = 0; t < d; ++t) buffer[r * d + t] = static_cast<float>(*q.at(h, n, t));
      }
      if (!rows_finite(buffer, rows, d, d))
        return locate(q, label, h, rows, [&](index_t r) { return token_of(first + r); });
      for (index_t i = 0; i < rows * d; ++i) buffer[i] = scale * buffer[i];
      std::fill(buffer + rows * d, buffer + pad * d, 0.0f);
      std::vector<float>& sums = s.sums();
      sums.resize(static_cast<std::size_t>(rows));
      softmax_block(buffer, rows, d, keys, tokens, s.tile(), sums.data(), s.work());
      for (index_t r = 0; r < rows; ++r) {
        const index_t n = token_of(first + r);
        if (!std::isfinite(sums[static_cast<std::size_t>(r)])) return overflow<C>(label, h, n);
        visit(first + r, n, static_cast<const C*>(s.row(r)));
      }
    } else {
      const index_t pad = padded_rows(rows);
      const C* queries = nullptr;
      index_t query_stride = d;
      if (consecutive && q.in_place() && pad == rows) {
        queries = as_compute<C>(q.at(h, token_of(first), 0));
        query_stride = q.token_stride;
      } else {
        C* buffer = s.queries();
        for (index_t r = 0; r < rows; ++r) {
          const index_t n = token_of(first + r);
          for (index_t t = 0; t < d; ++t) buffer[r * d + t] = static_cast<C>(*q.at(h, n, t));
        }
        std::fill(buffer + rows * d, buffer + pad * d, C(0));
        queries = buffer;
      }
      if (!rows_finite(queries, rows, d, query_stride))
        return locate(q, label, h, rows, [&](index_t r) { return token_of(first + r); });
      const const_rows<C> Q(queries, pad, d, Eigen::OuterStride<>(query_stride));
      const const_rows<C> K(keys, tokens, d, Eigen::OuterStride<>(key_stride));
      tile_rows<C> S(s.tile(), pad, tokens, Eigen::OuterStride<>(s.ld()));
      S.noalias() = (scale * Q) * K.transpose();
      for (index_t r = 0; r < rows; ++r) {
        const index_t n = token_of(first + r);
        if (!std::isfinite(softmax_row(s.row(r), tokens))) return overflow<C>(label, h, n);
        visit(first + r, n, static_cast<const C*>(s.row(r)));
      }
    }
    end_block();
  }
  return {};
}

/// A layer's operands and the softmax scale in the compute type.
template <class Layer>
struct layer_operands {
  using element = std::remove_cv_t<typename Layer::tensor_type::element_type>;
  using compute = compute_t<element>;
  operand<element> q, k;
  compute scale;
  index_t heads, tokens, dim;

  explicit layer_operands(const Layer& l)
      : q(operand_of(l.q, "q")), k(operand_of(l.k, "k")), scale(static_cast<compute>(l.scale)),
        heads(l.q.extent(0)), tokens(l.q.extent(1)), dim(l.q.extent(2)) {}
};

inline auto consecutive_from(index_t first) {
  return [first](index_t k) { return first + k; };
}

// The head mean's division; Q/K scores are finite by construction.
inline void divide(double* x, std::size_t count, index_t heads) {
  static_cast<void>(divide_finite(x, static_cast<index_t>(count), heads));
}

/// Head h's share of SPEC steps 0-1: its column sums into `columns` and its
/// diagonal into `diagonal` (N values each, zeroed by the caller).
template <class C, class Layer>
status head_degrees(const layer_operands<Layer>& x, const std::string& label, index_t h, scratch<C>& s,
                    double* columns, double* diagonal) {
  const index_t n = x.tokens;
  const C* keys = nullptr;
  index_t key_stride = 0;
  const C* rows[row_block];
  int pending = 0;
  auto flush = [&] {  // column sums, row_block rows at a time, into double
    if (pending > 0) add_rows(rows, pending, n, 1, columns);
    pending = 0;
  };
  auto visit = [&](index_t, index_t i, const C* row) {
    diagonal[i] += static_cast<double>(row[i]);
    rows[pending++] = row;
    if (pending == row_block) flush();
  };
  if (auto st = load_keys(x.k, label, h, s, keys, key_stride); !st) return st;
  return for_each_row(x.q, label, h, keys, key_stride, n, x.scale, n, true, consecutive_from(0), s, visit, flush);
}

/// (1) SPEC steps 0-1 for one layer: r[i] = (1/H)(sum_h sum_j A_h[j][i] -
/// sum_h A_h[i][i]) for i in 0..N-1 (r has N values). `label` names the
/// layer in messages ("layers[2]"). The layer must be valid (qk.hpp's
/// check_qk_layer). The heads are `parallel`'s tasks, at most one lane of
/// heads per task it runs at once; each head sums into its own buffers and
/// the heads are added in head order after, so r is the same whoever ran
/// them. The first error in head order is reported.
template <class Layer>
status layer_degrees(const Layer& layer, const std::string& label, double* r, const executor& parallel = {}) {
  using C = typename layer_operands<Layer>::compute;
  const layer_operands<Layer> x(layer);
  const index_t n = x.tokens, heads = x.heads;
  const auto stride = static_cast<std::size_t>(n);
  std::vector<double> sums(static_cast<std::size_t>(heads) * 2 * stride, 0.0);  // per head: columns, diagonal
  std::vector<status> outcome(static_cast<std::size_t>(heads));
  const index_t lanes = std::min<index_t>(heads, parallel.concurrency());
  parallel(lanes, [&](index_t lane) {
    scratch<C> s(n, x.dim);
    for (index_t h = lane; h < heads; h += lanes) {  // a lane stops at its first error: later heads cannot come first
      double* columns = &sums[static_cast<std::size_t>(h) * 2 * stride];
      status& st = outcome[static_cast<std::size_t>(h)];
      st = head_degrees(x, label, h, s, columns, columns + stride);
      if (!st) return;
    }
  });
  for (const status& st : outcome)
    if (!st) return st;
  std::fill(r, r + n, 0.0);
  std::vector<double> diagonal(stride, 0.0);
  for (index_t h = 0; h < heads; ++h) {
    const double* columns = &sums[static_cast<std::size_t>(h) * 2 * stride];
    for (std::size_t i = 0; i < stride; ++i) {
      r[i] += columns[i];
      diagonal[i] += columns[stride + i];
    }
  }
  for (index_t i = 0; i < n; ++i) r[i] = r[i] - diagonal[static_cast<std::size_t>(i)];
  divide(r, stride, heads);
  return {};
}

/// (2) SPEC step 3 scores of one layer: out[k * N + j] = v_{pivots[k]}[j],
/// the head mean of softmax row pivots[k] (direction::row, every j) or of
/// column pivots[k] (direction::column, j in [first, last); zero elsewhere).
/// The row direction computes only the pivot rows; the column direction is
/// one blocked pass over the candidate rows that keeps the pivot columns
/// (a column entry needs its row's log-sum-exp, hence the whole row).
template <class Layer>
status pivot_scores(const Layer& layer, const std::string& label, const std::vector<token_t>& pivots, index_t first,
                    index_t last, direction dir, std::vector<double>& out) {
  using C = typename layer_operands<Layer>::compute;
  const layer_operands<Layer> x(layer);
  const index_t n = x.tokens;
  const std::size_t np = pivots.size(), stride = static_cast<std::size_t>(n);
  out.assign(np * stride, 0.0);
  if (np == 0) return {};
  scratch<C> s(n, x.dim);
  const C* keys = nullptr;
  index_t key_stride = 0;
  auto nothing = [] {};
  // Column scores gather np values per row: summed token-major (one cache
  // line per row, not np), transposed at the end; each sum is unchanged.
  std::vector<double> gathered(dir == direction::column ? np * stride : 0);
  for (index_t h = 0; h < x.heads; ++h) {
    if (auto st = load_keys(x.k, label, h, s, keys, key_stride); !st) return st;
    status st;
    if (dir == direction::row)
      st = for_each_row(
          x.q, label, h, keys, key_stride, n, x.scale, static_cast<index_t>(np), false,
          [&pivots](index_t k) { return static_cast<index_t>(pivots[static_cast<std::size_t>(k)]); }, s,
          [&](index_t k, index_t, const C* row) { add_rows(&row, 1, n, 1, &out[static_cast<std::size_t>(k) * stride]); },
          nothing);
    else
      st = for_each_row(x.q, label, h, keys, key_stride, n, x.scale, last - first, true, consecutive_from(first), s,
                        [&](index_t, index_t j, const C* row) {
                          double* sums = &gathered[static_cast<std::size_t>(j) * np];
                          for (std::size_t k = 0; k < np; ++k) sums[k] += static_cast<double>(row[pivots[k]]);
                        },
                        nothing);
    if (!st) return st;
  }
  if (dir == direction::column)
    for (index_t j = first; j < last; ++j)
      for (std::size_t k = 0; k < np; ++k)
        out[k * stride + static_cast<std::size_t>(j)] = gathered[static_cast<std::size_t>(j) * np + k];
  divide(out.data(), out.size(), x.heads);
  return {};
}

/// SPEC step 3's scores of `pivots` (ascending), in chunks that keep the
/// buffer under about 16 MB, as select does: sink(p, v) is called per pivot
/// in order, v indexed by token (`buffer` holds it). Stops at the first
/// error, the one select reports. Each v_p is the same whatever the chunk.
template <class Layer, class Sink>
status for_each_pivot_scores(const Layer& layer, const std::string& label, const std::vector<token_t>& pivots,
                             index_t first, index_t last, direction dir, std::vector<double>& buffer, Sink&& sink) {
  const auto n = static_cast<std::size_t>(layer.q.extent(1));
  const std::size_t chunk = std::max<std::size_t>(1, (std::size_t{1} << 21) / n);
  std::vector<token_t> part;
  for (std::size_t from = 0; from < pivots.size(); from += chunk) {
    part.assign(pivots.begin() + static_cast<std::ptrdiff_t>(from),
                pivots.begin() + static_cast<std::ptrdiff_t>(std::min(pivots.size(), from + chunk)));
    if (auto s = pivot_scores(layer, label, part, first, last, dir, buffer); !s) return s;
    for (std::size_t k = 0; k < part.size(); ++k)
      if (auto s = sink(part[k], static_cast<const double*>(&buffer[k * n])); !s) return s;
  }
  return {};
}

/// (3) The head mean of the whole layer: out[i * N + j] = Ā[i][j] (N x N
/// doubles), equal to the bit to what pivot_scores gives for row i or
/// column j. For a consumer that needs the layer before its pivots are known.
template <class Layer>
status head_mean(const Layer& layer, const std::string& label, double* out) {
  using C = typename layer_operands<Layer>::compute;
  const layer_operands<Layer> x(layer);
  const index_t n = x.tokens;
  const auto stride = static_cast<std::size_t>(n);
  std::fill(out, out + stride * stride, 0.0);
  scratch<C> s(n, x.dim);
  const C* keys = nullptr;
  index_t key_stride = 0;
  for (index_t h = 0; h < x.heads; ++h) {
    if (auto st = load_keys(x.k, label, h, s, keys, key_stride); !st) return st;
    if (auto st = for_each_row(
            x.q, label, h, keys, key_stride, n, x.scale, n, true, consecutive_from(0), s,
            [&](index_t, index_t i, const C* row) { add_rows(&row, 1, n, 1, out + static_cast<std::size_t>(i) * stride); },
            [] {});
        !st)
      return st;
  }
  divide(out, stride * stride, x.heads);
  return {};
}

}  // namespace qk
}  // namespace cpu
}  // namespace detail
}  // namespace freepruner

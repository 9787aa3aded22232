#pragma once
// The CPU backend's layer sources (detail/pipeline.hpp): SPEC steps 0-1 and
// 3 of one layer from its maps (attention_source) or its queries and keys
// (qk_source), and what the streaming pruner keeps of a complementary layer
// observed before the pivots are known (kept_layer, matrix_source).

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../../detail/eigen.hpp"

#include "../../detail/messages.hpp"
#include "../../detail/validate.hpp"
#include "../../executor.hpp"
#include "../../options.hpp"
#include "../../traits.hpp"
#include "../../view.hpp"
#include "qk.hpp"
#include "scores.hpp"

namespace freepruner {
namespace detail {
namespace cpu {

/// Presents one observed layer (extents [1][H][N][N]) as an L-layer stack
/// whose every layer is that one, so the backend's passes, called with the
/// layer's index, name it in their messages as `select` on the stacked maps
/// does.
template <class Tensor>
struct layer_in_stack {
  const Tensor* tensor;
  index_t layers;
};

/// A non-finite score vector of the complementary layer (the line is a
/// candidate pivot): its first non-finite element in (head, other) order,
/// `other` the key (row direction) or the query (column direction); head
/// -1 when every element is finite and the sum over heads overflows.
struct line_fault {
  token_t line = 0;
  index_t head = -1;
  index_t other = 0;
  double value = 0;
};

/// A Q/K complementary layer kept until the pivots are known: heads-major
/// copies of its Q and K in their own element type E.
template <class E>
struct kept_qk {
  using element = E;
  std::vector<E> q, k;
  index_t heads = 0, tokens = 0, dim = 0;
  double scale = 1;

  qk_layer<const E> layer() const {
    return {qk_tensor<const E>::heads_major(q.data(), heads, tokens, dim),
            qk_tensor<const E>::heads_major(k.data(), heads, tokens, dim), scale};
  }
  std::size_t bytes() const noexcept { return (q.capacity() + k.capacity()) * sizeof(E); }
};

/// What SPEC step 3 needs of a complementary layer observed before the last
/// pivot layer: a map layer's score matrix and its faults, or a Q/K layer's
/// Q and K (`from_qk`). Written by the source's `keep`.
struct kept_layer {
  bool from_qk = false;
  std::vector<double> matrix;  // M x N (map layers)
  std::vector<line_fault> faults;
  std::variant<kept_qk<float>, kept_qk<double>, kept_qk<Eigen::half>, kept_qk<Eigen::bfloat16>> qk;

  std::size_t bytes() const noexcept {
    return matrix.capacity() * sizeof(double) + faults.capacity() * sizeof(line_fault) +
           std::visit([](const auto& x) { return x.bytes(); }, qk);
  }
};

}  // namespace cpu
}  // namespace detail

template <class Tensor>
struct attention_traits<detail::cpu::layer_in_stack<Tensor>> {
  using value_type = tensor_value_t<Tensor>;
  using memory_space = host_memory;
  static std::array<index_t, 4> extents(const detail::cpu::layer_in_stack<Tensor>& s) {
    auto e = attention_traits<Tensor>::extents(*s.tensor);
    e[0] = s.layers;
    return e;
  }
  // Only the observed layer is ever asked for.
  static const value_type* row(const detail::cpu::layer_in_stack<Tensor>& s, index_t, index_t h, index_t i) {
    return attention_traits<Tensor>::row(*s.tensor, 0, h, i);
  }
  static index_t key_stride(const detail::cpu::layer_in_stack<Tensor>& s) {
    return attention_traits<Tensor>::key_stride(*s.tensor);
  }
};

namespace detail {
namespace cpu {

inline status fault_status(const line_fault& f, index_t layer, direction dir) {
  if (f.head < 0) return heads_overflow(layer);
  const bool row = dir == direction::row;
  return non_finite_map(layer, f.head, row ? f.line : f.other, row ? f.other : f.line, f.value);
}

/// The layer source for attention maps: layer `layer` of `t` (select's
/// stack, or the pruner's layer_in_stack), read by the CPU backend's passes.
/// `keep` (the pruner's, for a complementary layer that comes before the
/// pivots) is `score_matrix(out, faults)`: v_p for every candidate p, at
/// out[(p - first) * N + j] (M x N); a non-finite v_p is no error yet (only
/// pivots are read) but listed in `faults`, ascending, for the message.
template <class Tensor>
class attention_source {
 public:
  attention_source(const Tensor& t, index_t layer, const plan& p, direction dir)
      : t_(t), layer_(layer), plan_(p), dir_(dir) {}

  status degrees(double* r, std::vector<double>& scratch) const {
    return contribution_degree(t_, layer_, r, scratch);
  }

  template <class Sink>
  status scores(const std::vector<token_t>& pivots, std::vector<double>& buffer, Sink&& sink) const {
    return each_scores(t_, layer_, pivots, plan_, dir_, buffer, sink);
  }

  status keep(kept_layer& kept) const {
    kept.from_qk = false;
    return score_matrix(kept.matrix, kept.faults);
  }

  status score_matrix(std::vector<double>& out, std::vector<line_fault>& faults) const {
    using tr = attention_traits<Tensor>;
    const index_t heads = plan_.heads, n = plan_.tokens, ks = tr::key_stride(t_);
    const index_t first = plan_.first, last = plan_.last, m = plan_.candidates;
    out.assign(static_cast<std::size_t>(m * n), 0.0);
    Eigen::Map<Eigen::ArrayXXd> v(out.data(), n, m);  // column p - first = v_p
    if (dir_ == direction::row) {  // complementary_scores' row sums, for every candidate
      for (index_t p = first; p < last; ++p)
        pivot_row_sum(t_, layer_, static_cast<token_t>(p), &out[static_cast<std::size_t>((p - first) * n)]);
    } else {  // complementary_scores' column sums: heads in order, candidate rows j
      // Summed along the rows of a block of rows, then transposed: adding
      // into the transposed matrix directly touches a cache line per element.
      // Each element still adds the heads in order from 0.
      constexpr index_t block = 8;
      std::vector<double> sums(static_cast<std::size_t>(block * n));
      for (index_t j0 = first; j0 < last; j0 += block) {
        const index_t j1 = std::min(last, j0 + block);
        std::fill(sums.begin(), sums.end(), 0.0);
        for (index_t h = 0; h < heads; ++h)
          for (index_t j = j0; j < j1; ++j) {
            // One row at a time: acc + (0 + x) is acc + x here (acc is never -0).
            const typename tr::value_type* row = tr::row(t_, layer_, h, j) + first * ks;
            add_rows(&row, 1, m, ks, &sums[static_cast<std::size_t>((j - j0) * n + first)]);
          }
        for (index_t j = j0; j < j1; ++j)
          for (index_t p = first; p < last; ++p) v(j, p - first) = sums[static_cast<std::size_t>((j - j0) * n + p)];
      }
    }
    faults.clear();
    for (index_t p = first; p < last; ++p)
      if (!v.col(p - first).allFinite()) faults.push_back(first_fault(static_cast<token_t>(p)));
    v /= static_cast<double>(heads);
    return {};
  }

 private:
  line_fault first_fault(token_t p) const {
    using tr = attention_traits<Tensor>;
    const index_t ks = tr::key_stride(t_);
    line_fault f;
    f.line = p;
    const bool row = dir_ == direction::row;
    const index_t from = row ? 0 : plan_.first, to = row ? plan_.tokens : plan_.last;
    for (index_t h = 0; h < plan_.heads; ++h)
      for (index_t o = from; o < to; ++o) {
        const auto* at = row ? tr::row(t_, layer_, h, p) + o * ks : tr::row(t_, layer_, h, o) + p * ks;
        const double x = to_double(*at);
        if (!std::isfinite(x)) {
          f.head = h;
          f.other = o;
          f.value = x;
          return f;
        }
      }
    return f;
  }

  const Tensor& t_;
  index_t layer_;
  const plan& plan_;
  direction dir_;
};

/// Step 3 from a kept score matrix (`score_matrix`'s layout): the pivots in
/// select's chunks, each chunk's faults reported as select's pass would.
class matrix_source {
 public:
  matrix_source(const std::vector<double>& matrix, const std::vector<line_fault>& faults, index_t layer, const plan& p,
                direction dir)
      : matrix_(matrix), faults_(faults), layer_(layer), plan_(p), dir_(dir) {}

  template <class Sink>
  status scores(const std::vector<token_t>& pivots, std::vector<double>&, Sink&& sink) const {
    const auto n = static_cast<std::size_t>(plan_.tokens);
    const std::size_t chunk = score_chunk(plan_.tokens);
    for (std::size_t first = 0; first < pivots.size(); first += chunk) {
      const std::size_t last = std::min(pivots.size(), first + chunk);
      if (auto s = chunk_fault(pivots, first, last); !s) return s;
      for (std::size_t k = first; k < last; ++k)
        if (auto s = sink(pivots[k], &matrix_[static_cast<std::size_t>(pivots[k] - plan_.first) * n]); !s) return s;
    }
    return {};
  }

 private:
  // locate_non_finite's order: heads, then pivots (row) or query rows then
  // pivots (column); an overflow only when no element is non-finite.
  status chunk_fault(const std::vector<token_t>& pivots, std::size_t first, std::size_t last) const {
    const line_fault* best = nullptr;
    const line_fault* overflow = nullptr;
    for (std::size_t k = first; k < last; ++k) {
      const auto it = std::lower_bound(faults_.begin(), faults_.end(), pivots[k],
                                       [](const line_fault& f, token_t t) { return f.line < t; });
      if (it == faults_.end() || it->line != pivots[k]) continue;
      if (it->head < 0) {
        overflow = overflow ? overflow : &*it;
        continue;
      }
      const bool earlier = best == nullptr || it->head < best->head ||
                           (it->head == best->head && dir_ == direction::column && it->other < best->other);
      if (earlier) best = &*it;
    }
    if (best) return fault_status(*best, layer_, dir_);
    if (overflow) return fault_status(*overflow, layer_, dir_);
    return {};
  }

  const std::vector<double>& matrix_;
  const std::vector<line_fault>& faults_;
  index_t layer_;
  const plan& plan_;
  direction dir_;
};

/// The layer source for queries and keys: the per-layer operations of
/// backend/cpu/qk.hpp that Q/K `select` runs, with its labels
/// ("layers[l]"), so values and messages are select's.
///
/// `keep` copies Q and K rather than computing the M x N scores of every
/// candidate: the scores are then computed once the pivots are known, by
/// the very call Q/K `select` makes, so its values, chunks and first error
/// are select's (row scores read only the pivots' queries: a bad value in
/// another query is no error there either), and the layer costs a copy
/// instead of a full pass. The copy is 2 H N d elements: for
/// CLIP-336 (16 heads, d = 64) 4.7 MB in float and 2.4 MB in half, against
/// 2.7 MB for the M x N doubles; less than those once M > H d e / 4.
template <class E>
class qk_source {
 public:
  qk_source(const qk_layer<const E>& layer, index_t index, const plan& p, direction dir, const executor& parallel)
      : layer_(layer), label_(layer_label(static_cast<std::size_t>(index))), plan_(p), dir_(dir), parallel_(parallel) {}

  status degrees(double* r, std::vector<double>&) const { return qk::layer_degrees(layer_, label_, r, parallel_); }

  // The scores of a chunk of pivots (K N doubles, select's buffer) live as
  // long as the pass, as its tile does: kept in the state they would grow
  // with |P|, up to 16 MB.
  template <class Sink>
  status scores(const std::vector<token_t>& pivots, std::vector<double>&, Sink&& sink) const {
    std::vector<double> buffer;
    return qk::for_each_pivot_scores(layer_, label_, pivots, plan_.first, plan_.last, dir_, buffer,
                                          std::forward<Sink>(sink));
  }

  status keep(kept_layer& kept) const {
    auto* held = std::get_if<kept_qk<E>>(&kept.qk);  // the last image's buffers when E is the same
    auto& x = held ? *held : kept.qk.template emplace<kept_qk<E>>();
    x.heads = layer_.q.heads();
    x.tokens = layer_.q.tokens();
    x.dim = layer_.q.dim();
    x.scale = layer_.scale;
    const auto size = static_cast<std::size_t>(x.heads * x.tokens * x.dim);
    x.q.resize(size);
    x.k.resize(size);
    std::size_t at = 0;
    for (index_t h = 0; h < x.heads; ++h)
      for (index_t n = 0; n < x.tokens; ++n)
        for (index_t t = 0; t < x.dim; ++t, ++at) {
          x.q[at] = layer_.q(h, n, t);
          x.k[at] = layer_.k(h, n, t);
        }
    kept.from_qk = true;
    return {};
  }

 private:
  qk_layer<const E> layer_;
  std::string label_;
  const plan& plan_;
  direction dir_;
  const executor& parallel_;
};

}  // namespace cpu
}  // namespace detail

}  // namespace freepruner

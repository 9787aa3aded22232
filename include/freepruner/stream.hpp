#pragma once
/// \file stream.hpp
/// `pruner`: selection fed layer by layer while the vision encoder runs.
///
/// An engine that captures L layers calls `observe(maps)` after each captured
/// layer's softmax, or `observe(qk_layer)` with the layer's queries and keys
/// when it runs flash attention (or `skip()` for a layer that `wants()` says
/// is not read), then `select(budget)`. The answer is exactly
/// `freepruner::select` on the L layers stacked (maps), or on the vector of
/// the L `qk_layer`s (Q/K), for every option and budget: the same summation
/// code runs on each layer (SPEC steps 0-3), and the same decisions follow.
/// Map layers and Q/K layers may be mixed in one image (each layer's values
/// are those its own path computes).
///
/// ## State (bytes)
///
/// With N tokens, M = N - prefix - suffix candidates, P pivot layers, L
/// layers, and |P|, |Q| the pivotal and complementary tokens of the image:
///
///       8 P N          contribution degrees r_l of the pivot layers (steps 0-1)
///     + 8 N            diagonal scratch of a map layer's degree pass (none
///                      when every layer is Q/K)
///     + 8 N            affinity w (step 3; the fill order of step 5)
///     + 4 (|P| + |Q|)  the pivotal and complementary tokens
///     + 8 (L + 2 P)    layer tables (8 (L + P) when options.pivot_layers is empty)
///   and, for step 3 from a map layer, either
///     + 8 N            one pivot's row scores, or 8 K N for column scores,
///                      K = min(|P|, max(1, 2^21 / N)) (one pass over the layer
///                      per K pivots, as `select` makes), when the complementary
///                      layer comes at or after the last pivot layer: its pivot
///                      rows (columns) are read as it is observed;
///     + 8 M N          when it comes before the last pivot layer: the score
///                      vector of every candidate (the head mean of its rows,
///                      or columns, of candidates), kept until the pivots are known;
///   or from a Q/K layer (its K N scores live only during the pass, as in
///   Q/K `select`)
///     + 0              when it comes at or after the last pivot layer;
///     + 2 H N d e      when it comes before: copies of its Q and K (H heads,
///                      dim d, e bytes an element), scored once the pivots
///                      are known by the call Q/K `select` makes (qk_source).
///
/// No copy of a layer's maps is kept. CLIP-336 (N = 577, M = 576, defaults:
/// every layer a pivot layer, row scores from the last): 8 (L + 3) N + 16 L
/// bytes plus the tokens, 23,756 bytes for L = 2 and 121,028 for L = 23
/// (6 pivotal, 155 complementary tokens); a complementary layer before the
/// last pivot layer makes it 2,677,956 bytes for L = 2. From Q/K (16 heads,
/// d = 64) the same defaults hold 8 (L + 1) N + 16 L bytes plus the tokens,
/// 14,524 bytes for L = 2 with those tokens; a complementary layer before
/// the last pivot layer adds 4,726,784 bytes in float (2,363,392 in half).
/// `state_bytes()` reports the capacity of every buffer held (not
/// `sizeof(pruner)`). Buffers keep their capacity across `reset()`: a pruner
/// serving a stream of same-shaped images reallocates its state only when an
/// image needs more tokens than any before. (The decision steps allocate
/// O(N) scratch during an `observe`, as `select` does, and free it; a Q/K
/// pass also allocates what Q/K `select`'s pass does: its GEMM tile of about
/// 256 KiB, N d widened keys where they are not read in place, and for step
/// 3 the K N scores, twice that for columns.)
///
/// ## Errors
///
/// `observe`, `skip` and `select` throw `freepruner::error`; `try_observe`,
/// `try_skip` and `try_select` return the `status` instead. Calls out of
/// order (an observe after L layers, a select before them, a skip of a
/// layer `wants()` reads) are `errc::invalid_layer`; a map layer whose
/// extents are not [1][H][N][N], with the pruner's N and the image's first
/// H, is `errc::invalid_shape`. A Q/K layer gets Q/K `select`'s checks and
/// messages (qk.hpp's check_qk_layer, the layer named "layers[l]"), and N
/// must be the pruner's; its heads, as in Q/K `select`, may differ from the
/// other layers'. After any failed call the pruner is unchanged:
/// `observed()` still names the same layer, which may be passed again, or
/// `reset()` starts over. A NaN or an infinity is reported, with `select`'s
/// message, by the `observe` that reads it; the pivot rows (or columns) of
/// a complementary layer observed before the last pivot layer are read, and
/// checked, when that last pivot layer is observed (from Q/K: its keys, and
/// the queries `select` reads). As in `select`, values of layers that neither
/// pick pivots nor give complements are not read.
///
/// ## Threads
///
/// One pruner per stream: a pruner is not safe for concurrent calls.
/// Distinct pruners share no mutable state and may run on separate threads.

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "detail/eigen.hpp"

#include "backend/cpu/qk.hpp"
#include "backend/cpu/scores.hpp"
#include "detail/decisions.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "options.hpp"
#include "qk.hpp"
#include "select.hpp"
#include "traits.hpp"

namespace freepruner {
namespace detail {
namespace stream {

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

}  // namespace stream
}  // namespace detail

template <class Tensor>
struct attention_traits<detail::stream::layer_in_stack<Tensor>> {
  using value_type = tensor_value_t<Tensor>;
  using memory_space = host_memory;
  static std::array<index_t, 4> extents(const detail::stream::layer_in_stack<Tensor>& s) {
    auto e = attention_traits<Tensor>::extents(*s.tensor);
    e[0] = s.layers;
    return e;
  }
  // Only the observed layer is ever asked for.
  static const value_type* row(const detail::stream::layer_in_stack<Tensor>& s, index_t, index_t h, index_t i) {
    return attention_traits<Tensor>::row(*s.tensor, 0, h, i);
  }
  static index_t key_stride(const detail::stream::layer_in_stack<Tensor>& s) {
    return attention_traits<Tensor>::key_stride(*s.tensor);
  }
};

namespace detail {
namespace stream {

inline status fault_status(const line_fault& f, index_t layer, direction dir) {
  if (f.head < 0)
    return fail(errc::non_finite, "attention maps of layer ", static_cast<long long>(layer),
                ": a sum over heads overflows (values too large to be attention probabilities)");
  const bool row = dir == direction::row;
  return fail(errc::non_finite, "attention maps[layer ", static_cast<long long>(layer), "][head ",
              static_cast<long long>(f.head), "][query ", static_cast<long long>(row ? f.line : f.other), "][key ",
              static_cast<long long>(row ? f.other : f.line), "] = ", cpu::kind_name(f.value),
              " (every value read must be finite)");
}

/// The layer source for attention maps: the three things the pruner needs
/// from a layer, computed by the CPU backend's own passes. Any other input
/// (Q/K: qk_source) is a class with the same three members:
///
///  - `degrees(r, scratch)`: SPEC steps 0-1, r[0..N) of the layer;
///  - `scores(pivots, buffer, sink)`: SPEC step 3, v_p of each pivot p
///    (ascending), handed over as `status sink(token_t p, const double* v)`
///    with v indexed by token (only candidates are read); stops at the first
///    error, which is the one `select` reports for these pivots;
///  - `keep(kept)`: what `scores` will need once the pivots are known, for
///    a complementary layer that comes before them. For maps that is
///    `score_matrix(out, faults)`: v_p for every candidate p, at
///    out[(p - first) * N + j] (M x N); a non-finite v_p is no error yet
///    (only pivots are read) but listed in `faults`, ascending, for the
///    message.
template <class Tensor>
class attention_source {
 public:
  attention_source(const Tensor& t, index_t layer, const plan& p, direction dir)
      : stack_{&t, p.layers}, layer_(layer), plan_(p), dir_(dir) {}

  status degrees(double* r, std::vector<double>& scratch) const {
    return cpu::contribution_degree(stack_, layer_, r, scratch);
  }

  template <class Sink>
  status scores(const std::vector<token_t>& pivots, std::vector<double>& buffer, Sink&& sink) const {
    return cpu::each_scores(stack_, layer_, pivots, plan_, dir_, buffer, sink);  // select's own
  }

  status keep(kept_layer& kept) const {
    kept.from_qk = false;
    return score_matrix(kept.matrix, kept.faults);
  }

  status score_matrix(std::vector<double>& out, std::vector<line_fault>& faults) const {
    using tr = attention_traits<Tensor>;
    const index_t heads = plan_.heads, n = plan_.tokens, ks = tr::key_stride(*stack_.tensor);
    const index_t first = plan_.first, last = plan_.last, m = plan_.candidates;
    out.assign(static_cast<std::size_t>(m * n), 0.0);
    Eigen::Map<Eigen::ArrayXXd> v(out.data(), n, m);  // column p - first = v_p
    if (dir_ == direction::row) {  // complementary_scores' row sums, for every candidate
      for (index_t p = first; p < last; ++p)
        cpu::pivot_row_sum(*stack_.tensor, 0, static_cast<token_t>(p), &out[static_cast<std::size_t>((p - first) * n)]);
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
            const typename tr::value_type* row = tr::row(*stack_.tensor, 0, h, j) + first * ks;
            cpu::add_rows(&row, 1, m, ks, &sums[static_cast<std::size_t>((j - j0) * n + first)]);
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
    const index_t ks = tr::key_stride(*stack_.tensor);
    line_fault f;
    f.line = p;
    const bool row = dir_ == direction::row;
    const index_t from = row ? 0 : plan_.first, to = row ? plan_.tokens : plan_.last;
    for (index_t h = 0; h < plan_.heads; ++h)
      for (index_t o = from; o < to; ++o) {
        const auto* at = row ? tr::row(*stack_.tensor, 0, h, p) + o * ks : tr::row(*stack_.tensor, 0, h, o) + p * ks;
        const double x = cpu::to_double(*at);
        if (!std::isfinite(x)) {
          f.head = h;
          f.other = o;
          f.value = x;
          return f;
        }
      }
    return f;
  }

  layer_in_stack<Tensor> stack_;
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
    const std::size_t chunk = cpu::score_chunk(plan_.tokens);
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
  qk_source(const qk_layer<const E>& layer, index_t index, const plan& p, direction dir)
      : layer_(layer), label_(layer_label(static_cast<std::size_t>(index))), plan_(p), dir_(dir) {}

  status degrees(double* r, std::vector<double>&) const { return cpu::qk::layer_degrees(layer_, label_, r); }

  // The scores of a chunk of pivots (K N doubles, select's buffer) live as
  // long as the pass, as its tile does: kept in the state they would grow
  // with |P|, up to 16 MB.
  template <class Sink>
  status scores(const std::vector<token_t>& pivots, std::vector<double>&, Sink&& sink) const {
    std::vector<double> buffer;
    return cpu::qk::for_each_pivot_scores(layer_, label_, pivots, plan_.first, plan_.last, dir_, buffer,
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
};

}  // namespace stream
}  // namespace detail

/// Token selection fed one encoder layer at a time (see the file comment):
/// `observe` (or `skip`) each of the L layers in encoder order, then
/// `select`; `reset` for the next image. `select` returns exactly what
/// `freepruner::select` returns on the L layers stacked, with the same
/// options and budget.
class pruner {
 public:
  /// `layers`: how many layers will be observed (select's L); `tokens`: N.
  /// `options` as for `select`: `pivot_layers` and `complementary_layer`
  /// index the observed layers 0..L-1 in observe order (-1: the last).
  /// Throws `freepruner::error` on a bad count or options.
  pruner(index_t layers, index_t tokens, options o = {}) {
    detail::check(validate(layers, tokens, o));
    options_ = std::move(o);
    detail::check(detail::make_plan({layers, 1, tokens, tokens}, options_, plan_));
    plan_.heads = 0;
    plan_.pivot_layers.shrink_to_fit();  // the state is exactly the documented bytes
    options_.pivot_layers.shrink_to_fit();
    slot_.assign(static_cast<std::size_t>(layers), -1);
    for (std::size_t k = 0; k < plan_.pivot_layers.size(); ++k) {
      slot_[static_cast<std::size_t>(plan_.pivot_layers[k])] = static_cast<index_t>(k);
      last_pivot_ = std::max(last_pivot_, plan_.pivot_layers[k]);
    }
    degrees_.resize(plan_.pivot_layers.size() * static_cast<std::size_t>(tokens));
  }

  /// The constructor's checks, without throwing (for engines built with
  /// -fno-exceptions, where a failed constructor aborts).
  static status validate(index_t layers, index_t tokens, const options& o) {
    if (layers < 1)
      return detail::fail(errc::invalid_shape, "pruner: layers = ", static_cast<long long>(layers), " (must be >= 1)");
    if (tokens < 1)
      return detail::fail(errc::invalid_shape, "pruner: tokens = ", static_cast<long long>(tokens), " (must be >= 1)");
    detail::plan p;
    return detail::make_plan({layers, 1, tokens, tokens}, o, p);
  }

  /// Whether `observe` reads layer `layer` (0..L-1): a pivot layer or the
  /// complementary layer. An engine may skip the capture of the others.
  bool wants(index_t layer) const {
    if (layer < 0 || layer >= plan_.layers)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::wants: layer = ", static_cast<long long>(layer),
                                 " is outside 0..", static_cast<long long>(plan_.layers - 1)));
    return slot_[static_cast<std::size_t>(layer)] >= 0 || layer == plan_.complementary_layer;
  }

  /// The next layer's maps: any attention tensor with extents [1][H][N][N]
  /// (a one-layer `attention_view`, an Eigen tensor, ...), H the same for
  /// every layer of an image. Layers that `wants()` rejects are checked for
  /// shape and a null pointer (as `select` checks them) and not read.
  template <class Tensor>
  void observe(const Tensor& layer_maps) {
    detail::check(try_observe(layer_maps));
  }

  /// `observe` returning a status; on failure the pruner is unchanged.
  template <class Tensor>
  status try_observe(const Tensor& layer_maps) {
    static_assert(detail::assert_host_tensor<Tensor>(), "");
    if (auto s = check_room("observe"); !s) return s;
    const auto e = attention_traits<Tensor>::extents(layer_maps);
    if (e[0] != 1)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", static_cast<long long>(observed_),
                          ": layer_maps has layers = ", static_cast<long long>(e[0]),
                          " (observe takes one layer: extents [1][heads][tokens][tokens])");
    if (auto s = detail::check_shape(e); !s) return s;
    if (auto s = check_layer(e[1], e[2], "layer_maps"); !s) return s;
    if (attention_traits<Tensor>::row(layer_maps, 0, 0, 0) == nullptr)  // select's check_data, same message
      return detail::fail(errc::null_data, "attention maps: data of layer ", static_cast<long long>(observed_),
                          " is null with shape [", static_cast<long long>(plan_.layers), ", ", static_cast<long long>(e[1]),
                          ", ", static_cast<long long>(plan_.tokens), ", ", static_cast<long long>(plan_.tokens), "]");
    return take_layer(detail::stream::attention_source<Tensor>(layer_maps, observed_, plan_, options_.complementary_from),
                      e[1]);
  }

  /// The next layer's queries and keys, for encoders that run flash
  /// attention: the maps are softmax(scale Q_h K_h^T), as for Q/K `select`
  /// (qk.hpp), whose checks and messages ("layers[l]...") apply, l being
  /// `observed()`. Host memory; float, double, Eigen::half or
  /// Eigen::bfloat16; any strides. N must be the pruner's; the heads may
  /// differ from layer to layer, as in Q/K `select`. Map layers and Q/K
  /// layers may be mixed in one image.
  template <class T, class Space>
  void observe(const qk_layer<T, Space>& layer) {
    detail::check(try_observe(layer));
  }

  /// `observe` of Q/K returning a status; on failure the pruner is unchanged.
  template <class T, class Space>
  status try_observe(const qk_layer<T, Space>& layer) {
    static_assert(std::is_same<Space, host_memory>::value,
                  "freepruner: Q/K selection reads host memory (there is no device backend for it)");
    using E = std::remove_cv_t<T>;
    static_assert(detail::cpu::is_host_element_v<E>,
                  "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 Q/K");
    if (auto s = check_room("observe"); !s) return s;
    // Q/K select's checks of one layer, under its name for the layer.
    if (auto s = detail::check_qk_layer(layer, detail::layer_label(static_cast<std::size_t>(observed_))); !s) return s;
    if (layer.q.tokens() != plan_.tokens)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", static_cast<long long>(observed_),
                          ": layer.q has tokens = ", static_cast<long long>(layer.q.tokens()),
                          ", the pruner was built for tokens = ", static_cast<long long>(plan_.tokens));
    const qk_layer<const E> view{layer.q, layer.k, layer.scale};
    return take_layer(detail::stream::qk_source<E>(view, observed_, plan_, options_.complementary_from),
                      heads_known_ ? plan_.heads : layer.q.heads());
  }

  /// Counts layer `observed()` without maps; an error if `wants()` it.
  void skip() { detail::check(try_skip()); }

  /// `skip` returning a status; on failure the pruner is unchanged.
  status try_skip() {
    if (auto s = check_room("skip"); !s) return s;
    const index_t l = observed_;
    if (wants(l))
      return detail::fail(errc::invalid_layer, "pruner::skip: layer ", static_cast<long long>(l), " is ",
                          slot_[static_cast<std::size_t>(l)] >= 0 ? "a pivot layer" : "the complementary layer",
                          " (its maps are read: pass them to observe)");
    ++observed_;
    return {};
  }

  /// The kept tokens (SPEC steps 4-5), once all L layers are observed; may
  /// be called again with another budget.
  selection select(const budget& b = budget::adaptive()) const {
    selection out;
    detail::check(try_select(b, out));
    return out;
  }

  /// `select` returning a status; `out` is left empty on failure.
  status try_select(const budget& b, selection& out) const {
    out = selection{};
    if (observed_ < plan_.layers)
      return detail::fail(errc::invalid_layer, "pruner::select: ", static_cast<long long>(observed_), " of ",
                          static_cast<long long>(plan_.layers), " layers observed (observe or skip the rest first)");
    index_t m = 0;
    if (auto s = detail::budget_tokens(b, plan_.candidates, m); !s) return s;
    out = detail::fit_budget(degrees_.data(), plan_.pivot_layers.size(), pivots_, complements_, affinity_, plan_, m);
    return {};
  }

  /// SPEC steps 0-1 of pivot layer `layer` (-1: the last layer), once it is
  /// observed: `contribution_degree` on the stacked maps, to the bit.
  std::vector<double> contribution_degree(index_t layer) const {
    index_t l = 0;
    detail::check(detail::resolve_layer(layer, plan_.layers, "pruner::contribution_degree: layer", l));
    const index_t k = slot_[static_cast<std::size_t>(l)];
    if (k < 0)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::contribution_degree: layer ", static_cast<long long>(l),
                                 " is not a pivot layer (its degrees are not computed)"));
    if (observed_ <= l)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::contribution_degree: layer ", static_cast<long long>(l),
                                 " is not observed yet (", static_cast<long long>(observed_), " observed)"));
    const auto n = static_cast<std::size_t>(plan_.tokens);
    const auto* r = &degrees_[static_cast<std::size_t>(k) * n];
    return std::vector<double>(r, r + n);
  }

  /// SPEC step 2: the pivotal tokens P, once every pivot layer is observed.
  const std::vector<token_t>& pivotal() const {
    if (observed_ <= last_pivot_)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::pivotal: the last pivot layer, ",
                                 static_cast<long long>(last_pivot_), ", is not observed yet (",
                                 static_cast<long long>(observed_), " observed)"));
    return pivots_;
  }

  /// SPEC step 3: Q and the affinity, once the complementary layer and every
  /// pivot layer are observed: `complementary_tokens` on the stacked maps.
  complements complementary() const {
    const index_t needed = std::max(last_pivot_, plan_.complementary_layer);
    if (observed_ <= needed)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::complementary: layer ", static_cast<long long>(needed),
                                 " is not observed yet (", static_cast<long long>(observed_), " observed)"));
    return complements{complements_, affinity_};
  }

  /// Starts the next image: same layers, tokens and options; buffers keep
  /// their capacity.
  void reset() noexcept {
    observed_ = 0;
    heads_known_ = false;
    plan_.heads = 0;
    pivots_.clear();
    complements_.clear();
    kept_.faults.clear();
  }

  /// Layers observed or skipped so far (the index of the next one).
  index_t observed() const noexcept { return observed_; }
  index_t layers() const noexcept { return plan_.layers; }
  index_t tokens() const noexcept { return plan_.tokens; }
  /// Heads of the image's first layer; 0 until a layer is observed.
  index_t heads() const noexcept { return heads_known_ ? plan_.heads : 0; }

  /// Bytes of heap memory the state holds: the capacity of every buffer
  /// (see the file comment for the sizes).
  std::size_t state_bytes() const noexcept {
    return bytes(degrees_) + bytes(diagonal_) + bytes(affinity_) + bytes(scores_) + kept_.bytes() + bytes(pivots_) +
           bytes(complements_) + bytes(slot_) + bytes(plan_.pivot_layers) + bytes(options_.pivot_layers);
  }

 private:
  template <class V>
  static std::size_t bytes(const V& v) noexcept {
    return v.capacity() * sizeof(typename V::value_type);
  }

  // The checks every input of a layer shares: a layer is left to observe,
  // and (map layers) it has the pruner's N and the image's H.
  status check_room(const char* call) const {
    if (observed_ < plan_.layers) return {};
    return detail::fail(errc::invalid_layer, "pruner::", call, ": all ", static_cast<long long>(plan_.layers),
                        " layers were already observed (reset() starts the next image)");
  }
  status check_layer(index_t heads, index_t tokens, const char* what) const {
    if (tokens != plan_.tokens)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", static_cast<long long>(observed_), ": ", what,
                          " has tokens = ", static_cast<long long>(tokens), ", the pruner was built for tokens = ",
                          static_cast<long long>(plan_.tokens));
    if (heads_known_ && heads != plan_.heads)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", static_cast<long long>(observed_), ": ", what,
                          " has heads = ", static_cast<long long>(heads), ", the image's first layer had heads = ",
                          static_cast<long long>(plan_.heads));
    return {};
  }

  // The seam for every kind of input: one checked layer (check_room,
  // check_layer) of `heads` heads from a layer source, a class with the
  // three members of detail::stream::attention_source (degrees, scores of
  // given pivots, keep what those scores need), built on `plan_` (its heads
  // are set here before any member is called). Writes only to buffers that
  // no later step reads before this layer succeeds; commits on success.
  template <class Source>
  status take_layer(const Source& src, index_t heads) {
    plan_.heads = heads;  // the image's, once a layer is taken
    if (auto s = run_layer(src); !s) return s;
    heads_known_ = true;
    ++observed_;
    return {};
  }

  template <class Source>
  status run_layer(const Source& src) {
    const index_t l = observed_, c = plan_.complementary_layer;
    const auto n = static_cast<std::size_t>(plan_.tokens);
    const index_t k = slot_[static_cast<std::size_t>(l)];
    if (k >= 0) {  // steps 0-1
      double* r = &degrees_[static_cast<std::size_t>(k) * n];
      if (auto s = src.degrees(r, diagonal_); !s) return s;
      if (auto s = detail::check_spread(r, plan_.first, plan_.last, "the contribution degrees r"); !s) return s;
    }
    std::vector<token_t> pivots;
    const bool pivots_now = l == last_pivot_;
    if (pivots_now)  // step 2, once every pivot layer is in
      pivots = detail::pivotal_from_degrees(degrees_.data(), plan_.pivot_layers.size(), plan_, options_.pivots_per_layer,
                                            options_.fence_factor);
    const std::vector<token_t>& known = pivots_now ? pivots : pivots_;
    std::vector<token_t> comps;
    std::vector<double> affinity;
    bool have_complements = false;
    if (l == c && c >= last_pivot_) {  // step 3 from this layer's pivot rows or columns
      if (auto s = complement(src, known, comps, affinity); !s) return s;
      have_complements = true;
    } else if (l == c) {  // pivots not known yet: keep what their scores need
      if (auto s = src.keep(kept_); !s) return s;
    } else if (pivots_now && c < last_pivot_) {  // step 3 from what layer c left
      if (auto s = complement_kept(known, comps, affinity); !s) return s;
      have_complements = true;
    }
    // Copied into the kept buffers: their capacity is the most an image needed.
    if (pivots_now) pivots_.assign(pivots.begin(), pivots.end());
    if (have_complements) {
      complements_.assign(comps.begin(), comps.end());
      affinity_.swap(affinity);
    }
    return {};
  }

  // SPEC step 3 from a complementary layer observed before the pivots: its
  // score matrix (maps) or its Q and K.
  status complement_kept(const std::vector<token_t>& pivots, std::vector<token_t>& out, std::vector<double>& affinity) {
    const index_t c = plan_.complementary_layer;
    const direction dir = options_.complementary_from;
    if (!kept_.from_qk)
      return complement(detail::stream::matrix_source(kept_.matrix, kept_.faults, c, plan_, dir), pivots, out, affinity);
    return std::visit(
        [&](const auto& x) {
          using source = detail::stream::qk_source<typename std::decay_t<decltype(x)>::element>;
          return complement(source(x.layer(), c, plan_, dir), pivots, out, affinity);
        },
        kept_.qk);
  }

  // SPEC step 3 as cpu::complementary does it, the score vectors from `src`.
  template <class Source>
  status complement(const Source& src, const std::vector<token_t>& pivots, std::vector<token_t>& out,
                    std::vector<double>& affinity) {
    detail::complement_builder<double, detail::cpu::fast_loops> builder(pivots, plan_, options_.fence_factor);
    auto sink = [&builder](token_t p, const double* v) { return builder.add(v, p); };
    if (auto s = src.scores(pivots, scores_, sink); !s) return s;
    return builder.finish(out, affinity);
  }

  options options_;
  detail::plan plan_;                       // heads: the current image's
  std::vector<index_t> slot_;               // per layer: its row of degrees_, or -1
  index_t last_pivot_ = 0;
  index_t observed_ = 0;
  bool heads_known_ = false;
  std::vector<double> degrees_;             // P x N, rows in pivot_layers order (as select)
  std::vector<double> diagonal_;            // N, scratch of the degree pass
  std::vector<token_t> pivots_;             // P, once the last pivot layer is in
  std::vector<token_t> complements_;        // Q
  std::vector<double> affinity_;            // N
  std::vector<double> scores_;              // a map layer's N (row) or K x N (column) score vectors
  detail::stream::kept_layer kept_;         // layer c, only when it precedes the last pivot layer
};

}  // namespace freepruner

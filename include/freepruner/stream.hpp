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
/// No copy of a layer's maps is kept: the state is O(P N) for P pivot
/// layers. docs/streaming.md gives its bytes, the rules for errors and calls
/// out of order, and thread safety.

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "backend/cpu/backend.hpp"
#include "backend/cpu/sources.hpp"
#include "detail/messages.hpp"
#include "detail/pipeline.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "options.hpp"
#include "qk.hpp"
#include "stages.hpp"
#include "traits.hpp"

namespace freepruner {

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
  /// `parallel` runs each Q/K layer's heads as tasks (executor.hpp; any
  /// executor gives the same tokens). Throws `freepruner::error` on a bad
  /// count or options.
  pruner(index_t layers, index_t tokens, options o = {}, executor parallel = {}) : parallel_(std::move(parallel)) {
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
    if (layers < 1) return detail::below_one(errc::invalid_shape, layers, "pruner: layers");
    if (tokens < 1) return detail::below_one(errc::invalid_shape, tokens, "pruner: tokens");
    detail::plan p;
    return detail::make_plan({layers, 1, tokens, tokens}, o, p);
  }

  /// Whether `observe` reads layer `layer` (0..L-1): a pivot layer or the
  /// complementary layer. An engine may skip the capture of the others.
  bool wants(index_t layer) const {
    if (layer < 0 || layer >= plan_.layers)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::wants: layer = ", layer,
                                 " is outside 0..", plan_.layers - 1));
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
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", observed_,
                          ": layer_maps has layers = ", e[0],
                          " (observe takes one layer: extents [1][heads][tokens][tokens])");
    if (auto s = detail::check_shape(e); !s) return s;
    if (auto s = check_layer(e[1], e[2], "layer_maps"); !s) return s;
    if (attention_traits<Tensor>::row(layer_maps, 0, 0, 0) == nullptr)
      return detail::null_maps(observed_, plan_.layers, e[1], plan_.tokens);
    const detail::cpu::layer_in_stack<Tensor> stack{&layer_maps, plan_.layers};
    return take_layer(detail::cpu::attention_source<detail::cpu::layer_in_stack<Tensor>>(stack, observed_, plan_,
                                                                                          options_.complementary_from),
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
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", observed_,
                          ": layer.q has tokens = ", layer.q.tokens(),
                          ", the pruner was built for tokens = ", plan_.tokens);
    const qk_layer<const E> view{layer.q, layer.k, layer.scale};
    return take_layer(detail::cpu::qk_source<E>(view, observed_, plan_, options_.complementary_from, parallel_),
                      heads_known_ ? plan_.heads : layer.q.heads());
  }

  /// Counts layer `observed()` without maps; an error if `wants()` it.
  void skip() { detail::check(try_skip()); }

  /// `skip` returning a status; on failure the pruner is unchanged.
  status try_skip() {
    if (auto s = check_room("skip"); !s) return s;
    const index_t l = observed_;
    if (wants(l))
      return detail::fail(errc::invalid_layer, "pruner::skip: layer ", l, " is ",
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
      return detail::fail(errc::invalid_layer, "pruner::select: ", observed_, " of ",
                          plan_.layers, " layers observed (observe or skip the rest first)");
    detail::kept_count m;
    if (auto s = detail::budget_tokens(b, plan_.candidates, m); !s) return s;
    out = detail::kept_set(degrees_.data(), plan_.pivot_layers.size(), pivots_, complements_, affinity_, plan_, m);
    return {};
  }

  /// SPEC steps 0-1 of pivot layer `layer` (-1: the last layer), once it is
  /// observed: `contribution_degree` on the stacked maps, to the bit.
  std::vector<double> contribution_degree(index_t layer) const {
    index_t l = 0;
    detail::check(detail::resolve_layer(layer, plan_.layers, "pruner::contribution_degree: layer", l));
    const index_t k = slot_[static_cast<std::size_t>(l)];
    if (k < 0)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::contribution_degree: layer ", l,
                                 " is not a pivot layer (its degrees are not computed)"));
    if (observed_ <= l)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::contribution_degree: layer ", l,
                                 " is not observed yet (", observed_, " observed)"));
    const auto n = static_cast<std::size_t>(plan_.tokens);
    const auto* r = &degrees_[static_cast<std::size_t>(k) * n];
    return std::vector<double>(r, r + n);
  }

  /// SPEC step 2: the pivotal tokens P, once every pivot layer is observed.
  const std::vector<token_t>& pivotal() const {
    if (observed_ <= last_pivot_)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::pivotal: the last pivot layer, ",
                                 last_pivot_, ", is not observed yet (",
                                 observed_, " observed)"));
    return pivots_;
  }

  /// SPEC step 3: Q and the affinity, once the complementary layer and every
  /// pivot layer are observed: `complementary_tokens` on the stacked maps.
  complements complementary() const {
    const index_t needed = std::max(last_pivot_, plan_.complementary_layer);
    if (observed_ <= needed)
      detail::raise(detail::fail(errc::invalid_layer, "pruner::complementary: layer ", needed,
                                 " is not observed yet (", observed_, " observed)"));
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
    return detail::fail(errc::invalid_layer, "pruner::", call, ": all ", plan_.layers,
                        " layers were already observed (reset() starts the next image)");
  }
  status check_layer(index_t heads, index_t tokens, const char* what) const {
    if (tokens != plan_.tokens)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", observed_, ": ", what,
                          " has tokens = ", tokens, ", the pruner was built for tokens = ",
                          plan_.tokens);
    if (heads_known_ && heads != plan_.heads)
      return detail::fail(errc::invalid_shape, "pruner::observe, layer ", observed_, ": ", what,
                          " has heads = ", heads, ", the image's first layer had heads = ",
                          plan_.heads);
    return {};
  }

  // The seam for every kind of input: one checked layer (check_room,
  // check_layer) of `heads` heads from a layer source (detail/pipeline.hpp,
  // plus `keep` for what its scores need later; backend/cpu/sources.hpp),
  // built on `plan_` (its heads are set here before any member is called). Writes only to buffers that
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
    if (k >= 0)  // steps 0-1
      if (auto s = detail::degree_step(src, plan_, &degrees_[static_cast<std::size_t>(k) * n], diagonal_); !s) return s;
    std::vector<token_t> pivots;
    const bool pivots_now = l == last_pivot_;
    if (pivots_now) pivots = detail::pivotal_step(degrees_.data(), plan_, options_);  // step 2, every pivot layer in
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
      return complement(detail::cpu::matrix_source(kept_.matrix, kept_.faults, c, plan_, dir), pivots, out, affinity);
    return std::visit(
        [&](const auto& x) {
          using source = detail::cpu::qk_source<typename std::decay_t<decltype(x)>::element>;
          return complement(source(x.layer(), c, plan_, dir, parallel_), pivots, out, affinity);
        },
        kept_.qk);
  }

  // SPEC step 3, the score vectors from `src`.
  template <class Source>
  status complement(const Source& src, const std::vector<token_t>& pivots, std::vector<token_t>& out,
                    std::vector<double>& affinity) {
    return detail::complementary_step<detail::cpu::fast_loops>(src, pivots, plan_, options_, scores_, out, affinity);
  }

  options options_;
  executor parallel_;
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
  detail::cpu::kept_layer kept_;         // layer c, only when it precedes the last pivot layer
};

}  // namespace freepruner

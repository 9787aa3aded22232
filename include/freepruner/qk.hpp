#pragma once
/// \file qk.hpp
/// Selection from queries and keys, for encoders that run flash attention
/// and never materialize the maps: `select` on the Q and K of the chosen
/// layers gives what `select` gives on their softmax maps (SPEC.md), and no
/// N x N buffer is formed.
///
/// The maps are A_h = softmax(scale * Q_h K_h^T) per head, row-wise. Pass
/// the Q and K that enter that product:
///  - llama.cpp (clip.cpp): the tensors Qcur-<il> and Kcur-<il>, contiguous
///    F32 [d_head, n_head, n_pos] in ggml's order, i.e. C order [N][H][d]:
///    `qk_tensor<const float>::tokens_major(data, H, N, d)`, scale 1/sqrt(d)
///    (the default) unless the graph scales Q itself.
///  - Hugging Face CLIP/SigLIP: `q_proj(x)` and `k_proj(x)` reshaped to
///    [N][H][d] (tokens_major) or, after the transpose, [H][N][d]
///    (heads_major). CLIPAttention multiplies q by the scale before the
///    product: if you pass that scaled q, pass scale = 1.
///
/// Precision: logits, exp and the softmax rows are computed in float (in
/// double for double inputs; half and bfloat16 are widened to float) and
/// summed in double. The selection equals that of the float64 maps except
/// on near-ties. tests/test_qk.cpp states it for logits within +-20: degrees
/// and scores within 1e-5 of their vector's largest value (measured 2.5e-7
/// and 2.3e-6; double inputs 1e-13), and identical selections whenever every
/// decision's two sides are more than 2 (1 + f) 1e-5 of that value apart
/// (f: the fence factor). A probability's float error grows with its
/// logits' size, about 6e-8 |logit|.
///
/// Cost per read layer: H GEMMs of N x d x N and N^2 H exps, in blocks of
/// rows whose tile stays in L2; memory O(N d + rows N) per pass instead of
/// the maps' L H N^2 elements. The float kernels are chosen at run time
/// (SSE2, AVX2, AVX-512F), whatever the flags the engine is built with, and
/// give the same result on each. The column direction (SPEC step 3) costs one
/// more pass over the complementary layer; the row direction computes only
/// the pivot rows.

#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cpu/backend.hpp"
#include "detail/messages.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "executor.hpp"
#include "options.hpp"
#include "select.hpp"
#include "view.hpp"

namespace freepruner {

namespace detail {

/// Shape, scale and data of one layer (SPEC "Bad input", for Q/K).
template <class T, class Space>
status check_qk_layer(const qk_layer<T, Space>& layer, const std::string& label) {
  static const char* const names[3] = {"heads", "tokens", "dim"};
  const qk_tensor<T, Space>* parts[2] = {&layer.q, &layer.k};
  for (int w = 0; w < 2; ++w)
    for (int d = 0; d < 3; ++d)
      if (parts[w]->extent(d) <= 0)
        return below_one(errc::invalid_shape, parts[w]->extent(d), label, w == 0 ? ".q: " : ".k: ", names[d]);
  if (layer.q.extents() != layer.k.extents())
    return fail(errc::invalid_shape, label, ": q is [", layer.q.heads(), ", ",
                layer.q.tokens(), ", ", layer.q.dim(), "] but k is [",
                layer.k.heads(), ", ", layer.k.tokens(), ", ",
                layer.k.dim(), "] (heads, tokens, dim must match)");
  if (layer.q.tokens() > std::numeric_limits<token_t>::max()) return token_range(label, ": tokens = ", layer.q.tokens());
  if (!(std::isfinite(layer.scale) && layer.scale > 0))
    return fail(errc::invalid_option, label, ".scale = ", layer.scale,
                " (must be finite and > 0; make_qk_layer turns 0 into 1/sqrt(dim))");
  for (int w = 0; w < 2; ++w)
    if (parts[w]->data() == nullptr)
      return null_with_shape(label + (w == 0 ? ".q: data" : ".k: data"),
                             {parts[w]->heads(), parts[w]->tokens(), parts[w]->dim()});
  return {};
}

/// Every check of select on Q/K, and the plan.
template <class T, class Space>
status plan_qk(const std::vector<qk_layer<T, Space>>& layers, const budget& b, const options& o, plan& p,
               kept_count& m) {
  if (layers.empty()) return fail(errc::invalid_shape, "layers: empty (need at least one layer's q and k)");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (auto s = check_qk_layer(layers[l], layer_label(l)); !s) return s;
    if (layers[l].q.tokens() != layers[0].q.tokens())
      return fail(errc::invalid_shape, layer_label(l), ": tokens = ", layers[l].q.tokens(),
                  " but layers[0] has tokens = ", layers[0].q.tokens(),
                  " (every layer sees the same tokens)");
  }
  const index_t n = layers[0].q.tokens();
  if (auto s = make_plan({static_cast<index_t>(layers.size()), layers[0].q.heads(), n, n}, o, p); !s) return s;
  return budget_tokens(b, p.candidates, m);
}

}  // namespace detail

/// Selects from the queries and keys of L layers (SPEC steps 0-5, the same
/// options, budget and result as `select` on their maps); never throws. On
/// failure `out` is empty and the status names the argument and its value,
/// e.g. "layers[2].k[head 3][token 5][dim 0] = nan". `parallel` runs each
/// layer's heads as tasks (executor.hpp); any executor gives the same tokens.
template <class T, class Space>
status try_select(const std::vector<qk_layer<T, Space>>& layers, const budget& b, const options& o, selection& out,
                  const executor& parallel = {}) {
  static_assert(std::is_same<Space, host_memory>::value,
                "freepruner: Q/K selection reads host memory (there is no device backend for it)");
  static_assert(detail::cpu::is_host_element_v<std::remove_cv_t<T>>,
                "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 Q/K");
  out = selection{};
  detail::plan p;
  detail::kept_count m;
  if (auto s = detail::plan_qk(layers, b, o, p, m); !s) return s;
  selection result;
  if (auto s = detail::cpu::run_qk(layers, p, m, o, parallel, result); !s) return s;
  out = std::move(result);
  return {};
}

/// Selects from the queries and keys of L layers. Throws `freepruner::error`
/// on bad input.
template <class T, class Space>
selection select(const std::vector<qk_layer<T, Space>>& layers, const budget& b = budget::adaptive(),
                 const options& o = {}, const executor& parallel = {}) {
  selection out;
  detail::check(try_select(layers, b, o, out, parallel));
  return out;
}

}  // namespace freepruner

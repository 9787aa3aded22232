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

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cpu/qk.hpp"
#include "backend/cpu/scores.hpp"
#include "detail/decisions.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "options.hpp"
#include "select.hpp"
#include "view.hpp"

namespace freepruner {

/// One layer's queries or keys: a non-owning view of [heads][tokens][dim]
/// with element strides (any; a dim stride of 1 lets float and double rows
/// be read in place). Checks nothing when built; `select` validates it.
template <class T, class Space = host_memory>
class qk_tensor {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;
  using extents_type = std::array<index_t, 3>;

  constexpr qk_tensor() noexcept = default;

  /// `extents` = {heads, tokens, dim}; `strides` in elements for each.
  constexpr qk_tensor(T* data, const extents_type& extents, const extents_type& strides) noexcept
      : data_(data), extents_(extents), strides_(strides) {}

  /// Contiguous [H][N][d] (Hugging Face after the head transpose).
  static constexpr qk_tensor heads_major(T* data, index_t heads, index_t tokens, index_t dim) noexcept {
    return qk_tensor(data, {heads, tokens, dim}, {tokens * dim, dim, 1});
  }
  /// Contiguous [N][H][d]: ggml's [d_head, n_head, n_pos] (llama.cpp's
  /// Qcur/Kcur), Hugging Face before the head transpose.
  static constexpr qk_tensor tokens_major(T* data, index_t heads, index_t tokens, index_t dim) noexcept {
    return qk_tensor(data, {heads, tokens, dim}, {dim, heads * dim, 1});
  }

  /// A view of non-const elements converts to a view of const ones.
  template <class U, std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value && !std::is_same<U, T>::value, int> = 0>
  constexpr qk_tensor(const qk_tensor<U, Space>& other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr const extents_type& extents() const noexcept { return extents_; }
  constexpr const extents_type& strides() const noexcept { return strides_; }
  constexpr index_t extent(int dim) const noexcept { return extents_[static_cast<std::size_t>(dim)]; }
  constexpr index_t stride(int dim) const noexcept { return strides_[static_cast<std::size_t>(dim)]; }
  constexpr index_t heads() const noexcept { return extents_[0]; }
  constexpr index_t tokens() const noexcept { return extents_[1]; }
  constexpr index_t dim() const noexcept { return extents_[2]; }

  /// Element (head, token, component).
  constexpr T& operator()(index_t h, index_t n, index_t t) const noexcept {
    return data_[h * strides_[0] + n * strides_[1] + t * strides_[2]];
  }

 private:
  T* data_ = nullptr;
  extents_type extents_{0, 0, 0};
  extents_type strides_{0, 0, 0};
};

/// One layer: its queries, keys and softmax scale (A_h = softmax(scale Q_h
/// K_h^T)). q and k have the same extents; scale is finite and > 0.
template <class T, class Space = host_memory>
struct qk_layer {
  using tensor_type = qk_tensor<T, Space>;
  tensor_type q, k;
  double scale;
};

/// A layer with scale 1/sqrt(dim) when `scale` is 0 (the default), else
/// `scale` (1 for Hugging Face's pre-scaled q).
template <class T, class Space>
qk_layer<T, Space> make_qk_layer(qk_tensor<T, Space> q, qk_tensor<T, Space> k, double scale = 0) {
  if (scale == 0 && q.dim() > 0) scale = 1.0 / std::sqrt(static_cast<double>(q.dim()));
  return qk_layer<T, Space>{q, k, scale};
}

namespace detail {

inline std::string layer_label(std::size_t l) { return "layers[" + std::to_string(l) + "]"; }

/// Shape, scale and data of one layer (SPEC "Bad input", for Q/K).
template <class T, class Space>
status check_qk_layer(const qk_layer<T, Space>& layer, const std::string& label) {
  static const char* const names[3] = {"heads", "tokens", "dim"};
  const qk_tensor<T, Space>* parts[2] = {&layer.q, &layer.k};
  for (int w = 0; w < 2; ++w)
    for (int d = 0; d < 3; ++d)
      if (parts[w]->extent(d) <= 0)
        return fail(errc::invalid_shape, label, w == 0 ? ".q: " : ".k: ", names[d], " = ",
                    static_cast<long long>(parts[w]->extent(d)), " (must be >= 1)");
  if (layer.q.extents() != layer.k.extents())
    return fail(errc::invalid_shape, label, ": q is [", static_cast<long long>(layer.q.heads()), ", ",
                static_cast<long long>(layer.q.tokens()), ", ", static_cast<long long>(layer.q.dim()), "] but k is [",
                static_cast<long long>(layer.k.heads()), ", ", static_cast<long long>(layer.k.tokens()), ", ",
                static_cast<long long>(layer.k.dim()), "] (heads, tokens, dim must match)");
  if (layer.q.tokens() > std::numeric_limits<token_t>::max())
    return fail(errc::invalid_shape, label, ": tokens = ", static_cast<long long>(layer.q.tokens()),
                " exceeds the 32-bit token range");
  if (!(std::isfinite(layer.scale) && layer.scale > 0))
    return fail(errc::invalid_option, label, ".scale = ", layer.scale,
                " (must be finite and > 0; make_qk_layer turns 0 into 1/sqrt(dim))");
  for (int w = 0; w < 2; ++w)
    if (parts[w]->data() == nullptr)
      return fail(errc::null_data, label, w == 0 ? ".q" : ".k", ": data is null with shape [",
                  static_cast<long long>(parts[w]->heads()), ", ", static_cast<long long>(parts[w]->tokens()), ", ",
                  static_cast<long long>(parts[w]->dim()), "]");
  return {};
}

/// Every check of select on Q/K, and the plan.
template <class T, class Space>
status plan_qk(const std::vector<qk_layer<T, Space>>& layers, const budget& b, const options& o, plan& p, index_t& m) {
  if (layers.empty()) return fail(errc::invalid_shape, "layers: empty (need at least one layer's q and k)");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (auto s = check_qk_layer(layers[l], layer_label(l)); !s) return s;
    if (layers[l].q.tokens() != layers[0].q.tokens())
      return fail(errc::invalid_shape, layer_label(l), ": tokens = ", static_cast<long long>(layers[l].q.tokens()),
                  " but layers[0] has tokens = ", static_cast<long long>(layers[0].q.tokens()),
                  " (every layer sees the same tokens)");
  }
  const index_t n = layers[0].q.tokens();
  if (auto s = make_plan({static_cast<index_t>(layers.size()), layers[0].q.heads(), n, n}, o, p); !s) return s;
  return budget_tokens(b, p.candidates, m);
}

/// SPEC steps 1-5 from the per-layer operations of backend/cpu/qk.hpp,
/// with the host backend's decisions (pivotal_from_degrees,
/// complement_builder, fit_budget) and checks (check_spread).
template <class T, class Space>
status select_qk(const std::vector<qk_layer<T, Space>>& layers, const plan& p, index_t m, const options& o,
                 selection& out) {
  const std::size_t pivot_layers = p.pivot_layers.size(), n = static_cast<std::size_t>(p.tokens);
  std::vector<double> degrees(pivot_layers * n);
  for (std::size_t k = 0; k < pivot_layers; ++k) {
    const auto l = static_cast<std::size_t>(p.pivot_layers[k]);
    if (auto s = cpu::qk::layer_degrees(layers[l], layer_label(l), &degrees[k * n]); !s) return s;
    if (auto s = check_spread(&degrees[k * n], p.first, p.last, "the contribution degrees r"); !s) return s;
  }
  const auto pivots = pivotal_from_degrees(degrees.data(), pivot_layers, p, o.pivots_per_layer, o.fence_factor);
  // SPEC step 3.
  const auto c = static_cast<std::size_t>(p.complementary_layer);
  complement_builder<double, cpu::fast_loops> builder(pivots, p, o.fence_factor);
  std::vector<double> buffer;
  auto add = [&builder](token_t pivot, const double* v) { return builder.add(v, pivot); };
  if (auto s = cpu::qk::for_each_pivot_scores(layers[c], layer_label(c), pivots, p.first, p.last, o.complementary_from,
                                              buffer, add);
      !s)
    return s;
  std::vector<double> affinity;
  std::vector<token_t> comps;
  if (auto s = builder.finish(comps, affinity); !s) return s;
  out = fit_budget(degrees.data(), pivot_layers, pivots, comps, affinity, p, m);
  return {};
}

}  // namespace detail

/// Selects from the queries and keys of L layers (SPEC steps 0-5, the same
/// options, budget and result as `select` on their maps); never throws. On
/// failure `out` is empty and the status names the argument and its value,
/// e.g. "layers[2].k[head 3][token 5][dim 0] = nan".
template <class T, class Space>
status try_select(const std::vector<qk_layer<T, Space>>& layers, const budget& b, const options& o, selection& out) {
  static_assert(std::is_same<Space, host_memory>::value,
                "freepruner: Q/K selection reads host memory (there is no device backend for it)");
  static_assert(detail::cpu::is_host_element_v<std::remove_cv_t<T>>,
                "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 Q/K");
  out = selection{};
  detail::plan p;
  index_t m = 0;
  if (auto s = detail::plan_qk(layers, b, o, p, m); !s) return s;
  selection result;
  if (auto s = detail::select_qk(layers, p, m, o, result); !s) return s;
  out = std::move(result);
  return {};
}

/// Selects from the queries and keys of L layers. Throws `freepruner::error`
/// on bad input.
template <class T, class Space>
selection select(const std::vector<qk_layer<T, Space>>& layers, const budget& b = budget::adaptive(),
                 const options& o = {}) {
  selection out;
  detail::check(try_select(layers, b, o, out));
  return out;
}

}  // namespace freepruner

#pragma once
/// \file select.hpp
/// `select`, `try_select` and `kept_tokens`: the dispatch to the backend of
/// the maps' memory space (SPEC steps 0-5). No backend here: the CPU backend
/// comes with freepruner.hpp, the CUDA backend with cuda.cuh.

#include <optional>
#include <type_traits>
#include <vector>

#include "detail/messages.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "options.hpp"
#include "traits.hpp"
#include "view.hpp"

namespace freepruner {
namespace detail {

/// Backend per memory space; each backend specializes it in its own header.
template <class Space>
struct backend {
  static constexpr bool available = false;
};

template <class Space>
constexpr bool assert_backend() {
  static_assert(backend<Space>::available || !std::is_same<Space, host_memory>::value,
                "freepruner: host maps need the CPU backend: #include <freepruner/freepruner.hpp>");
  static_assert(backend<Space>::available || !std::is_same<Space, device_memory>::value,
                "freepruner: maps in device_memory need the CUDA backend: #include <freepruner/cuda.cuh>");
  return true;
}

template <class Tensor>
constexpr bool assert_selectable() {
  static_assert(assert_attention_tensor<Tensor>(), "freepruner: see the message above");
  static_assert(assert_backend<tensor_memory_space_t<Tensor>>(), "");
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// select

/// Selects the tokens to keep; never throws. On failure `out` is left
/// empty and the status names the argument and its value.
template <class Tensor>
status try_select(const Tensor& maps, const budget& b, const options& o, selection& out) {
  static_assert(detail::assert_selectable<Tensor>(), "");
  out = selection{};
  return detail::backend<tensor_memory_space_t<Tensor>>::select(maps, b, o, out);
}

/// Selects per item of a batch, each on its own thresholds; never throws.
template <class T, class Space>
status try_select(const batched_attention_view<T, Space>& maps, const budget& b, const options& o,
                  std::vector<selection>& out) {
  static_assert(detail::assert_backend<Space>(), "");
  return detail::backend<Space>::select(maps, b, o, out);
}

/// Selects the tokens to keep (SPEC steps 0-5). Throws `freepruner::error`
/// on bad input.
template <class Tensor>
selection select(const Tensor& maps, const budget& b = budget::adaptive(), const options& o = {}) {
  selection out;
  detail::check(try_select(maps, b, o, out));
  return out;
}

/// Selects per item of a batch: one selection per item, in batch order.
template <class T, class Space>
std::vector<selection> select(const batched_attention_view<T, Space>& maps, const budget& b = budget::adaptive(),
                              const options& o = {}) {
  std::vector<selection> out;
  detail::check(try_select(maps, b, o, out));
  return out;
}

/// The exact number of tokens `select` will keep for inputs of `tokens`
/// tokens, known before the encoder runs; empty for `budget::adaptive()`,
/// whose count depends on the maps. Throws on an invalid budget or options.
inline std::optional<index_t> kept_tokens(const budget& b, index_t tokens, const options& o = {}) {
  if (tokens < 1) detail::raise(detail::below_one(errc::invalid_shape, tokens, "tokens"));
  detail::check(detail::check_tokens(o, tokens));
  detail::kept_count m;
  detail::check(detail::budget_tokens(b, tokens - o.prefix_tokens - o.suffix_tokens, m));
  if (m.is_adaptive()) return std::nullopt;
  return m.count();
}

}  // namespace freepruner

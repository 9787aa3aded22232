#pragma once
/// \file traits.hpp
/// The attention-tensor concept: how any engine's tensor type is read by
/// freepruner in place, without a copy.
///
/// A type `T` is an attention tensor when `freepruner::attention_traits<T>`
/// provides
///
/// | member                                   | meaning                                              |
/// |------------------------------------------|------------------------------------------------------|
/// | `value_type`                             | element type: float, double, Eigen::half, Eigen::bfloat16 (and the CUDA types on device) |
/// | `static std::array<index_t,4> extents(const T&)` | {layers, heads, queries, keys}              |
/// | `static const value_type* row(const T&, index_t l, index_t h, index_t i)` | address of `A[l][h][i][0]` |
/// | `static index_t key_stride(const T&)`    | elements between `A[l][h][i][j]` and `A[l][h][i][j+1]` |
/// | `memory_space` (optional)                | `host_memory` (default) or `device_memory`          |
///
/// Two ways to provide them:
///  1. specialize `freepruner::attention_traits<T>` (full control: layers in
///     separate allocations, as ggml keeps them, work through `row`);
///  2. or, for a strided tensor, define `as_attention_view(const T&)`
///     returning a `freepruner::attention_view` in `T`'s namespace: it is
///     found by argument-dependent lookup (as fmt's `format_as`).
/// Adapters for Eigen tensors and mdspan are in `freepruner/adapters/`.

#include <array>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "view.hpp"

namespace freepruner {

/// Customization point; see the file comment for what a specialization provides.
template <class Tensor, class Enable = void>
struct attention_traits {};

/// The view itself is an attention tensor.
template <class T, class Space>
struct attention_traits<attention_view<T, Space>> {
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;
  static std::array<index_t, 4> extents(const attention_view<T, Space>& v) noexcept { return v.extents(); }
  static const value_type* row(const attention_view<T, Space>& v, index_t l, index_t h, index_t i) noexcept {
    return v.row(l, h, i);
  }
  static index_t key_stride(const attention_view<T, Space>& v) noexcept { return v.stride(3); }
};

namespace detail {

// Poison pill: makes the unqualified call below an ADL-only lookup.
void as_attention_view() = delete;

template <class T, class = void>
struct adl_view {
  static constexpr bool found = false;
};
template <class T>
struct adl_view<T, std::void_t<decltype(as_attention_view(std::declval<const T&>()))>> {
  static constexpr bool found = true;
  using type = std::decay_t<decltype(as_attention_view(std::declval<const T&>()))>;
};

template <class T>
struct is_attention_view : std::false_type {};
template <class T, class S>
struct is_attention_view<attention_view<T, S>> : std::true_type {};

}  // namespace detail

/// Types with an ADL `as_attention_view(const T&)` are read through that view.
template <class Tensor>
struct attention_traits<Tensor, std::enable_if_t<detail::adl_view<Tensor>::found &&
                                                 !detail::is_attention_view<Tensor>::value>> {
 private:
  using view = typename detail::adl_view<Tensor>::type;
  using base = attention_traits<view>;

 public:
  using value_type = typename base::value_type;
  using memory_space = typename base::memory_space;
  static std::array<index_t, 4> extents(const Tensor& t) { return as_attention_view(t).extents(); }
  static const value_type* row(const Tensor& t, index_t l, index_t h, index_t i) {
    return as_attention_view(t).row(l, h, i);
  }
  static index_t key_stride(const Tensor& t) { return as_attention_view(t).stride(3); }
};

namespace detail {

template <class Tr, class = void>
struct has_value_type : std::false_type {};
template <class Tr>
struct has_value_type<Tr, std::void_t<typename Tr::value_type>> : std::true_type {};

template <class T, class = void>
struct has_extents : std::false_type {};
template <class T>
struct has_extents<T, std::void_t<decltype(attention_traits<T>::extents(std::declval<const T&>()))>>
    : std::is_convertible<decltype(attention_traits<T>::extents(std::declval<const T&>())), std::array<index_t, 4>> {};

template <class T, class = void>
struct has_row : std::false_type {};
template <class T>
struct has_row<T, std::void_t<typename attention_traits<T>::value_type,
                              decltype(attention_traits<T>::row(std::declval<const T&>(), index_t{}, index_t{},
                                                                 index_t{}))>>
    : std::is_convertible<decltype(attention_traits<T>::row(std::declval<const T&>(), index_t{}, index_t{}, index_t{})),
                          const typename attention_traits<T>::value_type*> {};

template <class T, class = void>
struct has_key_stride : std::false_type {};
template <class T>
struct has_key_stride<T, std::void_t<decltype(attention_traits<T>::key_stride(std::declval<const T&>()))>>
    : std::is_convertible<decltype(attention_traits<T>::key_stride(std::declval<const T&>())), index_t> {};

template <class Tr, class = void>
struct memory_space_of {
  using type = host_memory;
};
template <class Tr>
struct memory_space_of<Tr, std::void_t<typename Tr::memory_space>> {
  using type = typename Tr::memory_space;
};

}  // namespace detail

/// True when `T` models the attention-tensor concept (C++17 spelling).
template <class T>
inline constexpr bool is_attention_tensor_v =
    detail::has_value_type<attention_traits<T>>::value && detail::has_extents<T>::value &&
    detail::has_row<T>::value && detail::has_key_stride<T>::value;

#if FREEPRUNER_HAS_CONCEPTS
/// The attention-tensor concept (C++20 spelling).
template <class T>
concept attention_tensor = is_attention_tensor_v<T>;
#endif

/// Element type of an attention tensor.
template <class T>
using tensor_value_t = typename attention_traits<T>::value_type;

/// Memory space of an attention tensor (`host_memory` unless its traits say otherwise).
template <class T>
using tensor_memory_space_t = typename detail::memory_space_of<attention_traits<T>>::type;

namespace detail {

// Each missing piece gets its own message, so the user sees what to add.
template <class T>
constexpr bool assert_attention_tensor() {
  static_assert(has_value_type<attention_traits<T>>::value,
                "freepruner: this type is not an attention tensor: attention_traits<T> has no `value_type`. "
                "Specialize freepruner::attention_traits<T>, define as_attention_view(const T&) in T's namespace, "
                "or include the adapter for it (freepruner/adapters/eigen.hpp, mdspan.hpp).");
  static_assert(!has_value_type<attention_traits<T>>::value || has_extents<T>::value,
                "freepruner: attention_traits<T> lacks `static std::array<index_t, 4> extents(const T&)` "
                "returning {layers, heads, queries, keys}.");
  static_assert(!has_value_type<attention_traits<T>>::value || has_row<T>::value,
                "freepruner: attention_traits<T> lacks `static const value_type* row(const T&, index_t layer, "
                "index_t head, index_t query)` returning the address of A[layer][head][query][0].");
  static_assert(!has_value_type<attention_traits<T>>::value || has_key_stride<T>::value,
                "freepruner: attention_traits<T> lacks `static index_t key_stride(const T&)`, the distance in "
                "elements between neighbouring keys of a row.");
  return is_attention_tensor_v<T>;
}

}  // namespace detail
}  // namespace freepruner

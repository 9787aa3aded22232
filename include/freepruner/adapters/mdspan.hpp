#pragma once
/// \file adapters/mdspan.hpp
/// Opt-in: any rank-4 mdspan with a strided layout and a plain-pointer data
/// handle is an attention tensor, read in place: `std::mdspan` (C++23),
/// `std::experimental::mdspan` (Kokkos), `cuda::std::mdspan` (CCCL).
/// `m(l, h, i, j)` is layer, head, query, key. Include your mdspan first;
/// this header needs none.

#include <array>
#include <type_traits>
#include <utility>

#include "../traits.hpp"

namespace freepruner {
namespace detail {

template <class M, class = void>
struct is_mdspan_like : std::false_type {};
template <class M>
struct is_mdspan_like<M, std::void_t<typename M::element_type, typename M::layout_type, typename M::accessor_type,
                                     decltype(std::declval<const M&>().data_handle()),
                                     decltype(std::declval<const M&>().stride(0)),
                                     decltype(std::declval<const M&>().extent(0)), decltype(M::rank())>>
    : std::bool_constant<M::rank() == 4 &&
                         std::is_pointer<std::decay_t<decltype(std::declval<const M&>().data_handle())>>::value> {};

}  // namespace detail

template <class M>
struct attention_traits<M, std::enable_if_t<detail::is_mdspan_like<M>::value>> {
  using value_type = std::remove_cv_t<typename M::element_type>;

  static std::array<index_t, 4> extents(const M& m) {
    return {static_cast<index_t>(m.extent(0)), static_cast<index_t>(m.extent(1)), static_cast<index_t>(m.extent(2)),
            static_cast<index_t>(m.extent(3))};
  }
  static const value_type* row(const M& m, index_t l, index_t h, index_t i) {
    return m.data_handle() + l * static_cast<index_t>(m.stride(0)) + h * static_cast<index_t>(m.stride(1)) +
           i * static_cast<index_t>(m.stride(2));
  }
  static index_t key_stride(const M& m) { return static_cast<index_t>(m.stride(3)); }
};

}  // namespace freepruner

#pragma once
/// \file adapters/mdspan.hpp
/// Opt-in: any rank-4 mdspan with a strided layout and a plain-pointer data
/// handle is an attention tensor, read in place: `std::mdspan` (C++23),
/// `std::experimental::mdspan` (Kokkos), `cuda::std::mdspan` (CCCL).
/// `m(l, h, i, j)` is layer, head, query, key. Include your mdspan first;
/// this header needs none.
///
/// The memory space comes from the accessor: an accessor with a nested
/// `memory_space` type says where its pointers point, any other one means
/// host memory. Wrap the mdspan's accessor to say so:
/// `freepruner::device_accessor<cuda::std::default_accessor<const float>>`
/// marks maps in device memory, which `select` then reads with the CUDA
/// backend (`<freepruner/cuda.cuh>`) and refuses to compile without it, as
/// for `attention_view<const T, device_memory>`; `host_accessor<A>` marks
/// host memory. The wrappers are accessor policies like `A` otherwise, and
/// only convert between the same memory space.

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "../traits.hpp"

namespace freepruner {

/// Accessor policy `A` (any mdspan's `default_accessor`, for one) whose
/// pointers address memory `Space`. `A` is held, not inherited, so that a
/// device mdspan does not convert to a host one through the base class.
template <class A, class Space>
class memory_space_accessor {
 public:
  using accessor_type = A;
  using memory_space = Space;
  using element_type = typename A::element_type;
  using reference = typename A::reference;
  using data_handle_type = typename A::data_handle_type;
  // Offsetting (submdspan) stays in the same memory space.
  using offset_policy = memory_space_accessor<typename A::offset_policy, Space>;

  memory_space_accessor() = default;

  /// Wraps an accessor: the caller vouches for where its pointers point.
  FREEPRUNER_HOST_DEVICE constexpr explicit memory_space_accessor(const A& a) : base_(a) {}

  /// From another accessor of the same space, implicit where `B` converts
  /// to `A` (non-const to const elements), as mdspan's own conversions.
  template <class B, std::enable_if_t<!std::is_same<A, B>::value && std::is_constructible<A, const B&>::value &&
                                          std::is_convertible<const B&, A>::value,
                                      int> = 0>
  FREEPRUNER_HOST_DEVICE constexpr memory_space_accessor(  // NOLINT(google-explicit-constructor)
      const memory_space_accessor<B, Space>& other)
      : base_(other.base()) {}
  template <class B, std::enable_if_t<!std::is_same<A, B>::value && std::is_constructible<A, const B&>::value &&
                                          !std::is_convertible<const B&, A>::value,
                                      int> = 0>
  FREEPRUNER_HOST_DEVICE constexpr explicit memory_space_accessor(const memory_space_accessor<B, Space>& other)
      : base_(other.base()) {}

  FREEPRUNER_HOST_DEVICE constexpr reference access(data_handle_type p, std::size_t i) const {
    return base_.access(p, i);
  }
  FREEPRUNER_HOST_DEVICE constexpr typename A::offset_policy::data_handle_type offset(data_handle_type p,
                                                                                      std::size_t i) const {
    return base_.offset(p, i);
  }

  /// The wrapped accessor.
  FREEPRUNER_HOST_DEVICE constexpr const A& base() const noexcept { return base_; }

 private:
  A base_{};
};

/// Accessor `A` over host memory (what a plain `A` means too).
template <class A>
using host_accessor = memory_space_accessor<A, host_memory>;
/// Accessor `A` over CUDA device memory.
template <class A>
using device_accessor = memory_space_accessor<A, device_memory>;

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
  // The accessor's memory_space, as traits.hpp reads a trait's: host_memory when it has none.
  using memory_space = typename detail::memory_space_of<typename M::accessor_type>::type;

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

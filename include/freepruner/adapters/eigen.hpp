#pragma once
/// \file adapters/eigen.hpp
/// Opt-in: rank-4 `Eigen::Tensor` and `Eigen::TensorMap` are attention
/// tensors, read in place. `t(l, h, i, j)` is layer, head, query, key in
/// either storage order (RowMajor or the default ColMajor).

#include <array>
#include <type_traits>

#include <unsupported/Eigen/CXX11/Tensor>

#include "../traits.hpp"

namespace freepruner {
namespace detail {

template <class Tensor, class Scalar, int Layout>
struct eigen_tensor_traits {
  using value_type = std::remove_cv_t<Scalar>;

  static std::array<index_t, 4> extents(const Tensor& t) {
    return {static_cast<index_t>(t.dimension(0)), static_cast<index_t>(t.dimension(1)),
            static_cast<index_t>(t.dimension(2)), static_cast<index_t>(t.dimension(3))};
  }
  static std::array<index_t, 4> strides(const Tensor& t) {
    const auto e = extents(t);
    if (Layout & Eigen::RowMajor) return {e[1] * e[2] * e[3], e[2] * e[3], e[3], 1};
    return {1, e[0], e[0] * e[1], e[0] * e[1] * e[2]};
  }
  static const value_type* row(const Tensor& t, index_t l, index_t h, index_t i) {
    const auto s = strides(t);
    return t.data() + l * s[0] + h * s[1] + i * s[2];
  }
  static index_t key_stride(const Tensor& t) { return strides(t)[3]; }
};

}  // namespace detail

template <class Scalar, int Options, class Index>
struct attention_traits<Eigen::Tensor<Scalar, 4, Options, Index>>
    : detail::eigen_tensor_traits<Eigen::Tensor<Scalar, 4, Options, Index>, Scalar, Options> {};

template <class Scalar, int Options, class Index, int MapOptions, template <class> class MakePointer>
struct attention_traits<Eigen::TensorMap<Eigen::Tensor<Scalar, 4, Options, Index>, MapOptions, MakePointer>>
    : detail::eigen_tensor_traits<Eigen::TensorMap<Eigen::Tensor<Scalar, 4, Options, Index>, MapOptions, MakePointer>,
                                  Scalar, Options> {};

}  // namespace freepruner

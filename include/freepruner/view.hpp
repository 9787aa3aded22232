#pragma once
/// \file view.hpp
/// Non-owning views over attention maps: `attention_view` for one input
/// `[layers][heads][queries][keys]` and `batched_attention_view` for
/// `[batch][layers][heads][queries][keys]`; `qk_tensor` and `qk_layer` for
/// one layer's queries and keys (qk.hpp selects on them). The memory space
/// is part of the type, so the backend is chosen at compile time.

#include <array>
#include <cmath>
#include <type_traits>

#include "config.hpp"

namespace freepruner {

/// Memory the CPU reads directly (the default).
struct host_memory {};
/// CUDA device memory; needs `<freepruner/cuda.cuh>` to be selected on.
struct device_memory {};

/// A non-owning, strided view of attention maps `A[l][h][i][j]`: layer,
/// head, query (row), key (column). Strides are in elements and may be any
/// value, so an engine's layout (ggml's included) is read in place. The view
/// checks nothing when built; `select` validates it.
template <class T, class Space = host_memory>
class attention_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;
  using extents_type = std::array<index_t, 4>;

  constexpr attention_view() noexcept = default;

  /// Contiguous row-major maps of `layers` x `heads` x `tokens` x `tokens`.
  constexpr attention_view(T* data, index_t layers, index_t heads, index_t tokens) noexcept
      : data_(data),
        extents_{layers, heads, tokens, tokens},
        strides_{heads * tokens * tokens, tokens * tokens, tokens, 1} {}

  /// Any layout: `extents` = {layers, heads, queries, keys}, `strides` in
  /// elements for each of those dimensions.
  constexpr attention_view(T* data, const extents_type& extents, const extents_type& strides) noexcept
      : data_(data), extents_(extents), strides_(strides) {}

  /// A view of non-const elements converts to a view of const ones.
  template <class U, std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value && !std::is_same<U, T>::value, int> = 0>
  constexpr attention_view(const attention_view<U, Space>& other) noexcept  // NOLINT(google-explicit-constructor)
      : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr const extents_type& extents() const noexcept { return extents_; }
  constexpr const extents_type& strides() const noexcept { return strides_; }
  constexpr index_t extent(int dim) const noexcept { return extents_[static_cast<std::size_t>(dim)]; }
  constexpr index_t stride(int dim) const noexcept { return strides_[static_cast<std::size_t>(dim)]; }

  constexpr index_t layers() const noexcept { return extents_[0]; }
  constexpr index_t heads() const noexcept { return extents_[1]; }
  /// Number of tokens N (the query extent; a valid view has as many keys).
  constexpr index_t tokens() const noexcept { return extents_[2]; }

  /// Pointer to `A[l][h][i][0]`; the row's elements are `stride(3)` apart.
  constexpr T* row(index_t l, index_t h, index_t i) const noexcept {
    return data_ + l * strides_[0] + h * strides_[1] + i * strides_[2];
  }
  constexpr T& operator()(index_t l, index_t h, index_t i, index_t j) const noexcept {
    return row(l, h, i)[j * strides_[3]];
  }

 private:
  T* data_ = nullptr;
  extents_type extents_{0, 0, 0, 0};
  extents_type strides_{0, 0, 0, 0};
};

/// A batch of same-shaped inputs `[batch][layers][heads][queries][keys]`
/// (images, AnyRes crops, video frames), each selected on its own.
template <class T, class Space = host_memory>
class batched_attention_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;
  using extents_type = std::array<index_t, 5>;
  using item_type = attention_view<T, Space>;

  constexpr batched_attention_view() noexcept = default;

  /// Contiguous row-major maps of `batch` x `layers` x `heads` x `tokens` x `tokens`.
  constexpr batched_attention_view(T* data, index_t batch, index_t layers, index_t heads, index_t tokens) noexcept
      : data_(data),
        extents_{batch, layers, heads, tokens, tokens},
        strides_{layers * heads * tokens * tokens, heads * tokens * tokens, tokens * tokens, tokens, 1} {}

  /// Any layout: `extents` = {batch, layers, heads, queries, keys} and their
  /// strides in elements.
  constexpr batched_attention_view(T* data, const extents_type& extents, const extents_type& strides) noexcept
      : data_(data), extents_(extents), strides_(strides) {}

  template <class U, std::enable_if_t<std::is_convertible<U (*)[], T (*)[]>::value && !std::is_same<U, T>::value, int> = 0>
  constexpr batched_attention_view(const batched_attention_view<U, Space>& other) noexcept  // NOLINT
      : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr const extents_type& extents() const noexcept { return extents_; }
  constexpr const extents_type& strides() const noexcept { return strides_; }
  constexpr index_t extent(int dim) const noexcept { return extents_[static_cast<std::size_t>(dim)]; }
  constexpr index_t stride(int dim) const noexcept { return strides_[static_cast<std::size_t>(dim)]; }
  constexpr index_t batch() const noexcept { return extents_[0]; }

  /// The view of item `b`.
  constexpr item_type operator[](index_t b) const noexcept {
    return item_type(data_ + b * strides_[0], {extents_[1], extents_[2], extents_[3], extents_[4]},
                     {strides_[1], strides_[2], strides_[3], strides_[4]});
  }

 private:
  T* data_ = nullptr;
  extents_type extents_{0, 0, 0, 0, 0};
  extents_type strides_{0, 0, 0, 0, 0};
};

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

}  // namespace freepruner

#pragma once
/// \file cuda.cuh
/// The CUDA backend, for translation units compiled by nvcc: after this
/// include, `freepruner::select` and `try_select` on an
/// `attention_view<const T, device_memory>` or a
/// `batched_attention_view<const T, device_memory>` (T = float, __half or
/// __nv_bfloat16) run on the GPU and return what the CPU backend returns.
///
/// This header brings the dispatch and the CUDA backend, not the CPU backend
/// (and so no Eigen): a translation unit that also selects on host maps
/// includes freepruner.hpp too.
///
/// That call allocates its workspace (stream-ordered), runs on the default
/// stream and waits for the answer. Engines that own their memory and
/// streams call the low-level `freepruner::cuda::select` instead
/// (backend/cuda/select.cuh here, backend/cuda/api.hpp from plain C++).

#if !defined(__CUDACC__)
#error "freepruner/cuda.cuh needs nvcc; plain C++ includes freepruner/backend/cuda/api.hpp and links instantiate.cu"
#endif

#include <cstdint>
#include <vector>

#include "backend/cuda/select.cuh"
#include "detail/messages.hpp"
#include "select.hpp"

namespace freepruner {
namespace detail {
namespace cuda {

/// One device allocation, freed on scope exit (stream-ordered where the
/// device supports it).
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() {
    if (data_ == nullptr) return;
    if (stream_ordered_)
      (void)cudaFreeAsync(data_, nullptr);
    else
      (void)cudaFree(data_);
  }

  status allocate(std::size_t bytes) {
    cudaError_t e = cudaMallocAsync(&data_, bytes, nullptr);
    stream_ordered_ = e == cudaSuccess;
    if (e == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      e = cudaMalloc(&data_, bytes);
    }
    if (e != cudaSuccess) {
      data_ = nullptr;
      return fail(errc::device_error, "allocating ", static_cast<unsigned long long>(bytes),
                  " bytes of device memory failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
    }
    return {};
  }
  unsigned char* data() const noexcept { return static_cast<unsigned char*>(data_); }

 private:
  void* data_ = nullptr;
  bool stream_ordered_ = false;
};

/// The convenience call: workspace and outputs in one allocation, the
/// low-level call on the default stream, the answer copied back.
template <class T>
status select_on_device(const batched_attention_view<const T, device_memory>& v, const budget& b, const options& o,
                        bool batched, std::vector<selection>& out) {
  out.clear();
  std::size_t workspace = 0;
  if (auto s = freepruner::cuda::select<T>(nullptr, workspace, v, b, o, nullptr, nullptr); !s) return s;
  if (v.batch() == 0) return {};
  index_t per_item = 0;
  if (auto s = freepruner::cuda::capacity(b, v.extent(3), o, per_item); !s) return s;
  const auto items = static_cast<std::size_t>(v.batch()), slots = items * static_cast<std::size_t>(per_item);
  std::size_t at = workspace;
  const std::size_t kept_at = carve(at, slots * sizeof(token_t));
  const std::size_t counts_at = carve(at, items * sizeof(index_t));
  const std::size_t pivotal_at = carve(at, slots);
  const std::size_t total = carve(at, 0);
  device_buffer buffer;
  if (auto s = buffer.allocate(total); !s) return s;
  auto* kept = reinterpret_cast<token_t*>(buffer.data() + kept_at);
  auto* counts = reinterpret_cast<index_t*>(buffer.data() + counts_at);
  auto* pivotal = buffer.data() + pivotal_at;
  // Slots past an item's count are never written: clear them, so the copy below reads no uninitialized memory.
  if (const cudaError_t e = cudaMemsetAsync(buffer.data() + kept_at, 0, total - kept_at); e != cudaSuccess)
    return cuda_failure("cudaMemsetAsync", e);
  if (auto s = freepruner::cuda::select<T>(buffer.data(), workspace, v, b, o, kept, counts, nullptr, pivotal); !s) return s;

  std::vector<token_t> host_kept(slots);
  std::vector<index_t> host_counts(items);
  std::vector<std::uint8_t> host_pivotal(slots);
  for (const cudaError_t e : {cudaMemcpyAsync(host_kept.data(), kept, slots * sizeof(token_t), cudaMemcpyDeviceToHost),
                              cudaMemcpyAsync(host_counts.data(), counts, items * sizeof(index_t), cudaMemcpyDeviceToHost),
                              cudaMemcpyAsync(host_pivotal.data(), pivotal, slots, cudaMemcpyDeviceToHost),
                              cudaStreamSynchronize(nullptr)})
    if (e != cudaSuccess) return cuda_failure("copying the selection back", e);

  out.resize(items);
  for (std::size_t item = 0; item < items; ++item) {
    const index_t count = host_counts[item];
    if (count < 0) {  // a NaN or infinity: find it
      out.clear();
      const status s = freepruner::cuda::diagnose<T>(buffer.data(), workspace, v, b, o, static_cast<index_t>(item));
      const status named = s ? fail(errc::non_finite, "attention maps: a NaN or an infinity was read") : s;
      return batched ? in_item(named, static_cast<index_t>(item)) : named;
    }
    selection& sel = out[item];
    const std::size_t first = item * static_cast<std::size_t>(per_item);
    for (std::size_t k = first; k < first + static_cast<std::size_t>(count); ++k) {
      sel.indices.push_back(host_kept[k]);
      (host_pivotal[k] != 0 ? sel.pivotal : sel.complementary).push_back(host_kept[k]);
    }
  }
  return {};
}

}  // namespace cuda

/// `select` and `try_select` on device maps (see select.hpp's dispatch).
template <>
struct backend<device_memory> {
  static constexpr bool available = true;

  template <class Tensor>
  static status select(const Tensor& t, const budget& b, const options& o, selection& out) {
    const auto v = device_view(t);
    using T = std::remove_cv_t<typename decltype(v)::element_type>;
    static_assert(freepruner::cuda::is_device_element_v<T>,
                  "freepruner: the CUDA backend reads float, __half and __nv_bfloat16 maps");
    const auto& e = v.extents();
    const auto& st = v.strides();
    const batched_attention_view<const T, device_memory> one(v.data(), {1, e[0], e[1], e[2], e[3]},
                                                             {0, st[0], st[1], st[2], st[3]});
    std::vector<selection> many;
    const status s = cuda::select_on_device<T>(one, b, o, false, many);
    if (s) out = std::move(many.front());
    return s;
  }

  template <class T>
  static status select(const batched_attention_view<T, device_memory>& v, const budget& b, const options& o,
                       std::vector<selection>& out) {
    using E = std::remove_cv_t<T>;
    static_assert(freepruner::cuda::is_device_element_v<E>,
                  "freepruner: the CUDA backend reads float, __half and __nv_bfloat16 maps");
    return cuda::select_on_device<E>(batched_attention_view<const E, device_memory>(v), b, o, true, out);
  }

 private:
  // The maps as a view: an attention_view as it is; an mdspan over device
  // memory (adapters/mdspan.hpp) through its extents and strides.
  template <class T>
  static attention_view<const T, device_memory> device_view(const attention_view<T, device_memory>& v) {
    return v;
  }
  template <class M>
  static auto device_view(const M& m) {
    constexpr bool strided = strided_layout<M>(0);
    static_assert(strided,
                  "freepruner: the CUDA backend reads attention_view<const T, device_memory> and mdspans over device "
                  "memory with a strided layout (layout_right, layout_left, layout_stride)");
    using T = tensor_value_t<M>;
    if constexpr (strided) {
      const auto x = [&m](int r) { return static_cast<index_t>(m.extent(static_cast<std::size_t>(r))); };
      const auto s = [&m](int r) { return static_cast<index_t>(m.stride(static_cast<std::size_t>(r))); };
      return attention_view<const T, device_memory>(m.data_handle(), {x(0), x(1), x(2), x(3)}, {s(0), s(1), s(2), s(3)});
    } else {
      return attention_view<const T, device_memory>();
    }
  }
  template <class M>
  static constexpr auto strided_layout(int) -> decltype(static_cast<bool>(M::is_always_strided())) {
    return M::is_always_strided();
  }
  template <class M>
  static constexpr bool strided_layout(long) {
    return false;
  }
};

}  // namespace detail
}  // namespace freepruner

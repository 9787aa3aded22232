#pragma once
// The CUDA backend's low-level calls on typed views (nvcc only): host
// validation, the three launches, and diagnose (the workspace layout is
// layout.hpp's). The type-erased calls of api.hpp dispatch here
// (instantiate.cu).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../../detail/validate.hpp"
#include "../../view.hpp"
#include "api.hpp"
#include "kernels.cuh"
#include "layout.hpp"

static_assert(std::is_same<cudaStream_t, freepruner::cuda::stream_t>::value,
              "freepruner: cuda::stream_t must be cudaStream_t (CUstream_st*)");

namespace freepruner {
namespace cuda {

/// Element types the CUDA backend reads.
template <class T>
inline constexpr bool is_device_element_v =
    std::is_same<T, float>::value || std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;

/// The dtype naming T in api.hpp's type-erased calls.
template <class T>
constexpr dtype dtype_of() noexcept {
  static_assert(is_device_element_v<T>, "freepruner: the CUDA backend reads float, __half and __nv_bfloat16 maps");
  return std::is_same<T, float>::value ? dtype::f32 : std::is_same<T, __half>::value ? dtype::f16 : dtype::bf16;
}

}  // namespace cuda

namespace detail {
namespace cuda {

inline std::string pointer_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

inline status cuda_failure(const char* call, cudaError_t e) {
  return fail(errc::device_error, call, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

/// Host memory where device memory is expected, or memory of another
/// device than `current`. (A driver lookup, no synchronization.)
inline status check_device_pointer(const void* ptr, const char* what, int current) {
  cudaPointerAttributes a{};
  if (const cudaError_t e = cudaPointerGetAttributes(&a, ptr); e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it
    return fail(errc::wrong_memory_space, what, " = ", pointer_text(ptr), " is not memory CUDA knows (",
                cudaGetErrorString(e), ")");
  }
  if (a.type == cudaMemoryTypeUnregistered || a.type == cudaMemoryTypeHost)
    return fail(errc::wrong_memory_space, what, " = ", pointer_text(ptr),
                a.type == cudaMemoryTypeHost ? " is pinned host memory" : " is host memory",
                ": the CUDA backend reads device memory (copy it to the device, or use a host_memory view)");
  if (a.type == cudaMemoryTypeDevice && a.device != current)
    return fail(errc::wrong_memory_space, what, " = ", pointer_text(ptr), " is on device ", a.device,
                ", the current device is ", current);
  return {};
}

/// Checks of a run (not of a size query): data, outputs, workspace.
template <class T>
status check_run(const layout& l, const batched_attention_view<const T, device_memory>& v, const void* workspace,
                 std::size_t workspace_bytes, const void* kept, const void* counts, const void* kept_pivotal) {
  if (v.data() == nullptr)
    return null_maps(0, l.p.layers, l.p.heads, l.p.tokens);
  if (reinterpret_cast<std::uintptr_t>(v.data()) % sizeof(T) != 0)
    return fail(errc::invalid_shape, "attention maps: data = ", pointer_text(v.data()), " is not aligned to its ",
                static_cast<int>(sizeof(T)), "-byte elements");
  if (kept == nullptr) return fail(errc::null_data, "d_kept is null (needs ", v.batch(), " x capacity tokens)");
  if (counts == nullptr) return fail(errc::null_data, "d_counts is null (needs ", v.batch(), " counts)");
  if (workspace_bytes < l.bytes)
    return fail(errc::invalid_workspace, "workspace_bytes = ", static_cast<unsigned long long>(workspace_bytes),
                " is less than the ", static_cast<unsigned long long>(l.bytes), " bytes the size query returns");
  int current = 0;
  if (const cudaError_t e = cudaGetDevice(&current); e != cudaSuccess) return cuda_failure("cudaGetDevice", e);
  if (auto s = check_device_pointer(v.data(), "attention maps: data", current); !s) return s;
  if (auto s = check_device_pointer(workspace, "d_workspace", current); !s) return s;
  if (auto s = check_device_pointer(kept, "d_kept", current); !s) return s;
  if (auto s = check_device_pointer(counts, "d_counts", current); !s) return s;
  if (kept_pivotal != nullptr)
    if (auto s = check_device_pointer(kept_pivotal, "d_pivotal", current); !s) return s;
  return {};
}

inline status last_launch(const char* kernel) {
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return cuda_failure(kernel, e);
  return {};
}

}  // namespace cuda
}  // namespace detail

namespace cuda {

/// The low-level call on a typed view (see the type-erased one in api.hpp
/// for the contract). Capacity per item: `capacity(b, tokens, o, ...)`.
template <class T>
status select(void* d_workspace, std::size_t& workspace_bytes, const batched_attention_view<const T, device_memory>& maps,
              const budget& b, const options& o, token_t* d_kept, index_t* d_counts, cudaStream_t stream = nullptr,
              std::uint8_t* d_pivotal = nullptr) {
  static_assert(is_device_element_v<T>, "freepruner: the CUDA backend reads float, __half and __nv_bfloat16 maps");
  namespace impl = detail::cuda;
  impl::layout l;
  if (auto s = impl::make_layout(maps.extents(), b, o, sizeof(T), l); !s) return s;
  if (d_workspace == nullptr) {
    workspace_bytes = l.bytes;
    return {};
  }
  if (maps.batch() == 0) return {};
  if (auto s = impl::check_run(l, maps, d_workspace, workspace_bytes, d_kept, d_counts, d_pivotal); !s) return s;
  index_t capacity = 0;
  if (auto s = cuda::capacity(b, l.p.tokens, o, capacity); !s) return s;

  const impl::problem q = impl::problem_of(l, maps, o);
  const impl::scratch w = impl::scratch_in(l, d_workspace);
  const auto blocks = [](index_t x) { return static_cast<unsigned>(x); };
  if (maps.stride(4) == 1)
    impl::degree_partials<T, true><<<blocks(l.degree_blocks), impl::block_threads, 0, stream>>>(q, l.t, w);
  else
    impl::degree_partials<T, false><<<blocks(l.degree_blocks), impl::block_threads, 0, stream>>>(q, l.t, w);
  if (auto s = impl::last_launch("degree_partials launch"); !s) return s;
  impl::reduce_degrees<><<<blocks(l.reduce_blocks), impl::block_threads, 0, stream>>>(q, l.t, w);
  if (auto s = impl::last_launch("reduce_degrees launch"); !s) return s;
  impl::complement_pass<T><<<blocks(l.complement_blocks), impl::block_threads, 0, stream>>>(q, l.t, w, d_kept, d_counts,
                                                                                       d_pivotal, capacity);
  return impl::last_launch("complement_pass launch");
}

/// After `select` wrote -1 to `d_counts[item]`: names the first NaN or
/// infinity read, as the CPU backend does. Synchronizes `stream`.
template <class T>
status diagnose(const void* d_workspace, std::size_t workspace_bytes, const batched_attention_view<const T, device_memory>& maps,
                const budget& b, const options& o, index_t item, cudaStream_t stream = nullptr) {
  namespace impl = detail::cuda;
  impl::layout l;
  if (auto s = impl::make_layout(maps.extents(), b, o, sizeof(T), l); !s) return s;
  if (item < 0 || item >= maps.batch())
    return detail::fail(errc::invalid_shape, "item = ", item, " is outside the batch 0..",
                        maps.batch() - 1);
  if (d_workspace == nullptr || workspace_bytes < l.bytes)
    return detail::fail(errc::invalid_workspace, "diagnose needs the workspace select used (",
                        static_cast<unsigned long long>(l.bytes), " bytes)");
  const impl::scratch w = impl::scratch_in(l, const_cast<void*>(d_workspace));
  int code = 0;
  if (const cudaError_t e = cudaMemcpyAsync(&code, w.status + item, sizeof code, cudaMemcpyDeviceToHost, stream);
      e != cudaSuccess)
    return impl::cuda_failure("cudaMemcpyAsync", e);
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess)
    return impl::cuda_failure("cudaStreamSynchronize", e);
  const auto layers = static_cast<int>(l.p.pivot_layers.size());
  if (code <= 0 || code > layers + 1) return {};  // nothing recorded for this item
  const bool pivot_stage = code <= layers;
  const auto layer = pivot_stage ? l.p.pivot_layers[static_cast<std::size_t>(code - 1)] : l.p.complementary_layer;
  const int mode = pivot_stage ? 0 : (o.complementary_from == direction::column ? 2 : 1);
  const impl::problem q = impl::problem_of(l, maps, o);
  unsigned long long found = ~0ull;
  if (const cudaError_t e = cudaMemsetAsync(w.located, 0xff, sizeof found, stream); e != cudaSuccess)
    return impl::cuda_failure("cudaMemsetAsync", e);
  impl::locate_non_finite<T><<<static_cast<unsigned>(l.p.heads * l.p.tokens), impl::block_threads, 0, stream>>>(
      q, item, static_cast<int>(layer), mode, w.is_pivot + item * l.p.tokens, w.located);
  if (auto s = impl::last_launch("locate_non_finite launch"); !s) return s;
  if (const cudaError_t e = cudaMemcpyAsync(&found, w.located, sizeof found, cudaMemcpyDeviceToHost, stream);
      e != cudaSuccess)
    return impl::cuda_failure("cudaMemcpyAsync", e);
  if (const cudaError_t e = cudaStreamSynchronize(stream); e != cudaSuccess)
    return impl::cuda_failure("cudaStreamSynchronize", e);
  if (found == ~0ull)
    return detail::heads_overflow(layer);
  const auto n = static_cast<unsigned long long>(l.p.tokens);
  const auto key = static_cast<index_t>(found % n), query = static_cast<index_t>(found / n % n),
             head = static_cast<index_t>(found / n / n);
  T element{};
  const T* at = maps[item].data() + layer * maps.stride(1) + head * maps.stride(2) + query * maps.stride(3) +
                key * maps.stride(4);
  if (const cudaError_t e = cudaMemcpy(&element, at, sizeof(T), cudaMemcpyDeviceToHost); e != cudaSuccess)
    return impl::cuda_failure("cudaMemcpy", e);
  return detail::non_finite_map(layer, head, query, key, static_cast<float>(element));
}

/// The typed view of type-erased maps.
template <class T>
batched_attention_view<const T, device_memory> view_of(const device_maps& m) noexcept {
  return batched_attention_view<const T, device_memory>(static_cast<const T*>(m.data), m.extents, m.strides);
}

}  // namespace cuda
}  // namespace freepruner

/// The explicit instantiations instantiate.cu defines. An engine's other
/// nvcc translation units may define FREEPRUNER_CUDA_EXTERN_TEMPLATES to
/// link against them instead of compiling the kernels again.
#define FREEPRUNER_CUDA_INSTANCES(prefix, T)                                                                       \
  prefix freepruner::status freepruner::cuda::select<T>(                                                           \
      void*, std::size_t&, const freepruner::batched_attention_view<const T, freepruner::device_memory>&,          \
      const freepruner::budget&, const freepruner::options&, freepruner::token_t*, freepruner::index_t*,           \
      cudaStream_t, std::uint8_t*);                                                                                \
  prefix freepruner::status freepruner::cuda::diagnose<T>(                                                         \
      const void*, std::size_t, const freepruner::batched_attention_view<const T, freepruner::device_memory>&,     \
      const freepruner::budget&, const freepruner::options&, freepruner::index_t, cudaStream_t);

#if defined(FREEPRUNER_CUDA_EXTERN_TEMPLATES)
FREEPRUNER_CUDA_INSTANCES(extern template, float)
FREEPRUNER_CUDA_INSTANCES(extern template, __half)
FREEPRUNER_CUDA_INSTANCES(extern template, __nv_bfloat16)
#endif

#pragma once
/// \file backend/cuda/api.hpp
/// The CUDA backend's low-level API, for engines that own their memory and
/// streams. Any C++17 compiler reads this header (g++ or clang++ alone, as
/// llama.cpp builds its multimodal code); the definitions are compiled once,
/// by nvcc, from `backend/cuda/instantiate.cu`, which the engine adds to its
/// CUDA sources. No CUDA header is needed here: `cudaStream_t` is
/// `CUstream_st*` in CUDA's own headers, so `stream_t` below is the same type
/// (instantiate.cu checks it).
///
/// The call is CUB-shaped: call `select` with a null workspace to learn its
/// size, then again to run. It allocates nothing, never synchronizes, and
/// throws nothing: bad input comes back as a `status` before any launch.
/// A NaN or an infinity in the maps is only known on the device: that item's
/// count is written as -1, and `diagnose` (which does synchronize) names the
/// value.

#include <array>
#include <cstddef>
#include <cstdint>

#include "../../config.hpp"
#include "../../detail/validate.hpp"
#include "../../error.hpp"
#include "../../options.hpp"

struct CUstream_st;

namespace freepruner {
namespace cuda {

/// A CUDA stream; the same type as `cudaStream_t`. Null: the default stream.
using stream_t = CUstream_st*;

/// Element type of the maps: float, __half or __nv_bfloat16, named without
/// CUDA's headers.
enum class dtype : int { f32 = 0, f16 = 1, bf16 = 2 };

/// Attention maps in device memory, `[batch][layers][heads][queries][keys]`,
/// any strides (in elements), as `batched_attention_view` describes them.
struct device_maps {
  const void* data = nullptr;
  dtype type = dtype::f32;
  std::array<index_t, 5> extents{0, 0, 0, 0, 0};  ///< batch, layers, heads, queries, keys
  std::array<index_t, 5> strides{0, 0, 0, 0, 0};  ///< in elements

  /// Contiguous row-major maps of batch x layers x heads x tokens x tokens.
  static constexpr device_maps contiguous(const void* data, dtype type, index_t batch, index_t layers, index_t heads,
                                          index_t tokens) noexcept {
    device_maps m;
    m.data = data;
    m.type = type;
    m.extents = {batch, layers, heads, tokens, tokens};
    m.strides = {layers * heads * tokens * tokens, heads * tokens * tokens, tokens * tokens, tokens, 1};
    return m;
  }
};

/// Slots per item in `d_kept`: the exact count for a fixed budget, the
/// candidate count M for `budget::adaptive()` (its count depends on the maps).
inline status capacity(const budget& b, index_t tokens, const options& o, index_t& per_item) {
  if (tokens < 1) return detail::below_one(errc::invalid_shape, tokens, "tokens");
  if (auto s = detail::check_tokens(o, tokens); !s) return s;
  const index_t candidates = tokens - o.prefix_tokens - o.suffix_tokens;
  detail::kept_count m;
  if (auto s = detail::budget_tokens(b, candidates, m); !s) return s;
  per_item = m.is_adaptive() ? candidates : m.count();
  return {};
}

/// SPEC steps 0-5 for every item of `maps`, on `stream`.
///
/// - `d_workspace` null: nothing runs; `workspace_bytes` receives the size
///   needed (it depends on the shape, budget and options only). Otherwise
///   `workspace_bytes` must be at least that size.
/// - `d_kept` (device, `[batch][capacity]`, see `capacity`): item b's kept
///   tokens, ascending, in its first `d_counts[b]` slots.
/// - `d_counts` (device, `[batch]`): tokens kept per item; -1 when the maps
///   of that item hold a NaN or an infinity where they are read (then
///   `diagnose` says where).
/// - `d_pivotal` (device, `[batch][capacity]`, optional): 1 where the kept
///   token is pivotal, 0 where it is complementary.
///
/// Host checks before any launch: everything `select` rejects on the CPU,
/// plus device pointers that are host memory or on another device
/// (`errc::wrong_memory_space`) and a short workspace (`errc::invalid_workspace`).
/// Launch failures return `errc::device_error`. No allocation, no
/// synchronization: the outputs are ready when `stream` reaches this point.
/// A workspace serves one call at a time (concurrent calls need their own).
status select(void* d_workspace, std::size_t& workspace_bytes, const device_maps& maps, const budget& b, const options& o,
              token_t* d_kept, index_t* d_counts, stream_t stream = nullptr, std::uint8_t* d_pivotal = nullptr);

/// After `select` left `d_counts[item] == -1`: the status naming the first
/// non-finite value read (layer, head, query, key), as the CPU backend
/// words it. Pass the same arguments and the untouched workspace.
/// Synchronizes `stream`.
status diagnose(const void* d_workspace, std::size_t workspace_bytes, const device_maps& maps, const budget& b,
                const options& o, index_t item, stream_t stream = nullptr);

}  // namespace cuda
}  // namespace freepruner

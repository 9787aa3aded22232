// C entry points to the CUDA backend for bench/gpu/torch_compare.py
// (ctypes): PyTorch's tensors and its current stream go in as pointers.

#include <cstdio>
#include <cstring>

#include <freepruner/backend/cuda/api.hpp>

#include "support.hpp"

namespace {

namespace fp = freepruner;

fp::budget budget_of(int kind, double value) {
  return kind == 1 ? fp::budget::count(static_cast<fp::index_t>(value))
         : kind == 2 ? fp::budget::ratio(value)
                     : fp::budget::adaptive();
}

fp::options options_of(long long prefix, long long suffix) {
  fp::options o;
  o.prefix_tokens = prefix;
  o.suffix_tokens = suffix;
  return o;
}

}  // namespace

extern "C" {

long long freepruner_cuda_workspace(int dtype, long long batch, long long layers, long long heads, long long tokens,
                                    long long prefix, long long suffix, int kind, double value, long long* capacity);
int freepruner_cuda_select(const void* maps, int dtype, long long batch, long long layers, long long heads,
                           long long tokens, long long prefix, long long suffix, int kind, double value, void* workspace,
                           unsigned long long workspace_bytes, int* kept, long long* counts, unsigned char* pivotal,
                           void* stream, char* error, int error_size);
int freepruner_gpu_fill(void* maps, int dtype, long long rows, int tokens, unsigned long long seed, void* stream);

/// Workspace bytes (or -1), and the slots per item of `kept` in *capacity.
long long freepruner_cuda_workspace(int dtype, long long batch, long long layers, long long heads, long long tokens,
                                    long long prefix, long long suffix, int kind, double value, long long* capacity) {
  const auto maps = fp::cuda::device_maps::contiguous(nullptr, static_cast<fp::cuda::dtype>(dtype), batch, layers, heads, tokens);
  std::size_t bytes = 0;
  fp::index_t slots = 0;
  const fp::budget b = budget_of(kind, value);
  const fp::options o = options_of(prefix, suffix);
  if (!fp::cuda::capacity(b, tokens, o, slots) || !fp::cuda::select(nullptr, bytes, maps, b, o, nullptr, nullptr)) return -1;
  *capacity = slots;
  return static_cast<long long>(bytes);
}

/// 0 on success; otherwise the error message in `error`.
int freepruner_cuda_select(const void* maps, int dtype, long long batch, long long layers, long long heads,
                           long long tokens, long long prefix, long long suffix, int kind, double value, void* workspace,
                           unsigned long long workspace_bytes, int* kept, long long* counts, unsigned char* pivotal,
                           void* stream, char* error, int error_size) {
  const auto m = fp::cuda::device_maps::contiguous(maps, static_cast<fp::cuda::dtype>(dtype), batch, layers, heads, tokens);
  std::size_t bytes = workspace_bytes;
  static_assert(sizeof(long long) == sizeof(fp::index_t), "counts are 64-bit");
  const fp::status s = fp::cuda::select(workspace, bytes, m, budget_of(kind, value), options_of(prefix, suffix), kept,
                                        reinterpret_cast<fp::index_t*>(counts), static_cast<fp::cuda::stream_t>(stream), pivotal);
  if (s) return 0;
  std::snprintf(error, static_cast<std::size_t>(error_size), "%s", s.message().c_str());
  return static_cast<int>(s.code());
}

/// The benchmark maps of bench/gpu (support.hpp), so every tool times the same maps.
int freepruner_gpu_fill(void* maps, int dtype, long long rows, int tokens, unsigned long long seed, void* stream) {
  return fpbench::fill_random_maps(maps, static_cast<fp::cuda::dtype>(dtype), rows, tokens, seed,
                                   static_cast<fp::cuda::stream_t>(stream))
             ? 0
             : 1;
}

}  // extern "C"

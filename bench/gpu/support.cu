// Random softmax maps on the device (see support.hpp).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "support.hpp"

namespace fpbench {
namespace {

__device__ inline float unit(std::uint64_t x) {  // splitmix64 -> [0, 1)
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
}

template <class T>
__device__ inline T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) { return x; }
template <>
__device__ inline __half from_float<__half>(float x) { return __float2half(x); }
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// One warp a row: logits 0.7 * (a sum of 4 uniforms, about normal) plus 3
// on about 5% of the keys of each (item, layer, head); softmax in fp32.
template <class T>
__global__ void fill(T* maps, std::int64_t rows, int n, std::uint64_t seed) {
  const std::int64_t row = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (row >= rows) return;
  const std::uint64_t block = static_cast<std::uint64_t>(row / n);
  auto logit = [&](int j) {
    const std::uint64_t key = seed * 0x100000001b3ull ^ (static_cast<std::uint64_t>(row) << 20) ^ static_cast<std::uint64_t>(j);
    const float noise = unit(key) + unit(key * 3 + 1) + unit(key * 5 + 2) + unit(key * 7 + 3) - 2.0f;
    const float sink = unit(seed ^ (block << 24) ^ static_cast<std::uint64_t>(j) ^ 0xabcdefull) < 0.05f ? 3.0f : 0.0f;
    return 0.7f * noise + sink;
  };
  float top = -1e30f, sum = 0.0f;
  for (int j = lane; j < n; j += 32) top = fmaxf(top, logit(j));
  for (int o = 16; o > 0; o >>= 1) top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, o));
  for (int j = lane; j < n; j += 32) sum += __expf(logit(j) - top);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  T* out = maps + row * n;
  for (int j = lane; j < n; j += 32) out[j] = from_float<T>(__expf(logit(j) - top) / sum);
}

template <class T>
bool launch(void* data, std::int64_t rows, int tokens, std::uint64_t seed, cudaStream_t stream) {
  const std::int64_t blocks = (rows * 32 + 255) / 256;
  fill<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(static_cast<T*>(data), rows, tokens, seed);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace

bool fill_random_maps(void* data, freepruner::cuda::dtype type, std::int64_t rows, int tokens, std::uint64_t seed,
                      freepruner::cuda::stream_t stream) {
  switch (type) {
    case freepruner::cuda::dtype::f32: return launch<float>(data, rows, tokens, seed, stream);
    case freepruner::cuda::dtype::f16: return launch<__half>(data, rows, tokens, seed, stream);
    case freepruner::cuda::dtype::bf16: return launch<__nv_bfloat16>(data, rows, tokens, seed, stream);
  }
  return false;
}

}  // namespace fpbench

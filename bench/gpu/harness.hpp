#pragma once
// What the GPU benchmarks time (table.cpp, bench_cuda.cpp): the CLIP-336
// cases (docs/cuda.md), the low-level select on a stream between CUDA events
// (launches included), and a device-to-device copy of the same run as the
// bandwidth yardstick. Plain C++: api.hpp and the CUDA runtime API only.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <freepruner/backend/cuda/api.hpp>

#include "support.hpp"

namespace fpbench {

namespace fp = freepruner;

inline void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

struct gpu_case {
  std::string name;
  int batch, layers, heads, tokens;
  fp::cuda::dtype type;
  std::size_t element_size() const { return type == fp::cuda::dtype::f32 ? 4 : 2; }
  std::size_t bytes() const {
    return static_cast<std::size_t>(batch) * layers * heads * tokens * tokens * element_size();
  }
};

/// CLIP-336 (577 tokens, 16 heads): 2 and 23 layers, fp16 and fp32, batch 1, 8 and 64.
inline std::vector<gpu_case> clip_cases() {
  std::vector<gpu_case> out;
  for (int layers : {2, 23})
    for (fp::cuda::dtype type : {fp::cuda::dtype::f16, fp::cuda::dtype::f32})
      for (int batch : {1, 8, 64})
        out.push_back({"clip336/L" + std::to_string(layers) + (type == fp::cuda::dtype::f16 ? "/f16" : "/f32") + "/B" +
                           std::to_string(batch),
                       batch, layers, 16, 577, type});
  return out;
}

/// The stream, events, the maps buffer shared by the cases, and a buffer
/// written before each cold-cache run to evict the maps from L2.
class bench_device {
 public:
  explicit bench_device(std::size_t map_bytes) {
    check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    check_cuda(cudaMalloc(&maps, map_bytes), "cudaMalloc (maps)");
    check_cuda(cudaMalloc(&flush, flush_bytes), "cudaMalloc (L2 flush)");
  }
  bench_device(const bench_device&) = delete;
  bench_device& operator=(const bench_device&) = delete;
  ~bench_device() {
    (void)cudaFree(maps);
    (void)cudaFree(flush);
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    (void)cudaStreamDestroy(stream);
  }

  /// Milliseconds of one call of f(stream) between two events; with `cold`,
  /// L2 is overwritten first (outside the timed span).
  template <class F>
  double time_ms(bool cold, F&& f) {
    if (cold) check_cuda(cudaMemsetAsync(flush, cold_pattern++ & 0xff, flush_bytes, stream), "cudaMemsetAsync");
    check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    f(stream);
    check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms;
  }

  /// The median of `reps` timed calls.
  template <class F>
  double median_ms(int reps, bool cold, F&& f) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) t.push_back(time_ms(cold, f));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  void* maps = nullptr;
  void* flush = nullptr;
  std::size_t flush_bytes = std::size_t{256} << 20;  // 5x an H100's L2
  int cold_pattern = 1;
};

/// The low-level select on maps of case c, with its workspace and outputs
/// allocated once (as an engine would).
class select_run {
 public:
  select_run(const gpu_case& c, const void* maps, const fp::budget& b, const fp::options& o)
      : maps_(fp::cuda::device_maps::contiguous(maps, c.type, c.batch, c.layers, c.heads, c.tokens)), budget_(b), options_(o) {
    fp::index_t capacity = 0;
    require(fp::cuda::capacity(b, c.tokens, o, capacity));
    require(fp::cuda::select(nullptr, bytes_, maps_, b, o, nullptr, nullptr));
    check_cuda(cudaMalloc(&workspace_, bytes_), "cudaMalloc (workspace)");
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&kept_), static_cast<std::size_t>(c.batch * capacity) * sizeof(fp::token_t)), "cudaMalloc (kept)");
    check_cuda(cudaMalloc(reinterpret_cast<void**>(&counts_), static_cast<std::size_t>(c.batch) * sizeof(fp::index_t)), "cudaMalloc (counts)");
  }
  select_run(const select_run&) = delete;
  select_run& operator=(const select_run&) = delete;
  ~select_run() {
    (void)cudaFree(workspace_);
    (void)cudaFree(kept_);
    (void)cudaFree(counts_);
  }
  void operator()(cudaStream_t stream) {
    require(fp::cuda::select(workspace_, bytes_, maps_, budget_, options_, kept_, counts_, stream));
  }
  std::size_t workspace_bytes() const { return bytes_; }

 private:
  static void require(const fp::status& s) {
    if (s) return;
    std::fprintf(stderr, "%s\n", s.message().c_str());
    std::exit(1);
  }
  fp::cuda::device_maps maps_;
  fp::budget budget_;
  fp::options options_;
  std::size_t bytes_ = 0;
  void* workspace_ = nullptr;
  fp::token_t* kept_ = nullptr;
  fp::index_t* counts_ = nullptr;
};

/// The maps every benchmark case uses: LLaVA's CLS first, keep half the patches.
inline fp::options clip_options() {
  fp::options o;
  o.prefix_tokens = 1;
  return o;
}
inline fp::budget clip_budget() { return fp::budget::ratio(0.5); }

/// Device-to-device copy bandwidth in bytes per second, counting the bytes
/// read and the bytes written (as CUDA's bandwidthTest does).
inline double copy_bandwidth(bench_device& d, std::size_t bytes, int reps) {
  void* a = nullptr;
  void* b = nullptr;
  check_cuda(cudaMalloc(&a, bytes), "cudaMalloc (copy)");
  check_cuda(cudaMalloc(&b, bytes), "cudaMalloc (copy)");
  check_cuda(cudaMemsetAsync(a, 1, bytes, d.stream), "cudaMemsetAsync");
  auto copy = [&](cudaStream_t s) { check_cuda(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), "copy"); };
  d.time_ms(false, copy);  // warm-up
  const double ms = d.median_ms(reps, false, copy);
  (void)cudaFree(a);
  (void)cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

/// Fills the maps of case c (a fixed seed: every tool sees the same maps).
inline void fill_case(bench_device& d, const gpu_case& c) {
  const std::int64_t rows = static_cast<std::int64_t>(c.batch) * c.layers * c.heads * c.tokens;
  if (!fill_random_maps(d.maps, c.type, rows, c.tokens, 7, d.stream)) check_cuda(cudaGetLastError(), "fill_random_maps");
  check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
}

/// The largest maps among the cases that fit in half the free memory.
inline std::size_t largest_fitting(const std::vector<gpu_case>& cases) {
  std::size_t free_bytes = 0, total = 0;
  check_cuda(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
  std::size_t most = 0;
  for (const auto& c : cases)
    if (c.bytes() <= free_bytes / 2 + free_bytes / 4) most = std::max(most, c.bytes());
  return most;
}

}  // namespace fpbench

// Google Benchmark microbenchmarks of the CUDA backend: the low-level select
// on the CLIP-336 cases, manual time from CUDA events (launches included,
// L2 cold), next to a device-to-device copy in the same binary. Counters:
// bytes_per_second (maps read), vs_copy (that rate over the copy's bytes
// read + written per second), s_per_image.

#include <cstdio>
#include <string>

#include <benchmark/benchmark.h>

#include "harness.hpp"

namespace {

fpbench::bench_device* device = nullptr;
double copy_rate = 0;  // bytes read + written per second

void bm_select(benchmark::State& state, const fpbench::gpu_case& c) {
  fpbench::fill_case(*device, c);
  fpbench::select_run run(c, device->maps, fpbench::clip_budget(), fpbench::clip_options());
  device->time_ms(true, run);
  for (auto _ : state) state.SetIterationTime(device->time_ms(true, run) * 1e-3);
  const auto iterations = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(c.bytes()));
  state.counters["vs_copy"] = benchmark::Counter(iterations * static_cast<double>(c.bytes()) / copy_rate,
                                                 benchmark::Counter::kIsRate);
  state.counters["s_per_image"] =
      benchmark::Counter(iterations * c.batch, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void bm_copy(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  void* a = nullptr;
  void* b = nullptr;
  fpbench::check_cuda(cudaMalloc(&a, bytes), "cudaMalloc");
  fpbench::check_cuda(cudaMalloc(&b, bytes), "cudaMalloc");
  auto copy = [&](cudaStream_t s) { fpbench::check_cuda(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s), "copy"); };
  device->time_ms(false, copy);
  for (auto _ : state) state.SetIterationTime(device->time_ms(false, copy) * 1e-3);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 2 * static_cast<std::int64_t>(bytes));
  (void)cudaFree(a);
  (void)cudaFree(b);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  const auto cases = fpbench::clip_cases();
  const std::size_t room = fpbench::largest_fitting(cases);
  fpbench::bench_device d(room);
  device = &d;
  copy_rate = fpbench::copy_bandwidth(d, std::size_t{1} << 30, 20);
  benchmark::RegisterBenchmark("copy/d2d", bm_copy)->Arg(std::int64_t{1} << 30)->UseManualTime()->Unit(benchmark::kMillisecond);
  for (const auto& c : cases)
    if (c.bytes() <= room)
      benchmark::RegisterBenchmark(("select/" + c.name).c_str(), bm_select, c)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

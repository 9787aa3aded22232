// The CUDA backend's throughput table, without Google Benchmark: for each
// CLIP-336 case, the time of one low-level select (launches included, L2
// cold and warm), the time per image, the read bandwidth, and its ratio to
// a device-to-device copy measured in the same run. Also writes a CSV that
// bench/gpu/torch_compare.py joins with the PyTorch timings.
//
//   freepruner_gpu_table [--reps N] [--csv FILE]

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "harness.hpp"

int main(int argc, char** argv) {
  int reps = 30;
  std::string csv = "gpu_table.csv";
  for (int a = 1; a + 1 < argc; a += 2) {
    if (std::strcmp(argv[a], "--reps") == 0) reps = std::atoi(argv[a + 1]);
    if (std::strcmp(argv[a], "--csv") == 0) csv = argv[a + 1];
  }
  int device = 0;
  cudaDeviceProp prop{};
  fpbench::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  fpbench::check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  const auto cases = fpbench::clip_cases();
  const std::size_t room = fpbench::largest_fitting(cases);
  fpbench::bench_device d(room);
  const double copy = fpbench::copy_bandwidth(d, std::size_t{1} << 30, reps);
  std::printf("%s, %d SMs, L2 %d MB; device-to-device copy of 1 GiB: %.0f GB/s (bytes read + written)\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, copy / 1e9);
  std::printf("budget ratio(0.5) with the CLS token as prefix; median of %d calls, each between CUDA events\n", reps);
  std::printf("%-22s %9s %11s %11s %12s %10s %8s %11s\n", "case", "MB", "cold (ms)", "µs / image", "read GB/s",
              "vs copy", "", "warm (ms)");
  std::ofstream out(csv);
  out << "case,batch,layers,dtype,bytes,cold_ms,warm_ms,read_gbps,copy_gbps,ratio\n";
  bool ok = true;
  for (const auto& c : cases) {
    if (c.bytes() > room) {
      std::printf("%-22s does not fit in device memory: skipped\n", c.name.c_str());
      continue;
    }
    fpbench::fill_case(d, c);
    fpbench::select_run run(c, d.maps, fpbench::clip_budget(), fpbench::clip_options());
    for (int w = 0; w < 3; ++w) d.time_ms(true, run);
    const double cold = d.median_ms(reps, true, run), warm = d.median_ms(reps, false, run);
    const double read = static_cast<double>(c.bytes()) / (cold * 1e-3), ratio = read / copy;
    const double per_image_us = cold * 1e3 / c.batch;
    std::string mark;
    if (c.batch == 64 && ratio < 0.85) mark = "< 0.85";
    if (c.batch == 1 && c.layers == 2 && c.type == freepruner::cuda::dtype::f16 && cold * 1e3 > 20) mark = "> 20 µs";
    ok &= mark.empty();
    std::printf("%-22s %9.1f %11.3f %11.1f %12.0f %10.2f %8s %11.3f\n", c.name.c_str(), c.bytes() / 1e6, cold,
                per_image_us, read / 1e9, ratio, mark.c_str(), warm);
    out << c.name << ',' << c.batch << ',' << c.layers << ',' << (c.type == freepruner::cuda::dtype::f16 ? "f16" : "f32")
        << ',' << c.bytes() << ',' << cold << ',' << warm << ',' << read / 1e9 << ',' << copy / 1e9 << ',' << ratio << '\n';
  }
  std::printf("targets (batch 64: >= 0.85 of the copy; 1 image, 2 fp16 layers: <= 20 µs, L2 cold): %s\n",
              ok ? "met" : "NOT met (marked)");
  return 0;
}

#pragma once
// Timing shared by the CPU benchmarks: the best of a few runs, since the
// machines are noisy and ratios are taken within one run.

#include <algorithm>
#include <chrono>

namespace fp_bench {

using clock_type = std::chrono::steady_clock;

template <class F>
double min_seconds(F&& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return best;
}

}  // namespace fp_bench

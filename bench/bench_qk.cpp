// The Q/K path (qk.hpp) on encoder shapes, each timed against its floor
// measured in the same run: the same Eigen GEMMs (the blocks of query rows
// the pass runs, times all keys, per head) plus a vectorized exp of the
// N x N logits per head. x_floor = pass time / floor time (minimums over
// iterations); the rest of the pass is the row max and sum, the column sums
// in double, the conversions and the checks.
//
// Memory: work_bytes is the peak of the bytes allocated during the call
// (malloc counted, glibc only; Eigen keeps GEMM packing buffers under
// 128 KiB on the stack, not counted); maps_bytes is what the materialized
// path needs for the same layers, L x H x N x N x 4 bytes of float maps.
//
// Counters: layer_ms / select_ms, floor_ms, x_floor, gemm_ms, exp_ms,
// GFLOP/s (GEMM FLOPs over the pass time), work_bytes, maps_bytes,
// maps_per_work (maps_bytes / work_bytes), kept.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <freepruner/freepruner.hpp>

#include "timing.hpp"
#include <freepruner/qk.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#define FP_BENCH_COUNT_MALLOC 1
#else
#define FP_BENCH_COUNT_MALLOC 0
#endif

namespace {

using freepruner::index_t;
using fp_bench::clock_type;
using fp_bench::min_seconds;

// Peak bytes allocated while `counting` is set (single-threaded use).
std::atomic<bool> counting{false};
long long live_bytes = 0, peak_bytes = 0;

}  // namespace

#if FP_BENCH_COUNT_MALLOC
// glibc's allocator under the usual names; counting wraps them.
extern "C" void* __libc_malloc(std::size_t);
extern "C" void* __libc_calloc(std::size_t, std::size_t);
extern "C" void* __libc_realloc(void*, std::size_t);
extern "C" void __libc_free(void*);

namespace {
void count_alloc(void* p) {
  if (p != nullptr && counting.load(std::memory_order_relaxed)) {
    live_bytes += static_cast<long long>(malloc_usable_size(p));
    peak_bytes = std::max(peak_bytes, live_bytes);
  }
}
void count_free(void* p) {
  if (p != nullptr && counting.load(std::memory_order_relaxed)) live_bytes -= static_cast<long long>(malloc_usable_size(p));
}
}  // namespace

extern "C" void* malloc(std::size_t n) {
  void* p = __libc_malloc(n);
  count_alloc(p);
  return p;
}
extern "C" void* calloc(std::size_t n, std::size_t size) {
  void* p = __libc_calloc(n, size);
  count_alloc(p);
  return p;
}
extern "C" void* realloc(void* old, std::size_t n) {
  count_free(old);
  void* p = __libc_realloc(old, n);
  count_alloc(p);
  return p;
}
extern "C" void free(void* p) {
  count_free(p);
  __libc_free(p);
}
#endif

namespace {

// Peak bytes allocated by f() (-1 where allocations are not counted).
template <class F>
long long peak_allocated(F&& f) {
  live_bytes = peak_bytes = 0;
  counting = true;
  f();
  counting = false;
  return FP_BENCH_COUNT_MALLOC ? peak_bytes : -1;
}

struct shape {
  index_t layers, heads, tokens, dim, prefix;
};

// Q and K of `layers` layers in ggml's layout ([N][H][d] per layer, as
// llama.cpp's Qcur/Kcur), with a few attention sinks so that the adaptive
// pivots and complements are of realistic size.
template <class E>
struct qk_inputs {
  std::vector<E> q, k;
  std::vector<freepruner::qk_layer<const E>> layers;

  explicit qk_inputs(const shape& s) {
    const auto per_layer = static_cast<std::size_t>(s.heads * s.tokens * s.dim);
    q.resize(per_layer * static_cast<std::size_t>(s.layers));
    k.resize(q.size());
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (index_t l = 0; l < s.layers; ++l)
      for (index_t h = 0; h < s.heads; ++h) {
        std::vector<float> u(static_cast<std::size_t>(s.dim));
        float norm = 0;
        for (auto& c : u) {
          c = normal(rng);
          norm += c * c;
        }
        // With scale 1/sqrt(d), u adds `sink` to a sink key's logits; the
        // rest of each logit is about N(0, 1).
        for (auto& c : u) c *= std::pow(static_cast<float>(s.dim), 0.25f) / std::sqrt(norm);
        for (index_t n = 0; n < s.tokens; ++n) {
          const float sink = unit(rng) < 0.05f ? 3.0f : 0.0f;
          for (index_t t = 0; t < s.dim; ++t) {
            const std::size_t at = per_layer * static_cast<std::size_t>(l) +
                                   static_cast<std::size_t>((n * s.heads + h) * s.dim + t);
            q[at] = static_cast<E>(normal(rng) + u[static_cast<std::size_t>(t)]);
            k[at] = static_cast<E>(normal(rng) + sink * u[static_cast<std::size_t>(t)]);
          }
        }
      }
    for (index_t l = 0; l < s.layers; ++l) {
      const auto off = per_layer * static_cast<std::size_t>(l);
      layers.push_back(freepruner::make_qk_layer(
          freepruner::qk_tensor<const E>::tokens_major(q.data() + off, s.heads, s.tokens, s.dim),
          freepruner::qk_tensor<const E>::tokens_major(k.data() + off, s.heads, s.tokens, s.dim)));
    }
  }
};

// The floor of one layer: per head, the pass's GEMMs (its blocks of query
// rows, in float, in place from the [N][H][d] layout) and a vectorized exp
// of each logit (N x N per head); returns {gemm seconds, exp seconds}, the
// best of `reps`. The benchmarks measure it once per iteration, between
// the timed calls, so both see the machine in the same state.
struct floor_time {
  double gemm = 0, exp = 0;
  double total() const { return gemm + exp; }
  friend bool operator<(const floor_time& a, const floor_time& b) { return a.total() < b.total(); }
};

floor_time measure_floor(const shape& s, const float* q, const float* k, int reps) {
  using namespace freepruner::detail::cpu::qk;
  const index_t n = s.tokens, d = s.dim, ld = (n + 15) & ~index_t{15};
  const index_t rows = block_rows(n, ld, sizeof(float));
  std::vector<float> tile(static_cast<std::size_t>(rows * ld + 16));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  auto gemm_block = [&](index_t h, index_t first, index_t count) {
    const const_rows<float> Q(q + first * s.heads * d + h * d, padded_rows(count), d, Eigen::OuterStride<>(s.heads * d));
    const const_rows<float> K(k + h * d, n, d, Eigen::OuterStride<>(s.heads * d));
    tile_rows<float> S(tile.data(), padded_rows(count), n, Eigen::OuterStride<>(ld));
    S.noalias() = (scale * Q) * K.transpose();
  };
  auto exp_block = [&](index_t count) {
    for (index_t r = 0; r < count; ++r) {
      Eigen::Map<Eigen::ArrayXf> x(tile.data() + r * ld, n);
      x = x.exp();
    }
  };
  floor_time best{1e30, 1e30};
  for (int r = 0; r < reps; ++r) {
    floor_time t;
    for (index_t h = 0; h < s.heads; ++h)
      for (index_t first = 0; first < n; first += rows) {
        // The last block's padded rows would read past the end: start it earlier.
        const index_t count = std::min(rows, n - first), start = std::max<index_t>(0, std::min(first, n - padded_rows(count)));
        const auto t0 = clock_type::now();
        gemm_block(h, start, count);
        const auto t1 = clock_type::now();
        exp_block(count);
        const auto t2 = clock_type::now();
        benchmark::DoNotOptimize(tile.data());
        t.gemm += std::chrono::duration<double>(t1 - t0).count();
        t.exp += std::chrono::duration<double>(t2 - t1).count();
      }
    if (t.total() < best.total()) best = t;
  }
  return best;
}

// One layer's contribution degrees (SPEC steps 0-1), the pass every read layer costs.
template <class E>
void bm_layer(benchmark::State& state, shape s) {
  const qk_inputs<E> in(s);
  const qk_inputs<float> in_f(s);
  std::vector<double> r(static_cast<std::size_t>(s.tokens));
  const long long work = peak_allocated([&] {
    freepruner::detail::check(freepruner::detail::cpu::qk::layer_degrees(in.layers[0], "layers[0]", r.data()));
  });
  double best = 1e30;
  floor_time floor{1e30, 1e30};
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    freepruner::detail::check(freepruner::detail::cpu::qk::layer_degrees(in.layers[0], "layers[0]", r.data()));
    benchmark::DoNotOptimize(r.data());
    const double t = std::chrono::duration<double>(clock_type::now() - t0).count();
    state.SetIterationTime(t);
    best = std::min(best, t);
    floor = std::min(floor, measure_floor(s, in_f.q.data(), in_f.k.data(), 1));  // interleaved: the same noise
  }
  const double flops = 2.0 * static_cast<double>(s.heads * s.tokens * s.tokens * s.dim);
  const double maps = 4.0 * static_cast<double>(s.heads * s.tokens * s.tokens);
  state.counters["layer_ms"] = best * 1e3;
  state.counters["floor_ms"] = floor.total() * 1e3;
  state.counters["x_floor"] = best / floor.total();
  state.counters["gemm_ms"] = floor.gemm * 1e3;
  state.counters["exp_ms"] = floor.exp * 1e3;
  state.counters["GFLOP/s"] = flops / best / 1e9;
  state.counters["work_bytes"] = static_cast<double>(work);
  state.counters["maps_bytes"] = maps;
  state.counters["maps_per_work"] = maps / static_cast<double>(work);
}

// The whole selection on L layers (ratio 0.5 or adaptive; row or column).
template <class E>
void bm_select(benchmark::State& state, shape s, bool adaptive, freepruner::direction dir) {
  const qk_inputs<E> in(s);
  const qk_inputs<float> in_f(s);
  freepruner::options o;
  o.prefix_tokens = s.prefix;
  o.complementary_from = dir;
  const auto b = adaptive ? freepruner::budget::adaptive() : freepruner::budget::ratio(0.5);
  std::size_t kept = 0, pivots = 0;
  const long long work = peak_allocated([&] { kept = freepruner::select(in.layers, b, o).size(); });
  double best = 1e30;
  floor_time floor{1e30, 1e30};
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    const auto sel = freepruner::select(in.layers, b, o);
    const double t = std::chrono::duration<double>(clock_type::now() - t0).count();
    kept = sel.size();
    pivots = sel.pivotal.size();
    state.SetIterationTime(t);
    best = std::min(best, t);
    floor = std::min(floor, measure_floor(s, in_f.q.data(), in_f.k.data(), 1));  // interleaved: the same noise
  }
  // Every layer is read once; the column direction reads the last one again.
  const double passes = static_cast<double>(s.layers) + (dir == freepruner::direction::column ? 1.0 : 0.0);
  const double maps = 4.0 * static_cast<double>(s.layers * s.heads * s.tokens * s.tokens);
  state.counters["select_ms"] = best * 1e3;
  state.counters["floor_ms"] = passes * floor.total() * 1e3;
  state.counters["x_floor"] = best / (passes * floor.total());
  state.counters["work_bytes"] = static_cast<double>(work);
  state.counters["maps_bytes"] = maps;
  state.counters["maps_per_work"] = maps / static_cast<double>(work);
  state.counters["kept"] = static_cast<double>(kept);
  state.counters["pivotal"] = static_cast<double>(pivots);
}

void register_all() {
  struct named {
    const char* name;
    shape s;
  };
  const named shapes[] = {
      {"clip336", {2, 16, 577, 64, 1}},  // CLIP ViT-L/14-336: CLS + 24 x 24 patches
      {"n1024", {2, 16, 1024, 64, 0}},
      {"n2048", {2, 16, 2048, 64, 0}},
  };
  for (const auto& n : shapes) {
    const int iterations = n.s.tokens > 1024 ? 3 : 8;
    benchmark::RegisterBenchmark((std::string("qk/layer/f32/") + n.name).c_str(),
                                 [n](benchmark::State& st) { bm_layer<float>(st, n.s); })
        ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(iterations);
    benchmark::RegisterBenchmark((std::string("qk/select/f32/") + n.name + "/L2/ratio/row").c_str(),
                                 [n](benchmark::State& st) { bm_select<float>(st, n.s, false, freepruner::direction::row); })
        ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(iterations);
  }
  const shape clip = shapes[0].s;
  benchmark::RegisterBenchmark("qk/select/f32/clip336/L2/adaptive/row",
                               [clip](benchmark::State& st) { bm_select<float>(st, clip, true, freepruner::direction::row); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(8);
  benchmark::RegisterBenchmark(
      "qk/select/f32/clip336/L2/ratio/column",
      [clip](benchmark::State& st) { bm_select<float>(st, clip, false, freepruner::direction::column); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(8);
  benchmark::RegisterBenchmark("qk/layer/f16/clip336", [clip](benchmark::State& st) { bm_layer<Eigen::half>(st, clip); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(8);
  benchmark::RegisterBenchmark("qk/layer/bf16/clip336",
                               [clip](benchmark::State& st) { bm_layer<Eigen::bfloat16>(st, clip); })
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(8);
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

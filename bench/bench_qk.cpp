// The Q/K path (qk.hpp) on encoder shapes, each timed against its true
// floor measured in the same run on the same core: the layer's GEMM FLOPs
// (2 H N^2 d) at the peak of a plain multiply-add loop (the better of FMA
// and a multiply then an add, registers only), plus its H N^2 exponentials
// at the rate of a vectorized exp over an L1-resident buffer, both at the
// SIMD level the pass runs (simd.hpp: the cases named /sse2, /avx2, /avx512
// cap it; unnamed ones run the best the CPU has). x_floor = pass time /
// floor time (minimums over iterations, the floor measured between them).
//
// Memory: work_bytes is the peak of the bytes allocated during the call
// (malloc counted, glibc only); maps_bytes is what the materialized path
// needs for the same layers, L x H x N x N x 4 bytes of float maps.
//
// Counters: layer_ms / select_ms, floor_ms, x_floor, peak_GFLOP/s (the
// multiply-add loop), exp_G/s (the exp loop), GFLOP/s (GEMM FLOPs over the
// pass time), work_bytes, maps_bytes, maps_per_work, kept.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
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

namespace cpu = freepruner::detail::cpu;

// The true floor's two rates at one SIMD level. Each loop runs long enough
// for the core to reach full clock, and its result is kept.
struct rates {
  double flops = 0;  // multiply-add FLOP/s
  double exps = 0;   // exponentials/s
};

// 12 independent chains a = a * x + y in registers: one FMA per step, or a
// multiply and an add (the kernels' operations).
#if FREEPRUNER_X86_SIMD
double sink = 0;

double mul_add_sse2(long steps) {
  const __m128 x = _mm_set1_ps(0.999f), y = _mm_set1_ps(0.001f);
  __m128 a0 = _mm_set1_ps(0.001f), a1 = _mm_set1_ps(0.002f), a2 = _mm_set1_ps(0.003f);
  __m128 a3 = _mm_set1_ps(0.004f), a4 = _mm_set1_ps(0.005f), a5 = _mm_set1_ps(0.006f);
  __m128 a6 = _mm_set1_ps(0.007f), a7 = _mm_set1_ps(0.008f), a8 = _mm_set1_ps(0.009f);
  __m128 a9 = _mm_set1_ps(0.010f), a10 = _mm_set1_ps(0.011f), a11 = _mm_set1_ps(0.012f);
  for (long i = 0; i < steps; ++i) {
    a0 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a0, x)), y);
    a1 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a1, x)), y);
    a2 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a2, x)), y);
    a3 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a3, x)), y);
    a4 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a4, x)), y);
    a5 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a5, x)), y);
    a6 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a6, x)), y);
    a7 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a7, x)), y);
    a8 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a8, x)), y);
    a9 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a9, x)), y);
    a10 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a10, x)), y);
    a11 = _mm_add_ps(cpu::qk::keep(_mm_mul_ps(a11, x)), y);
  }
  __m128 s = a0;
  s = _mm_add_ps(s, a1);
  s = _mm_add_ps(s, a2);
  s = _mm_add_ps(s, a3);
  s = _mm_add_ps(s, a4);
  s = _mm_add_ps(s, a5);
  s = _mm_add_ps(s, a6);
  s = _mm_add_ps(s, a7);
  s = _mm_add_ps(s, a8);
  s = _mm_add_ps(s, a9);
  s = _mm_add_ps(s, a10);
  s = _mm_add_ps(s, a11);
  float out[16];
  std::memcpy(out, &s, sizeof(float));
  return static_cast<double>(out[0]);
}
[[gnu::target("avx2")]] double mul_add_avx2(long steps) {
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
  __m256 a0 = _mm256_set1_ps(0.001f), a1 = _mm256_set1_ps(0.002f), a2 = _mm256_set1_ps(0.003f);
  __m256 a3 = _mm256_set1_ps(0.004f), a4 = _mm256_set1_ps(0.005f), a5 = _mm256_set1_ps(0.006f);
  __m256 a6 = _mm256_set1_ps(0.007f), a7 = _mm256_set1_ps(0.008f), a8 = _mm256_set1_ps(0.009f);
  __m256 a9 = _mm256_set1_ps(0.010f), a10 = _mm256_set1_ps(0.011f), a11 = _mm256_set1_ps(0.012f);
  for (long i = 0; i < steps; ++i) {
    a0 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a0, x)), y);
    a1 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a1, x)), y);
    a2 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a2, x)), y);
    a3 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a3, x)), y);
    a4 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a4, x)), y);
    a5 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a5, x)), y);
    a6 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a6, x)), y);
    a7 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a7, x)), y);
    a8 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a8, x)), y);
    a9 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a9, x)), y);
    a10 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a10, x)), y);
    a11 = _mm256_add_ps(cpu::qk::keep(_mm256_mul_ps(a11, x)), y);
  }
  __m256 s = a0;
  s = _mm256_add_ps(s, a1);
  s = _mm256_add_ps(s, a2);
  s = _mm256_add_ps(s, a3);
  s = _mm256_add_ps(s, a4);
  s = _mm256_add_ps(s, a5);
  s = _mm256_add_ps(s, a6);
  s = _mm256_add_ps(s, a7);
  s = _mm256_add_ps(s, a8);
  s = _mm256_add_ps(s, a9);
  s = _mm256_add_ps(s, a10);
  s = _mm256_add_ps(s, a11);
  float out[16];
  std::memcpy(out, &s, sizeof(float));
  return static_cast<double>(out[0]);
}
[[gnu::target("avx2,fma")]] double fma_avx2(long steps) {
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
  __m256 a0 = _mm256_set1_ps(0.001f), a1 = _mm256_set1_ps(0.002f), a2 = _mm256_set1_ps(0.003f);
  __m256 a3 = _mm256_set1_ps(0.004f), a4 = _mm256_set1_ps(0.005f), a5 = _mm256_set1_ps(0.006f);
  __m256 a6 = _mm256_set1_ps(0.007f), a7 = _mm256_set1_ps(0.008f), a8 = _mm256_set1_ps(0.009f);
  __m256 a9 = _mm256_set1_ps(0.010f), a10 = _mm256_set1_ps(0.011f), a11 = _mm256_set1_ps(0.012f);
  for (long i = 0; i < steps; ++i) {
    a0 = _mm256_fmadd_ps(a0, x, y);
    a1 = _mm256_fmadd_ps(a1, x, y);
    a2 = _mm256_fmadd_ps(a2, x, y);
    a3 = _mm256_fmadd_ps(a3, x, y);
    a4 = _mm256_fmadd_ps(a4, x, y);
    a5 = _mm256_fmadd_ps(a5, x, y);
    a6 = _mm256_fmadd_ps(a6, x, y);
    a7 = _mm256_fmadd_ps(a7, x, y);
    a8 = _mm256_fmadd_ps(a8, x, y);
    a9 = _mm256_fmadd_ps(a9, x, y);
    a10 = _mm256_fmadd_ps(a10, x, y);
    a11 = _mm256_fmadd_ps(a11, x, y);
  }
  __m256 s = a0;
  s = _mm256_add_ps(s, a1);
  s = _mm256_add_ps(s, a2);
  s = _mm256_add_ps(s, a3);
  s = _mm256_add_ps(s, a4);
  s = _mm256_add_ps(s, a5);
  s = _mm256_add_ps(s, a6);
  s = _mm256_add_ps(s, a7);
  s = _mm256_add_ps(s, a8);
  s = _mm256_add_ps(s, a9);
  s = _mm256_add_ps(s, a10);
  s = _mm256_add_ps(s, a11);
  float out[16];
  std::memcpy(out, &s, sizeof(float));
  return static_cast<double>(out[0]);
}
[[gnu::target("avx512f")]] double mul_add_avx512(long steps) {
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
  __m512 a0 = _mm512_set1_ps(0.001f), a1 = _mm512_set1_ps(0.002f), a2 = _mm512_set1_ps(0.003f);
  __m512 a3 = _mm512_set1_ps(0.004f), a4 = _mm512_set1_ps(0.005f), a5 = _mm512_set1_ps(0.006f);
  __m512 a6 = _mm512_set1_ps(0.007f), a7 = _mm512_set1_ps(0.008f), a8 = _mm512_set1_ps(0.009f);
  __m512 a9 = _mm512_set1_ps(0.010f), a10 = _mm512_set1_ps(0.011f), a11 = _mm512_set1_ps(0.012f);
  for (long i = 0; i < steps; ++i) {
    a0 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a0, x)), y);
    a1 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a1, x)), y);
    a2 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a2, x)), y);
    a3 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a3, x)), y);
    a4 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a4, x)), y);
    a5 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a5, x)), y);
    a6 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a6, x)), y);
    a7 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a7, x)), y);
    a8 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a8, x)), y);
    a9 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a9, x)), y);
    a10 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a10, x)), y);
    a11 = _mm512_add_ps(cpu::qk::keep(_mm512_mul_ps(a11, x)), y);
  }
  __m512 s = a0;
  s = _mm512_add_ps(s, a1);
  s = _mm512_add_ps(s, a2);
  s = _mm512_add_ps(s, a3);
  s = _mm512_add_ps(s, a4);
  s = _mm512_add_ps(s, a5);
  s = _mm512_add_ps(s, a6);
  s = _mm512_add_ps(s, a7);
  s = _mm512_add_ps(s, a8);
  s = _mm512_add_ps(s, a9);
  s = _mm512_add_ps(s, a10);
  s = _mm512_add_ps(s, a11);
  float out[16];
  std::memcpy(out, &s, sizeof(float));
  return static_cast<double>(out[0]);
}
[[gnu::target("avx512f")]] double fma_avx512(long steps) {
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
  __m512 a0 = _mm512_set1_ps(0.001f), a1 = _mm512_set1_ps(0.002f), a2 = _mm512_set1_ps(0.003f);
  __m512 a3 = _mm512_set1_ps(0.004f), a4 = _mm512_set1_ps(0.005f), a5 = _mm512_set1_ps(0.006f);
  __m512 a6 = _mm512_set1_ps(0.007f), a7 = _mm512_set1_ps(0.008f), a8 = _mm512_set1_ps(0.009f);
  __m512 a9 = _mm512_set1_ps(0.010f), a10 = _mm512_set1_ps(0.011f), a11 = _mm512_set1_ps(0.012f);
  for (long i = 0; i < steps; ++i) {
    a0 = _mm512_fmadd_ps(a0, x, y);
    a1 = _mm512_fmadd_ps(a1, x, y);
    a2 = _mm512_fmadd_ps(a2, x, y);
    a3 = _mm512_fmadd_ps(a3, x, y);
    a4 = _mm512_fmadd_ps(a4, x, y);
    a5 = _mm512_fmadd_ps(a5, x, y);
    a6 = _mm512_fmadd_ps(a6, x, y);
    a7 = _mm512_fmadd_ps(a7, x, y);
    a8 = _mm512_fmadd_ps(a8, x, y);
    a9 = _mm512_fmadd_ps(a9, x, y);
    a10 = _mm512_fmadd_ps(a10, x, y);
    a11 = _mm512_fmadd_ps(a11, x, y);
  }
  __m512 s = a0;
  s = _mm512_add_ps(s, a1);
  s = _mm512_add_ps(s, a2);
  s = _mm512_add_ps(s, a3);
  s = _mm512_add_ps(s, a4);
  s = _mm512_add_ps(s, a5);
  s = _mm512_add_ps(s, a6);
  s = _mm512_add_ps(s, a7);
  s = _mm512_add_ps(s, a8);
  s = _mm512_add_ps(s, a9);
  s = _mm512_add_ps(s, a10);
  s = _mm512_add_ps(s, a11);
  float out[16];
  std::memcpy(out, &s, sizeof(float));
  return static_cast<double>(out[0]);
}
// The exp loop: y[j] = e^x[j] over buffers in L1.
void exp_sse2(const float* x, float* y, index_t n) {
  for (index_t j = 0; j < n; j += 4) _mm_store_ps(y + j, cpu::qk::exp_sse2(_mm_load_ps(x + j)));
}
[[gnu::target("avx2")]] void exp_avx2(const float* x, float* y, index_t n) {
  for (index_t j = 0; j < n; j += 8) _mm256_store_ps(y + j, cpu::qk::exp_avx2(_mm256_load_ps(x + j)));
}
[[gnu::target("avx512f")]] void exp_avx512(const float* x, float* y, index_t n) {
  for (index_t j = 0; j < n; j += 16) _mm512_store_ps(y + j, cpu::qk::exp_avx512(_mm512_load_ps(x + j)));
}
#endif

rates measure_rates(cpu::simd_level level) {
  rates r;
#if FREEPRUNER_X86_SIMD
  const long steps = 20000;
  auto peak = [&](int lanes, auto loop) {
    const double t = min_seconds([&] { sink += loop(); }, 3);
    return 2.0 * 12.0 * lanes * static_cast<double>(steps) / t;
  };
  switch (level) {
    case cpu::simd_level::avx512:
      r.flops = std::max(peak(16, [&] { return fma_avx512(steps); }), peak(16, [&] { return mul_add_avx512(steps); }));
      break;
    case cpu::simd_level::avx2:
      r.flops = std::max(peak(8, [&] { return fma_avx2(steps); }), peak(8, [&] { return mul_add_avx2(steps); }));
      break;
    default: r.flops = peak(4, [&] { return mul_add_sse2(steps); });
  }
  alignas(64) static float in[2048], out[2048];
  const index_t n = 2048;
  const int reps = 64;
  for (index_t j = 0; j < n; ++j) in[j] = -20.0f * static_cast<float>(j) / static_cast<float>(n);
  const double t = min_seconds(
      [&] {
        for (int k = 0; k < reps; ++k) {
          switch (level) {
            case cpu::simd_level::avx512: exp_avx512(in, out, n); break;
            case cpu::simd_level::avx2: exp_avx2(in, out, n); break;
            default: exp_sse2(in, out, n);
          }
          benchmark::DoNotOptimize(out);
        }
      },
      3);
  r.exps = static_cast<double>(n) * reps / t;
#else
  (void)level;
#endif
  return r;
}

// The floor of one layer pass at `level`: FLOPs at the peak, exps at their rate.
struct floor_time {
  double gemm = 0, exp = 0, flops = 0, exps = 0;
  double total() const { return gemm + exp; }
  friend bool operator<(const floor_time& a, const floor_time& b) { return a.total() < b.total(); }
};

floor_time measure_floor(const shape& s, cpu::simd_level level) {
  const rates r = measure_rates(level);
  const double n2 = static_cast<double>(s.heads) * static_cast<double>(s.tokens) * static_cast<double>(s.tokens);
  floor_time f;
  f.flops = r.flops;
  f.exps = r.exps;
  f.gemm = 2.0 * n2 * static_cast<double>(s.dim) / r.flops;
  f.exp = n2 / r.exps;
  return f;
}

// Caps the kernels at `level` for a benchmark's lifetime (-1: the best).
struct level_cap {
  explicit level_cap(int level) { cpu::simd_cap().store(level); }
  ~level_cap() { cpu::simd_cap().store(-1); }
  level_cap(const level_cap&) = delete;
  level_cap& operator=(const level_cap&) = delete;
};

// One layer's contribution degrees (SPEC steps 0-1), the pass every read
// layer costs, with the kernels capped at `level` (-1: the best).
template <class E>
void bm_layer(benchmark::State& state, shape s, int level) {
  const level_cap cap(level);
  const qk_inputs<E> in(s);
  std::vector<double> r(static_cast<std::size_t>(s.tokens));
  const long long work = peak_allocated([&] {
    freepruner::detail::check(cpu::qk::layer_degrees(in.layers[0], "layers[0]", r.data()));
  });
  double best = 1e30;
  floor_time floor{1e30, 1e30};
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    freepruner::detail::check(cpu::qk::layer_degrees(in.layers[0], "layers[0]", r.data()));
    benchmark::DoNotOptimize(r.data());
    const double t = std::chrono::duration<double>(clock_type::now() - t0).count();
    state.SetIterationTime(t);
    best = std::min(best, t);
    floor = std::min(floor, measure_floor(s, cpu::active_simd()));  // interleaved: the same noise
  }
  const double flops = 2.0 * static_cast<double>(s.heads * s.tokens * s.tokens * s.dim);
  const double maps = 4.0 * static_cast<double>(s.heads * s.tokens * s.tokens);
  state.counters["layer_ms"] = best * 1e3;
  state.counters["floor_ms"] = floor.total() * 1e3;
  state.counters["x_floor"] = best / floor.total();
  state.counters["gemm_floor_ms"] = floor.gemm * 1e3;
  state.counters["exp_floor_ms"] = floor.exp * 1e3;
  state.counters["peak_GFLOP/s"] = floor.flops / 1e9;
  state.counters["exp_G/s"] = floor.exps / 1e9;
  state.counters["GFLOP/s"] = flops / best / 1e9;
  state.counters["level"] = static_cast<double>(static_cast<int>(cpu::active_simd()));
  state.counters["work_bytes"] = static_cast<double>(work);
  state.counters["maps_bytes"] = maps;
  state.counters["maps_per_work"] = maps / static_cast<double>(work);
}

// One layer on `threads` threads (executor::threads), timed in turn with the
// same layer on one: speedup = one thread / threads; x_floor = the time of
// the threads' work (time x threads) over the one-core floor.
void bm_layer_threads(benchmark::State& state, shape s, int threads) {
  const qk_inputs<float> in(s);
  std::vector<double> r(static_cast<std::size_t>(s.tokens));
  const freepruner::executor many = freepruner::executor::threads(threads);
  auto pass = [&](const freepruner::executor& e) {
    const auto t0 = clock_type::now();
    freepruner::detail::check(cpu::qk::layer_degrees(in.layers[0], "layers[0]", r.data(), e));
    benchmark::DoNotOptimize(r.data());
    return std::chrono::duration<double>(clock_type::now() - t0).count();
  };
  double best = 1e30, one = 1e30;
  floor_time floor{1e30, 1e30};
  for (auto _ : state) {
    const double t = pass(many);
    state.SetIterationTime(t);
    best = std::min(best, t);
    one = std::min(one, pass(freepruner::executor{}));
    floor = std::min(floor, measure_floor(s, cpu::active_simd()));
  }
  state.counters["layer_ms"] = best * 1e3;
  state.counters["one_thread_ms"] = one * 1e3;
  state.counters["speedup"] = one / best;
  state.counters["threads"] = threads;
  state.counters["floor_ms"] = floor.total() * 1e3;
  state.counters["x_floor"] = best * threads / floor.total();
  state.counters["level"] = static_cast<double>(static_cast<int>(cpu::active_simd()));
}

// The whole selection on L layers (ratio 0.5 or adaptive; row or column).
template <class E>
void bm_select(benchmark::State& state, shape s, bool adaptive, freepruner::direction dir, int level) {
  const level_cap cap(level);
  const qk_inputs<E> in(s);
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
    floor = std::min(floor, measure_floor(s, cpu::active_simd()));  // interleaved: the same noise
  }
  // Every layer is read once; the column direction reads the last one again.
  const double passes = static_cast<double>(s.layers) + (dir == freepruner::direction::column ? 1.0 : 0.0);
  const double maps = 4.0 * static_cast<double>(s.layers * s.heads * s.tokens * s.tokens);
  state.counters["select_ms"] = best * 1e3;
  state.counters["floor_ms"] = passes * floor.total() * 1e3;
  state.counters["x_floor"] = best / (passes * floor.total());
  state.counters["level"] = static_cast<double>(static_cast<int>(cpu::active_simd()));
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
  auto timed = [](benchmark::internal::Benchmark* b, int iterations) {
    b->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(iterations);
  };
  const shape clip = shapes[0].s;
  // Every SIMD level the CPU has, on the CLIP shape.
  const char* level_names[] = {"scalar", "sse2", "avx2", "avx512"};
  for (int level = 1; level <= static_cast<int>(cpu::detected_simd()); ++level) {
    const std::string tag = std::string("/") + level_names[level];
    timed(benchmark::RegisterBenchmark(("qk/layer/f32/clip336" + tag).c_str(),
                                       [clip, level](benchmark::State& st) { bm_layer<float>(st, clip, level); }),
          8);
    timed(benchmark::RegisterBenchmark(("qk/select/f32/clip336/L2/ratio/row" + tag).c_str(),
                                       [clip, level](benchmark::State& st) {
                                         bm_select<float>(st, clip, false, freepruner::direction::row, level);
                                       }),
          8);
  }
  for (const auto& n : shapes) {
    if (n.s.tokens == clip.tokens) continue;
    const int iterations = n.s.tokens > 1024 ? 3 : 8;
    timed(benchmark::RegisterBenchmark((std::string("qk/layer/f32/") + n.name).c_str(),
                                       [n](benchmark::State& st) { bm_layer<float>(st, n.s, -1); }),
          iterations);
    timed(benchmark::RegisterBenchmark(
              (std::string("qk/select/f32/") + n.name + "/L2/ratio/row").c_str(),
              [n](benchmark::State& st) { bm_select<float>(st, n.s, false, freepruner::direction::row, -1); }),
          iterations);
  }
  timed(benchmark::RegisterBenchmark(
            "qk/select/f32/clip336/L2/adaptive/row",
            [clip](benchmark::State& st) { bm_select<float>(st, clip, true, freepruner::direction::row, -1); }),
        8);
  timed(benchmark::RegisterBenchmark(
            "qk/select/f32/clip336/L2/ratio/column",
            [clip](benchmark::State& st) { bm_select<float>(st, clip, false, freepruner::direction::column, -1); }),
        8);
  // The degree pass on the engine's threads: every core this machine has.
  const int cores = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  timed(benchmark::RegisterBenchmark(("qk/layer/f32/clip336/threads" + std::to_string(cores)).c_str(),
                                     [clip, cores](benchmark::State& st) { bm_layer_threads(st, clip, cores); }),
        8);
  timed(benchmark::RegisterBenchmark("qk/layer/f16/clip336",
                                     [clip](benchmark::State& st) { bm_layer<Eigen::half>(st, clip, -1); }),
        8);
  timed(benchmark::RegisterBenchmark("qk/layer/bf16/clip336",
                                     [clip](benchmark::State& st) { bm_layer<Eigen::bfloat16>(st, clip, -1); }),
        8);
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

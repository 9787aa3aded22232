// select() on the shapes engines run, each case timed against a read of the
// very same bytes in the same run: `x_read` = select time / read time (both
// the minimum over iterations). Machines are noisy; ratios from one run are
// what these benchmarks report, never absolute times alone.
//
// Counters: x_read, select_ms and read_ms (minimums), GB/s (select), kept
// (tokens); the scaling cases add pass_ms and steps_ms (select run as its
// stages: the contribution-degree passes, then steps 2-5) and share_select
// (the steps' part of the two).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <freepruner/freepruner.hpp>

#include "timing.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FP_BENCH_X86 1
#else
#define FP_BENCH_X86 0
#endif

namespace {

using freepruner::index_t;
using fp_bench::clock_type;
using fp_bench::min_seconds;

struct shape {
  index_t batch, layers, heads, tokens, prefix;
};

// Softmax rows with a few attention sinks and an object-like cluster, so the
// adaptive pivots and complements are of realistic size (not pure noise).
template <class E>
const std::vector<E>& maps_for(const shape& s) {
  static std::map<std::tuple<index_t, index_t, index_t, index_t>, std::vector<E>> cache;
  auto& maps = cache[std::make_tuple(s.batch, s.layers, s.heads, s.tokens)];
  if (!maps.empty()) return maps;
  cache.clear();  // keep one buffer alive: the large shapes are hundreds of MB
  auto& fresh = cache[std::make_tuple(s.batch, s.layers, s.heads, s.tokens)];
  const index_t n = s.tokens;
  fresh.resize(static_cast<std::size_t>(s.batch * s.layers * s.heads * n * n));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> bonus(static_cast<std::size_t>(n)), row(static_cast<std::size_t>(n));
  for (index_t m = 0; m < s.batch * s.layers * s.heads; ++m) {
    for (auto& b : bonus) b = std::uniform_real_distribution<float>(0, 1)(rng) < 0.05f ? 3.0f : 0.0f;
    for (index_t i = 0; i < n; ++i) {
      float sum = 0;
      for (index_t j = 0; j < n; ++j) sum += row[static_cast<std::size_t>(j)] = std::exp(0.7f * normal(rng) + bonus[static_cast<std::size_t>(j)]);
      E* out = &fresh[static_cast<std::size_t>((m * n + i) * n)];
      for (index_t j = 0; j < n; ++j) out[j] = static_cast<E>(row[static_cast<std::size_t>(j)] / sum);
    }
  }
  return fresh;
}

// The floor: every byte loaded once, summed as integers, 4 vector accumulators.
#if FP_BENCH_X86
[[gnu::target("avx2")]] std::uint64_t read_bytes_avx2(const unsigned char* p, std::size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t k = 0;
  for (; k + 128 <= n; k += 128) {
    __builtin_prefetch(p + k + 512);  // as the library's pass does: the floor is the best read
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k + 96)));
  }
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  std::uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; k < n; ++k) sum += p[k];
  return sum;
}
#endif

std::uint64_t read_bytes(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
#if FP_BENCH_X86
  if (__builtin_cpu_supports("avx2")) return read_bytes_avx2(p, n);
#endif
  std::uint64_t acc[4] = {0, 0, 0, 0};
  std::size_t k = 0;
  for (; k + 32 <= n; k += 32)
    for (int u = 0; u < 4; ++u) {
      std::uint64_t w;
      std::memcpy(&w, p + k + 8 * u, 8);
      acc[u] += w;
    }
  for (; k < n; ++k) acc[0] += p[k];
  return acc[0] + acc[1] + acc[2] + acc[3];
}

freepruner::budget budget_of(int kind, const shape& s) {
  if (kind == 0) return freepruner::budget::ratio(0.5);
  if (kind == 1) return freepruner::budget::count((s.tokens - s.prefix) / 2);
  return freepruner::budget::adaptive();
}

template <class E>
void bm_select(benchmark::State& state, shape s, int budget_kind) {
  const auto& maps = maps_for<E>(s);
  const std::size_t bytes = maps.size() * sizeof(E);
  freepruner::options o;
  o.prefix_tokens = s.prefix;
  const auto b = budget_of(budget_kind, s);
  // The read is timed in every iteration too, just before the select: both
  // minimums then come from the same stretch of the run (a shared machine's
  // memory bandwidth drifts from minute to minute, so minimums taken apart
  // would not be comparable).
  double read = 1e30;
  double best = 1e30;
  std::size_t kept = 0;
  for (auto _ : state) {
    read = std::min(read, min_seconds([&] { benchmark::DoNotOptimize(read_bytes(maps.data(), bytes)); }, 1));
    const auto t0 = clock_type::now();
    if (s.batch == 1) {
      const auto sel = freepruner::select(freepruner::attention_view<const E>(maps.data(), s.layers, s.heads, s.tokens), b, o);
      kept = sel.size();
    } else {
      const auto sel = freepruner::select(
          freepruner::batched_attention_view<const E>(maps.data(), s.batch, s.layers, s.heads, s.tokens), b, o);
      kept = sel.front().size();
    }
    const double t = std::chrono::duration<double>(clock_type::now() - t0).count();
    state.SetIterationTime(t);
    best = std::min(best, t);
  }
  state.counters["x_read"] = best / read;
  state.counters["select_ms"] = best * 1e3;
  state.counters["read_ms"] = read * 1e3;
  state.counters["GB/s"] = static_cast<double>(bytes) / best / 1e9;
  state.counters["kept"] = static_cast<double>(kept);
}

// The same select run as its stages, each timed in the same iteration: the
// contribution-degree passes (steps 0-1), then the selection steps (pivots,
// complement scores and outliers, budget: steps 2-5). share_select is
// steps / (pass + steps), from the two minimums; timing the steps directly
// keeps the share out of the noise of two large, separately drifting times.
template <class E>
void bm_share(benchmark::State& state, shape s) {
  const auto& maps = maps_for<E>(s);
  const freepruner::attention_view<const E> v(maps.data(), s.layers, s.heads, s.tokens);
  freepruner::options o;
  o.prefix_tokens = s.prefix;
  const auto b = freepruner::budget::ratio(0.5);
  double pass = 1e30, steps = 1e30, read = 1e30, best = 1e30;  // minimums over iterations (see bm_select)
  std::size_t pivots = 0;
  freepruner::selection staged;
  for (auto _ : state) {
    read = std::min(read, min_seconds([&] { benchmark::DoNotOptimize(read_bytes(maps.data(), maps.size() * sizeof(E))); }, 1));
    const auto t0 = clock_type::now();
    std::vector<std::vector<double>> degrees;
    for (index_t l = 0; l < s.layers; ++l) degrees.push_back(freepruner::contribution_degree(v, l));
    const auto t1 = clock_type::now();
    const auto pivotal = freepruner::pivotal_tokens(degrees, o);
    const auto comps = freepruner::complementary_tokens(v, pivotal, o);
    staged = freepruner::fit_budget(degrees, pivotal, comps, b, o);
    const auto t2 = clock_type::now();
    pass = std::min(pass, std::chrono::duration<double>(t1 - t0).count());
    steps = std::min(steps, std::chrono::duration<double>(t2 - t1).count());
    const auto t3 = clock_type::now();
    const auto sel = freepruner::select(v, b, o);
    const double t = std::chrono::duration<double>(clock_type::now() - t3).count();
    pivots = sel.pivotal.size();
    if (sel != staged) state.SkipWithError("the stages composed by hand differ from select");
    state.SetIterationTime(t);
    best = std::min(best, t);
  }
  state.counters["x_read"] = best / read;
  state.counters["pass_x_read"] = pass / read;
  state.counters["select_ms"] = best * 1e3;
  state.counters["pass_ms"] = pass * 1e3;
  state.counters["steps_ms"] = steps * 1e3;
  state.counters["read_ms"] = read * 1e3;
  state.counters["share_select"] = steps / (pass + steps);
  state.counters["pivotal"] = static_cast<double>(pivots);
}

void bm_read(benchmark::State& state, shape s) {
  const auto& maps = maps_for<float>(s);
  for (auto _ : state) benchmark::DoNotOptimize(read_bytes(maps.data(), maps.size() * sizeof(float)));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * maps.size() * sizeof(float)));
}

void register_all() {
  struct named {
    const char* name;
    shape s;
  };
  const named shapes[] = {
      {"clip336_L1", {1, 1, 16, 577, 1}},       {"clip336_L2", {1, 2, 16, 577, 1}},
      {"clip336_L23", {1, 23, 16, 577, 1}},     {"clip336_L2_b8", {8, 2, 16, 577, 1}},
      {"anyres_5crops_L2", {5, 2, 16, 577, 1}}, {"video_8frames_L2", {8, 2, 16, 257, 1}},
      {"siglip729_L2", {1, 2, 16, 729, 0}},     {"qwen2vl1024_L2", {1, 2, 16, 1024, 0}},
  };
  const char* budgets[] = {"ratio", "count", "adaptive"};
  for (const auto& n : shapes) {
    for (int kind = 0; kind < 3; ++kind) {
      if (kind > 0 && std::string(n.name) != "clip336_L2") continue;  // budgets compared on one shape
      benchmark::RegisterBenchmark((std::string("select/f32/") + n.name + "/" + budgets[kind]).c_str(),
                                   [n, kind](benchmark::State& st) { bm_select<float>(st, n.s, kind); })
          ->UseManualTime()->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark((std::string("select/f16/") + n.name + "/ratio").c_str(),
                                 [n](benchmark::State& st) { bm_select<Eigen::half>(st, n.s, 0); })
        ->UseManualTime()->Unit(benchmark::kMillisecond);
    // bf16 (Qwen2-VL and most recent encoders run in it) on the shapes it is used with.
    const std::string name = n.name;
    if (name == "clip336_L2" || name == "clip336_L23" || name == "anyres_5crops_L2" || name == "qwen2vl1024_L2" ||
        name == "siglip729_L2")
      benchmark::RegisterBenchmark((std::string("select/bf16/") + n.name + "/ratio").c_str(),
                                   [n](benchmark::State& st) { bm_select<Eigen::bfloat16>(st, n.s, 0); })
          ->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  // Scaling in N: time against the bytes, and the share of the selection steps.
  for (index_t n : {257, 577, 1024, 2048, 4096}) {
    const shape s{1, 2, 16, n, 1};
    benchmark::RegisterBenchmark(("scaling/f32/N" + std::to_string(n)).c_str(),
                                 [s](benchmark::State& st) { bm_share<float>(st, s); })
        ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
  }
  benchmark::RegisterBenchmark("read/f32/clip336_L2", [](benchmark::State& st) { bm_read(st, {1, 2, 16, 577, 1}); })
      ->Unit(benchmark::kMillisecond);
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

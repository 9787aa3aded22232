// select() on CLIP-336 maps against reading the same bytes once. Every
// case reports time relative to that read (`x_read`): machines are noisy,
// ratios from one run are not.

#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include <freepruner/freepruner.hpp>

namespace {

constexpr freepruner::index_t clip_tokens = 577, clip_heads = 16;

template <class E>
const std::vector<E>& clip_maps(freepruner::index_t layers) {
  static std::vector<E> maps;
  const auto size = static_cast<std::size_t>(layers * clip_heads * clip_tokens * clip_tokens);
  if (maps.size() != size) {
    std::mt19937 rng(1);
    std::exponential_distribution<float> draw(1.0f);
    maps.resize(size);
    for (std::size_t row = 0; row < size; row += clip_tokens) {
      float sum = 0;
      std::vector<float> x(clip_tokens);
      for (auto& v : x) sum += v = draw(rng);
      for (freepruner::index_t j = 0; j < clip_tokens; ++j) maps[row + static_cast<std::size_t>(j)] = static_cast<E>(x[static_cast<std::size_t>(j)] / sum);
    }
  }
  return maps;
}

// The floor: one vectorizable pass summing every element.
template <class E>
double read_once(const std::vector<E>& maps) {
  float acc[16] = {};
  const std::size_t n = maps.size() / 16 * 16;
  for (std::size_t k = 0; k < n; k += 16)
    for (int u = 0; u < 16; ++u) acc[u] += static_cast<float>(maps[k + static_cast<std::size_t>(u)]);
  double sum = 0;
  for (float a : acc) sum += a;
  return sum;
}

template <class E>
void bm_read_once(benchmark::State& state) {
  const auto& maps = clip_maps<E>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(read_once(maps));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(maps.size() * sizeof(E)));
}

template <class E>
void bm_select(benchmark::State& state) {
  const freepruner::index_t layers = state.range(0);
  const auto& maps = clip_maps<E>(layers);
  const freepruner::attention_view<const E> v(maps.data(), layers, clip_heads, clip_tokens);
  freepruner::options o;
  o.prefix_tokens = 1;
  std::size_t kept = 0;
  for (auto _ : state) {
    auto s = freepruner::select(v, freepruner::budget::ratio(0.5), o);
    kept = s.size();
    benchmark::DoNotOptimize(s.indices.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(maps.size() * sizeof(E)));
  state.counters["kept"] = static_cast<double>(kept);
}

BENCHMARK_TEMPLATE(bm_read_once, float)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_select, float)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_read_once, Eigen::half)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_select, Eigen::half)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

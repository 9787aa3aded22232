#pragma once
// Random softmax attention maps for the tool's tests (without Catch): rows
// of exp(t * noise + sink bonus), so that outliers exist.

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace tool_test {

inline std::vector<float> random_maps(std::mt19937_64& rng, int layers, int heads, int tokens) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<float> maps(static_cast<std::size_t>(layers) * static_cast<std::size_t>(heads) *
                          static_cast<std::size_t>(tokens) * static_cast<std::size_t>(tokens));
  std::vector<double> bonus(static_cast<std::size_t>(tokens)), row(static_cast<std::size_t>(tokens));
  for (int lh = 0; lh < layers * heads; ++lh) {
    for (auto& b : bonus) b = uniform(rng) < 0.12 ? 1.0 + 3.0 * uniform(rng) : 0.0;
    const double temperature = 0.3 + 1.7 * uniform(rng);
    for (int i = 0; i < tokens; ++i) {
      double sum = 0;
      for (std::size_t j = 0; j < row.size(); ++j) sum += row[j] = std::exp(temperature * normal(rng) + bonus[j]);
      float* out = &maps[(static_cast<std::size_t>(lh) * static_cast<std::size_t>(tokens) + static_cast<std::size_t>(i)) *
                         static_cast<std::size_t>(tokens)];
      for (std::size_t j = 0; j < row.size(); ++j) out[j] = static_cast<float>(row[j] / sum);
    }
  }
  return maps;
}

}  // namespace tool_test

#pragma once
// Random attention maps shaped like a vision encoder's, from any random
// engine and without a test framework: tests/common.hpp (Catch2) and the
// CUDA tests (a plain main) make their maps here.

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

namespace fptest {

// Softmax rows over logits with a few "sink" keys per layer-head that draw
// attention (so outliers exist), at random temperatures; when `flat`, rows
// are nearly uniform (few or no outliers, exercising the fallback).
template <class Engine>
std::vector<double> softmax_maps(Engine& engine, int layers, int heads, int tokens, bool flat = false) {
  auto uniform = [&engine](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine); };
  std::vector<double> maps(static_cast<std::size_t>(layers) * heads * tokens * tokens);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> bonus(static_cast<std::size_t>(tokens));
  for (int l = 0; l < layers; ++l)
    for (int h = 0; h < heads; ++h) {
      for (auto& b : bonus) b = flat ? 0.0 : (uniform(0, 1) < 0.12 ? uniform(1.0, 4.0) : 0.0);
      const double temperature = flat ? 0.01 : uniform(0.3, 2.0);
      for (int i = 0; i < tokens; ++i) {
        double* row = &maps[((static_cast<std::size_t>(l) * heads + h) * tokens + i) * tokens];
        double sum = 0;
        for (int j = 0; j < tokens; ++j) {
          row[j] = std::exp(temperature * normal(engine) + bonus[static_cast<std::size_t>(j)]);
          sum += row[j];
        }
        for (int j = 0; j < tokens; ++j) row[j] /= sum;
      }
    }
  return maps;
}

}  // namespace fptest

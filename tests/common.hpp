#pragma once
// Test helpers: random attention maps shaped like a vision encoder's, and
// conversions to the reference's inputs.

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <freepruner/freepruner.hpp>

#include "reference.hpp"
#include "softmax_maps.hpp"

namespace Catch {
template <>
struct StringMaker<freepruner::errc> {
  static std::string convert(freepruner::errc code) { return freepruner::to_string(code); }
};
}  // namespace Catch

namespace fptest {

inline constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
inline constexpr double inf_v = std::numeric_limits<double>::infinity();

// x as element type E (half and bfloat16 convert from float).
template <class E>
E element(double x) {
  return static_cast<E>(static_cast<float>(x));
}
template <>
inline double element<double>(double x) {
  return x;
}

// Seeded from Catch's --rng-seed, so a failing run can be replayed.
inline std::mt19937_64& rng() {
  static std::mt19937_64 engine(Catch::rngSeed());
  return engine;
}

inline int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng()); }
inline double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng()); }

// Softmax rows with "sink" keys (tests/softmax_maps.hpp), from the seeded engine.
inline std::vector<double> random_maps(int layers, int heads, int tokens, bool flat = false) {
  return softmax_maps(rng(), layers, heads, tokens, flat);
}

// Rounds to element type E and back, so the reference sees the values the library reads.
template <class E>
std::vector<E> convert(const std::vector<double>& x) {
  std::vector<E> out(x.size());
  for (std::size_t k = 0; k < x.size(); ++k) out[k] = static_cast<E>(static_cast<float>(x[k]));
  return out;
}
template <>
inline std::vector<double> convert<double>(const std::vector<double>& x) {
  return x;
}
template <class E>
std::vector<double> widen(const std::vector<E>& x) {
  std::vector<double> out(x.size());
  for (std::size_t k = 0; k < x.size(); ++k) out[k] = static_cast<double>(static_cast<float>(x[k]));
  return out;
}
template <>
inline std::vector<double> widen<double>(const std::vector<double>& x) {
  return x;
}

inline std::vector<freepruner::token_t> tokens_of(const std::vector<int>& v) {
  return std::vector<freepruner::token_t>(v.begin(), v.end());
}

// Options/budget of the library from a reference config.
inline freepruner::options options_of(const fpref::config& c) {
  freepruner::options o;
  o.prefix_tokens = c.prefix;
  o.suffix_tokens = c.suffix;
  o.pivots_per_layer = c.pivots_per_layer;
  o.fence_factor = c.fence_factor;
  o.complementary_from = c.column ? freepruner::direction::column : freepruner::direction::row;
  o.complementary_layer = c.complementary_layer;
  o.pivot_layers.assign(c.pivot_layers.begin(), c.pivot_layers.end());
  return o;
}

inline freepruner::budget budget_of(const fpref::config& c) {
  switch (c.kind) {
    case fpref::budget_kind::count: return freepruner::budget::count(static_cast<freepruner::index_t>(c.budget_value));
    case fpref::budget_kind::ratio: return freepruner::budget::ratio(c.budget_value);
    case fpref::budget_kind::adaptive: break;
  }
  return freepruner::budget::adaptive();
}

inline std::string describe(const fpref::config& c) {
  std::string s = "L=" + std::to_string(c.layers) + " H=" + std::to_string(c.heads) + " N=" + std::to_string(c.tokens) +
                  " prefix=" + std::to_string(c.prefix) + " suffix=" + std::to_string(c.suffix) +
                  " budget=" + std::to_string(static_cast<int>(c.kind)) + ":" + std::to_string(c.budget_value) +
                  " k=" + std::to_string(c.pivots_per_layer) + (c.column ? " column" : " row") +
                  " c=" + std::to_string(c.complementary_layer) + " f=" + std::to_string(c.fence_factor) + " pivot_layers=";
  for (int l : c.pivot_layers) s += std::to_string(l) + ",";
  return s;
}

// A random valid configuration; heads a power of two when `exact_mean`
// (half types: the head mean is then exact in every implementation).
inline fpref::config random_config(bool exact_mean = false) {
  fpref::config c;
  c.layers = uniform_int(1, 3);
  c.heads = exact_mean ? (1 << uniform_int(0, 2)) : uniform_int(1, 4);
  static const int sizes[] = {1, 2, 3, 4, 5, 8, 17, 26, 40, 65};
  c.tokens = sizes[uniform_int(0, 9)];
  c.prefix = uniform_int(0, 2);
  c.suffix = uniform_int(0, 1);
  while (c.prefix + c.suffix >= c.tokens) c.prefix > 0 ? --c.prefix : --c.suffix;
  const int m = c.tokens - c.prefix - c.suffix;
  switch (uniform_int(0, 2)) {
    case 0: c.kind = fpref::budget_kind::adaptive; break;
    case 1: c.kind = fpref::budget_kind::count; c.budget_value = uniform_int(1, m + 3); break;
    default: c.kind = fpref::budget_kind::ratio; c.budget_value = uniform(0.01, 1.0); break;
  }
  c.pivots_per_layer = uniform_int(0, 3) == 0 ? uniform_int(1, 4) : 0;
  c.column = uniform_int(0, 1) == 1;
  c.complementary_layer = uniform_int(0, 1) == 0 ? -1 : uniform_int(0, c.layers - 1);
  if (uniform_int(0, 2) == 0)
    for (int l = 0; l < c.layers; ++l)
      if (uniform_int(0, 1) == 1) c.pivot_layers.push_back(l);
  static const double fences[] = {1.5, 1.5, 0.0, 0.5, 3.0};
  c.fence_factor = fences[uniform_int(0, 4)];
  // With two values x < y, f = 0.5 puts the fence exactly on y: a tie that
  // rounding decides (SPEC "Precision"), so not a case to compare exactly.
  if (c.fence_factor == 0.5 && m <= 3) c.fence_factor = 1.5;
  return c;
}

}  // namespace fptest

#pragma once
// Validation shared by every backend: one `plan` per call, built from the
// extents and options (SPEC "Input" and "Bad input").

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "../options.hpp"
#include "messages.hpp"

namespace freepruner {
namespace detail {

/// A validated call: shape, candidate range [first, last), resolved layers.
struct plan {
  index_t layers = 0, heads = 0, tokens = 0;
  index_t first = 0, last = 0;       // candidates C = first..last-1
  index_t candidates = 0;            // M
  std::vector<index_t> pivot_layers;  // resolved to 0..L-1, in the order given
  index_t complementary_layer = 0;    // resolved to 0..L-1
};

inline status check_shape(const std::array<index_t, 4>& e) {
  static const char* const names[4] = {"layers", "heads", "queries", "keys"};
  for (int d = 0; d < 4; ++d)
    if (e[static_cast<std::size_t>(d)] <= 0)
      return below_one(errc::invalid_shape, e[static_cast<std::size_t>(d)], "attention maps: ", names[d]);
  if (e[2] != e[3])
    return fail(errc::invalid_shape, "attention maps are not square: queries = ", e[2],
                ", keys = ", e[3]);
  if (e[2] > std::numeric_limits<token_t>::max()) return token_range("attention maps: tokens = ", e[2]);
  return {};
}

// -1 means the last layer; anything else must be in 0..L-1.
inline status resolve_layer(index_t given, index_t layers, const char* what, index_t& out) {
  if (given == -1) {
    out = layers - 1;
    return {};
  }
  if (given < 0 || given >= layers)
    return fail(errc::invalid_layer, what, " = ", given, " is outside the given layers 0..",
                layers - 1, " (-1 means the last)");
  out = given;
  return {};
}

inline status check_options(const options& o) {
  if (o.prefix_tokens < 0)
    return below_zero(errc::invalid_tokens, o.prefix_tokens, "options.prefix_tokens");
  if (o.suffix_tokens < 0)
    return below_zero(errc::invalid_tokens, o.suffix_tokens, "options.suffix_tokens");
  if (o.pivots_per_layer < 0)
    return fail(errc::invalid_option, "options.pivots_per_layer = ", o.pivots_per_layer,
                " (0 for adaptive, or k >= 1)");
  if (!std::isfinite(o.fence_factor) || o.fence_factor < 0)
    return fail(errc::invalid_option, "options.fence_factor = ", o.fence_factor, " (must be finite and >= 0)");
  if (o.complementary_from != direction::row && o.complementary_from != direction::column)
    return fail(errc::invalid_option, "options.complementary_from = ", static_cast<int>(o.complementary_from),
                " (must be direction::row or direction::column)");
  return {};
}

// SPEC "Input": a + b < N, so M >= 1.
inline status check_tokens(const options& o, index_t tokens) {
  if (auto s = check_options(o); !s) return s;
  // Compared one at a time: the sum of two huge values would overflow.
  if (o.prefix_tokens >= tokens || o.suffix_tokens >= tokens - o.prefix_tokens)
    return fail(errc::invalid_tokens, "options.prefix_tokens + options.suffix_tokens = ",
                o.prefix_tokens, " + ", o.suffix_tokens,
                " leaves no candidate among tokens = ", tokens);
  return {};
}

inline status make_plan(const std::array<index_t, 4>& e, const options& o, plan& p) {
  if (auto s = check_shape(e); !s) return s;
  if (auto s = check_tokens(o, e[2]); !s) return s;
  p.layers = e[0];
  p.heads = e[1];
  p.tokens = e[2];
  p.first = o.prefix_tokens;
  p.last = e[2] - o.suffix_tokens;
  p.candidates = p.last - p.first;
  if (auto s = resolve_layer(o.complementary_layer, p.layers, "options.complementary_layer", p.complementary_layer); !s)
    return s;
  p.pivot_layers.clear();
  if (o.pivot_layers.empty()) {
    for (index_t l = 0; l < p.layers; ++l) p.pivot_layers.push_back(l);
    return {};
  }
  std::vector<bool> seen(static_cast<std::size_t>(p.layers), false);
  for (index_t given : o.pivot_layers) {
    index_t l = 0;
    if (auto s = resolve_layer(given, p.layers, "options.pivot_layers entry", l); !s) return s;
    if (seen[static_cast<std::size_t>(l)])
      return fail(errc::invalid_layer, "options.pivot_layers names layer ", l, " twice");
    seen[static_cast<std::size_t>(l)] = true;
    p.pivot_layers.push_back(l);
  }
  return {};
}

// Finite scores can lie so far apart that the quartile arithmetic overflows
// (b - a in the interpolation, Q3 - Q1): their spread must be finite. An
// overflow of Q3 + f (Q3 - Q1) itself is harmless: +inf is above every value,
// as the true fence is. (Values near 1e308 reach this; attention never does.)
template <class S>
status spread_status(S lo, S hi, const char* what) {
  if (!std::isfinite(static_cast<double>(hi - lo)))
    return fail(errc::non_finite, what, " spans ", static_cast<double>(lo), " to ", static_cast<double>(hi),
                ": the quartiles would overflow (sums of these maps leave the double range)");
  return {};
}

template <class S>
status check_spread(const S* x, index_t first, index_t last, const char* what) {
  if (first >= last) return {};
  S lo = x[first], hi = x[first];
  for (index_t i = first + 1; i < last; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  return spread_status(lo, hi, what);
}

/// SPEC step 5's size of the kept set: every token of P ∪ Q (adaptive), or
/// exactly `count()` tokens. Plain data, so device code carries it too.
class kept_count {
 public:
  FREEPRUNER_HOST_DEVICE static constexpr kept_count adaptive() noexcept { return kept_count(true, 0); }
  FREEPRUNER_HOST_DEVICE static constexpr kept_count exactly(index_t m) noexcept { return kept_count(false, m); }
  constexpr kept_count() noexcept = default;
  FREEPRUNER_HOST_DEVICE constexpr bool is_adaptive() const noexcept { return adaptive_; }
  /// The count, for a fixed budget.
  FREEPRUNER_HOST_DEVICE constexpr index_t count() const noexcept { return count_; }

 private:
  FREEPRUNER_HOST_DEVICE constexpr kept_count(bool adaptive, index_t count) noexcept : adaptive_(adaptive), count_(count) {}
  bool adaptive_ = true;
  index_t count_ = 0;
};

// SPEC step 5: the budget's kept count for M candidates.
inline status budget_tokens(const budget& b, index_t candidates, kept_count& m) {
  switch (b.mode()) {
    case budget::kind::adaptive:
      m = kept_count::adaptive();
      return {};
    case budget::kind::count:
      if (b.count_value() < 1) return fail(errc::invalid_budget, "budget::count(", b.count_value(), ") (must be >= 1)");
      m = kept_count::exactly(b.count_value() < candidates ? b.count_value() : candidates);
      return {};
    case budget::kind::ratio: {
      const double x = b.ratio_value();
      if (!(x > 0.0 && x <= 1.0))  // also rejects NaN
        return fail(errc::invalid_budget, "budget::ratio(", x, ") (must be finite, > 0 and <= 1)");
      const auto rounded = static_cast<index_t>(std::floor(x * static_cast<double>(candidates) + 0.5));
      // x <= 1 already bounds it by M; the min guards rounding.
      m = kept_count::exactly(std::min(std::max<index_t>(rounded, 1), candidates));
      return {};
    }
  }
  return fail(errc::invalid_budget, "budget kind = ", static_cast<int>(b.mode()), " is not adaptive, count or ratio");
}

}  // namespace detail
}  // namespace freepruner

#pragma once
/// \file options.hpp
/// What to select (`options`), how many (`budget`), and the answer (`selection`).

#include <vector>

#include "config.hpp"

namespace freepruner {

/// Where a pivot's complementary scores come from (SPEC step 3).
enum class direction {
  row,     ///< v_p[j] = Ā_c[p][j]: what the pivot attends to (Algorithm 1; default)
  column,  ///< v_p[j] = Ā_c[j][p]: attention towards the pivot
};

/// How many tokens to keep (SPEC steps 4-5).
class budget {
 public:
  enum class kind { adaptive, count, ratio };

  /// Keep exactly the pivotal and complementary tokens (a data-dependent count).
  static constexpr budget adaptive() noexcept { return budget(kind::adaptive, 0, 0.0); }
  /// Keep exactly min(m, candidates) tokens; m >= 1.
  static constexpr budget count(index_t m) noexcept { return budget(kind::count, m, 0.0); }
  /// Keep max(1, floor(x * candidates + 0.5)) tokens; 0 < x <= 1.
  static constexpr budget ratio(double x) noexcept { return budget(kind::ratio, 0, x); }

  constexpr kind mode() const noexcept { return kind_; }
  constexpr index_t count_value() const noexcept { return count_; }
  constexpr double ratio_value() const noexcept { return ratio_; }

 private:
  constexpr budget(kind k, index_t m, double x) noexcept : kind_(k), count_(m), ratio_(x) {}
  kind kind_;
  index_t count_;
  double ratio_;
};

/// Selection options; every default is SPEC.md's.
struct options {
  /// Tokens 0..prefix_tokens-1 attend but are never selected (CLS first, as in
  /// Hugging Face models; register tokens).
  index_t prefix_tokens = 0;
  /// Tokens N-suffix_tokens..N-1 attend but are never selected (CLS last, as
  /// in llama.cpp's encoder graph).
  index_t suffix_tokens = 0;
  /// 0: adaptive pivots (IQR outliers of each layer); k > 0: the top k of each
  /// pivot layer (all candidates when k exceeds their number).
  index_t pivots_per_layer = 0;
  /// f in fence = Q3 + f * (Q3 - Q1); finite and >= 0.
  double fence_factor = 1.5;
  /// Row (default) or column complementary scores.
  direction complementary_from = direction::row;
  /// Index into the given layers of the layer complementary tokens come from;
  /// -1 is the last given layer (LLaVA's penultimate encoder layer).
  index_t complementary_layer = -1;
  /// Indices into the given layers that pick pivots (-1 is the last);
  /// empty means every given layer.
  std::vector<index_t> pivot_layers;
};

/// The kept tokens: absolute positions in 0..N-1, ascending, and their split
/// into pivotal and complementary ones (each ascending, disjoint, covering
/// `indices`).
struct selection {
  std::vector<token_t> indices;
  std::vector<token_t> pivotal;
  std::vector<token_t> complementary;

  std::size_t size() const noexcept { return indices.size(); }
  friend bool operator==(const selection& a, const selection& b) {
    return a.indices == b.indices && a.pivotal == b.pivotal && a.complementary == b.complementary;
  }
  friend bool operator!=(const selection& a, const selection& b) { return !(a == b); }
};

}  // namespace freepruner

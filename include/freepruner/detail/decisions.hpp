#pragma once
// The SPEC's decisions — quartiles, fence, ranking, ties, budget order — in
// one place. Backends compute the scores; these turn scores into tokens.
// The scalar rules are host-device so a device backend applies the same ones.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"
#include "../options.hpp"
#include "validate.hpp"

namespace freepruner {
namespace detail {

/// SPEC orderings: a larger score first, ties by the smaller token index.
template <class S>
FREEPRUNER_HOST_DEVICE constexpr bool ranks_before(S score_a, index_t a, S score_b, index_t b) noexcept {
  return score_a > score_b || (score_a == score_b && a < b);
}

/// numpy's `_lerp`, exactly (it rounds differently for g >= 0.5).
template <class S>
FREEPRUNER_HOST_DEVICE constexpr S lerp(S a, S b, S g) noexcept {
  return g >= S(0.5) ? b - (b - a) * (S(1) - g) : a + (b - a) * g;
}

/// SPEC "Outliers": numpy's linear quantile t of n sorted values reads the
/// order statistics k and k + 1 (0-based), mixed by g.
FREEPRUNER_HOST_DEVICE inline void quantile_position(std::size_t n, double t, std::size_t& k, double& g) noexcept {
  const double pos = t * static_cast<double>(n - 1);
  k = static_cast<std::size_t>(pos);
  g = pos - static_cast<double>(k);
}

/// The quantile from order statistics a = x_(k) and b = x_(k+1).
template <class S>
FREEPRUNER_HOST_DEVICE constexpr S quantile_value(S a, S b, S g) noexcept {
  return g == S(0) ? a : lerp(a, b, g);
}

/// fence = Q3 + f (Q3 - Q1).
template <class S>
FREEPRUNER_HOST_DEVICE constexpr S fence_value(S q1, S q3, double f) noexcept {
  return q3 + static_cast<S>(f) * (q3 - q1);
}

/// Moves the values of x[lo..hi) below `pivot` to the front, keeping the
/// others after them; returns where they start. A branchless Lomuto: on
/// score vectors std::nth_element's branches mispredict.
/// A backend may pass its own (vectorized) partition to select_kth.
struct scalar_partition {
  template <class S>
  std::size_t operator()(S* x, std::size_t lo, std::size_t hi, S pivot) const {
    std::size_t lt = lo;
    for (std::size_t i = lo; i < hi; ++i) {
      const S v = x[i];
      const bool less = v < pivot;
      x[i] = x[lt];
      x[lt] = v;
      lt += less;
    }
    return lt;
  }
};

/// The loops of `complement_builder` over one score vector, and its
/// partition. A backend may pass vectorized ones: each loop is free of order
/// across j, so every version gives the same results.
struct scalar_loops : scalar_partition {
  /// lo/hi widened to x[from..to); affinity[j] += x[j]; x[from..to) copied to `copy`.
  template <class S>
  static void scan(const S* x, index_t from, index_t to, S* affinity, S* copy, S& lo, S& hi) {
    for (index_t j = from; j < to; ++j) {
      lo = x[j] < lo ? x[j] : lo;
      hi = x[j] > hi ? x[j] : hi;
      affinity[j] += x[j];
      copy[j - from] = x[j];
    }
  }
  /// out[j] |= (x[j] > fence) for j in from..to-1.
  template <class S>
  static void mark_above(const S* x, index_t from, index_t to, S fence, unsigned char* out) {
    for (index_t j = from; j < to; ++j) out[j] |= static_cast<unsigned char>(x[j] > fence);
  }
};

/// Puts the k-th smallest of x[0..n) at x[k], smaller-or-equal values before
/// it and larger-or-equal after: a quickselect on median-of-three pivots.
/// Ties always make progress; after 2 log2(n) rounds std::nth_element
/// finishes, so crafted inputs cannot make it quadratic.
template <class S, class Partition = scalar_partition>
void select_kth(S* x, std::size_t n, std::size_t k, const Partition& partition = {}) {
  std::size_t lo = 0, hi = n, rounds = 0;
  for (std::size_t m = n; m > 1; m >>= 1) rounds += 2;
  while (hi - lo > 8) {
    if (rounds-- == 0) {
      std::nth_element(x + lo, x + k, x + hi);
      return;
    }
    const std::size_t m = hi - lo;
    S a = x[lo + m / 4], b = x[lo + m / 2], c = x[lo + 3 * m / 4];
    if (a > b) std::swap(a, b);
    if (b > c) std::swap(b, c);
    if (a > b) std::swap(a, b);
    const S pivot = b;  // median of three
    const std::size_t lt = partition(x, lo, hi, pivot);
    if (k < lt) {
      hi = lt;
    } else if (lt > lo) {
      lo = lt;
    } else {  // the pivot is the range's minimum: split off its copies
      std::size_t le = lt;
      for (std::size_t i = lt; i < hi; ++i) {
        const S v = x[i];
        const bool equal = !(pivot < v);
        x[i] = x[le];
        x[le] = v;
        le += equal;
      }
      if (k < le) return;  // x[lo..le) all equal the pivot
      lo = le;
    }
  }
  for (std::size_t i = lo + 1; i < hi; ++i) {  // insertion sort of the last few
    const S v = x[i];
    std::size_t j = i;
    for (; j > lo && v < x[j - 1]; --j) x[j] = x[j - 1];
    x[j] = v;
  }
}

/// SPEC "Outliers": fence = Q3 + f (Q3 - Q1) of x[0..n), n >= 1, with
/// numpy's linear quantiles. Reorders x (selection, not a full sort).
template <class S, class Partition = scalar_partition>
S upper_fence(S* x, std::size_t n, double f, const Partition& partition = {}) {
  std::size_t k1 = 0, k3 = 0;
  double w1 = 0, w3 = 0;
  quantile_position(n, 0.25, k1, w1);
  quantile_position(n, 0.75, k3, w3);
  const S g1 = static_cast<S>(w1);
  const S g3 = static_cast<S>(w3);
  // Order statistic k3 and its successor; then k1 and its successor, within [0, k3].
  select_kth(x, n, k3, partition);
  const S a3 = x[k3];
  const S b3 = k3 + 1 < n ? *std::min_element(x + k3 + 1, x + n) : a3;
  if (k1 < k3) select_kth(x, k3, k1, partition);
  const S a1 = x[k1];
  // Successor of k1: the smallest of (k1, k3), else x[k3], else (k1 == k3) b3.
  const S b1 = k1 + 1 < k3 ? *std::min_element(x + k1 + 1, x + k3) : (k1 + 1 == k3 ? a3 : b3);
  return fence_value(quantile_value(a1, b1, g1), quantile_value(a3, b3, g3), f);
}

/// The first min(k, M) candidates of one score vector (indexed by token) in
/// the order of `ranks_before`. Sorted as (score, token) pairs: an index sort
/// reads the scores at random, and the fixed budget sorts once per pivot layer.
template <class S>
void order_candidates(const S* score, const plan& p, std::size_t k, std::vector<token_t>& out) {
  struct keyed {
    S score;
    token_t token;
  };
  std::vector<keyed> keys(static_cast<std::size_t>(p.candidates));
  for (index_t i = p.first; i < p.last; ++i) keys[static_cast<std::size_t>(i - p.first)] = {score[i], static_cast<token_t>(i)};
  auto before = [](const keyed& a, const keyed& b) { return ranks_before(a.score, a.token, b.score, b.token); };
  if (k >= keys.size()) {
    std::sort(keys.begin(), keys.end(), before);
  } else if (k > 0) {  // the first k: selected, then sorted
    const auto top = keys.begin() + static_cast<std::ptrdiff_t>(k);
    std::nth_element(keys.begin(), top - 1, keys.end(), before);
    std::sort(keys.begin(), top - 1, before);
  }
  out.resize(std::min(k, keys.size()));
  for (std::size_t r = 0; r < out.size(); ++r) out[r] = keys[r].token;
}

/// Sorts and removes duplicates.
inline void make_set(std::vector<token_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

/// SPEC step 2: the pivotal set P (ascending) from the contribution degrees
/// of the pivot layers, `degrees[k * N + i]` = r_k[i].
template <class S>
std::vector<token_t> pivotal_from_degrees(const S* degrees, std::size_t layers, const plan& p, index_t pivots_per_layer,
                                          double fence_factor) {
  const auto n = static_cast<std::size_t>(p.tokens);
  const auto m = static_cast<std::size_t>(p.candidates);
  std::vector<token_t> pivots, order;
  std::vector<S> scratch(m);
  for (std::size_t k = 0; k < layers; ++k) {
    const S* r = degrees + k * n;
    if (pivots_per_layer > 0) {  // fixed: top k, ties by smaller index
      const std::size_t top = std::min(m, static_cast<std::size_t>(pivots_per_layer));
      order_candidates(r, p, top, order);
      pivots.insert(pivots.end(), order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top));
      continue;
    }
    std::copy(r + p.first, r + p.last, scratch.begin());  // adaptive: strict upper outliers over C
    const S fence = upper_fence(scratch.data(), m, fence_factor);
    for (index_t i = p.first; i < p.last; ++i)
      if (r[i] > fence) pivots.push_back(static_cast<token_t>(i));
  }
  if (pivots.empty()) {  // no layer has an outlier: the top-1 of each pivot layer
    for (std::size_t k = 0; k < layers; ++k) {
      const S* r = degrees + k * n;
      index_t best = p.first;
      for (index_t i = p.first + 1; i < p.last; ++i)
        if (ranks_before(r[i], i, r[best], best)) best = i;
      pivots.push_back(static_cast<token_t>(best));
    }
  }
  make_set(pivots);
  return pivots;
}

/// SPEC step 3 from the pivots' score vectors, fed one pivot at a time (in
/// ascending pivot order) so a backend can compute them in chunks:
/// O_p = strict upper outliers of v_p over j in C \ {p}; Q = (∪ O_p) \ P;
/// affinity w(j) = Σ_p v_p[j] for j in C \ P (zero elsewhere).
template <class S, class Loops = scalar_loops>
class complement_builder {
 public:
  complement_builder(const std::vector<token_t>& pivots, const plan& p, double fence_factor)
      : plan_(p), fence_factor_(fence_factor),
        is_pivot_(static_cast<std::size_t>(p.tokens), 0), outlier_(static_cast<std::size_t>(p.tokens), 0),
        affinity_(static_cast<std::size_t>(p.tokens), S(0)), scratch_(static_cast<std::size_t>(p.candidates - 1)) {
    for (token_t q : pivots) is_pivot_[static_cast<std::size_t>(q)] = 1;
  }

  /// `v[j]` = v_pivot[j], finite; only j in C is read. Fails if the values
  /// lie too far apart for the quartile arithmetic (see check_spread).
  status add(const S* v, token_t pivot) {
    const index_t first = plan_.first, last = plan_.last;
    // v over C without the pivot's own entry; the spread over all of C (as
    // check_spread); the affinity over C \ {p} (pivots' own are zero at the end).
    S lo = v[pivot], hi = v[pivot];
    loops_.scan(v, first, pivot, affinity_.data(), scratch_.data(), lo, hi);
    loops_.scan(v, pivot + 1, last, affinity_.data(), scratch_.data() + (pivot - first), lo, hi);
    if (auto s = spread_status(lo, hi, "the complementary scores v_p"); !s) return s;
    if (scratch_.empty()) return {};  // M = 1: no entries, no outliers
    const S fence = upper_fence(scratch_.data(), scratch_.size(), fence_factor_, loops_);
    // The pivot's own mark is harmless: pivots never enter Q.
    loops_.mark_above(v, first, last, fence, outlier_.data());
    return {};
  }

  /// Q ascending; `affinity` receives w. Fails if w overflowed.
  status finish(std::vector<token_t>& out, std::vector<S>& affinity) {
    out.clear();
    for (index_t j = plan_.first; j < plan_.last; ++j) {
      const auto k = static_cast<std::size_t>(j);
      if (is_pivot_[k])
        affinity_[k] = S(0);
      else if (outlier_[k])
        out.push_back(static_cast<token_t>(j));
    }
    affinity = std::move(affinity_);
    for (const S w : affinity)
      if (!std::isfinite(static_cast<double>(w)))
        return fail(errc::non_finite, "the affinity of layer ", plan_.complementary_layer,
                    " overflows: sums of these maps leave the double range");
    return {};
  }

 private:
  const plan& plan_;
  double fence_factor_;
  std::vector<unsigned char> is_pivot_, outlier_;
  std::vector<S> affinity_, scratch_;
  Loops loops_;
};

/// SPEC steps 4-5: the kept set of `m` tokens, ascending, with its
/// pivotal/complementary split.
template <class S>
selection kept_set(const S* degrees, std::size_t layers, const std::vector<token_t>& pivots,
                   const std::vector<token_t>& complements, const std::vector<S>& affinity, const plan& p, kept_count m) {
  selection out;
  if (m.is_adaptive()) {  // step 4: K = P ∪ Q
    out.pivotal = pivots;
    out.complementary = complements;
    out.indices.resize(pivots.size() + complements.size());
    std::merge(pivots.begin(), pivots.end(), complements.begin(), complements.end(), out.indices.begin());
    return out;
  }
  const auto budget_size = static_cast<std::size_t>(m.count());
  // 1. P by (best rank over pivot layers, index). Every kept pivot has a
  // best rank below m (each P_l is a top set of its layer), so the layers'
  // orders are walked rank by rank only until m pivots are placed, and only
  // their tops are sorted, twice as deep each time that falls short
  // (full sorts of every layer cost more than the rest of the step).
  std::vector<token_t> kept = pivots;
  if (kept.size() > budget_size) {
    const auto n = static_cast<std::size_t>(p.tokens), all = static_cast<std::size_t>(p.candidates);
    std::vector<unsigned char> state(n, 0);  // 1: pivot, 2: placed
    std::vector<std::vector<token_t>> orders(layers);
    std::vector<token_t> level;
    std::size_t depth = std::min(all, std::max<std::size_t>(16, 2 * budget_size / layers));
    for (;; depth = std::min(all, 2 * depth)) {
      for (token_t t : pivots) state[static_cast<std::size_t>(t)] = 1;
      for (std::size_t k = 0; k < layers; ++k) order_candidates(degrees + k * n, p, depth, orders[k]);
      kept.clear();
      for (std::size_t r = 0; r < depth && kept.size() < budget_size; ++r) {
        level.clear();  // the pivots whose best rank is r, by index
        for (std::size_t k = 0; k < layers; ++k) {
          unsigned char& at = state[static_cast<std::size_t>(orders[k][r])];
          if (at == 1) {
            at = 2;
            level.push_back(orders[k][r]);
          }
        }
        std::sort(level.begin(), level.end());
        level.resize(std::min(level.size(), budget_size - kept.size()));
        kept.insert(kept.end(), level.begin(), level.end());
      }
      if (kept.size() == budget_size || depth == all) break;  // all ranks place every pivot
    }
  }
  out.pivotal = kept;
  // 2. Q, then 3. the remaining candidates, each by affinity, ties by index.
  auto by_affinity = [&affinity](token_t a, token_t b) {
    return ranks_before(affinity[static_cast<std::size_t>(a)], a, affinity[static_cast<std::size_t>(b)], b);
  };
  auto take = [&](std::vector<token_t> group) {
    const std::size_t room = budget_size - kept.size();
    if (room == 0 || group.empty()) return;
    const std::size_t k = std::min(room, group.size());
    std::partial_sort(group.begin(), group.begin() + static_cast<std::ptrdiff_t>(k), group.end(), by_affinity);
    kept.insert(kept.end(), group.begin(), group.begin() + static_cast<std::ptrdiff_t>(k));
  };
  take(complements);
  if (kept.size() < budget_size) {
    std::vector<bool> used(static_cast<std::size_t>(p.tokens), false);
    for (token_t t : kept) used[static_cast<std::size_t>(t)] = true;
    for (token_t t : pivots) used[static_cast<std::size_t>(t)] = true;
    for (token_t t : complements) used[static_cast<std::size_t>(t)] = true;
    std::vector<token_t> rest;
    for (index_t j = p.first; j < p.last; ++j)
      if (!used[static_cast<std::size_t>(j)]) rest.push_back(static_cast<token_t>(j));
    take(std::move(rest));
  }
  out.complementary.assign(kept.begin() + static_cast<std::ptrdiff_t>(out.pivotal.size()), kept.end());
  make_set(out.pivotal);
  make_set(out.complementary);
  out.indices = kept;
  make_set(out.indices);
  return out;
}

}  // namespace detail
}  // namespace freepruner

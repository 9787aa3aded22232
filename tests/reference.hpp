// Independent, deliberately simple float64 reference of the selection
// semantics in SPEC.md ("freepruner selection semantics (v1)").
// Clarity over speed: this is the oracle other code is tested against.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fpref {

enum class budget_kind { adaptive, count, ratio };

struct config {
  int layers = 1, heads = 1, tokens = 1;   // L, H, N
  int prefix = 0, suffix = 0;              // a, b
  budget_kind kind = budget_kind::adaptive;
  double budget_value = 0;                 // m for count, x for ratio
  int pivots_per_layer = 0;                // 0 = adaptive outliers
  bool column = false;                     // false: row complements (default), true: column
  int complementary_layer = -1;            // -1 = last, else 0..L-1
  std::vector<int> pivot_layers;           // empty = all layers
  double fence_factor = 1.5;
};

struct result { std::vector<int> indices, pivotal, complementary; };  // ascending absolute token positions

namespace detail {

// numpy's _lerp: a + (b-a)*g, but b - (b-a)*(1-g) when g >= 0.5.
inline double np_lerp(double a, double b, double g) {
  const double diff = b - a;
  if (g >= 0.5) return b - diff * (1.0 - g);
  return a + diff * g;
}

// numpy.quantile(values, t, method="linear") on an already sorted copy.
inline double np_quantile_linear(const std::vector<double>& sorted, double t) {
  const std::size_t n = sorted.size();
  const double virtual_index = t * static_cast<double>(n - 1);
  const double lo_f = std::floor(virtual_index);
  const double g = virtual_index - lo_f;
  std::size_t lo = static_cast<std::size_t>(lo_f);
  if (lo > n - 1) lo = n - 1;
  std::size_t hi = lo + 1;
  if (hi > n - 1) hi = n - 1;
  return np_lerp(sorted[lo], sorted[hi], g);
}

// Upper outliers: positions k (into values) with values[k] > Q3 + f*(Q3-Q1).
inline std::vector<std::size_t> upper_outliers(const std::vector<double>& values, double f) {
  std::vector<std::size_t> out;
  if (values.empty()) return out;
  std::vector<double> sorted = values;  // full copy
  std::sort(sorted.begin(), sorted.end());
  const double q1 = np_quantile_linear(sorted, 0.25);
  const double q3 = np_quantile_linear(sorted, 0.75);
  const double fence = q3 + f * (q3 - q1);
  for (std::size_t k = 0; k < values.size(); ++k)
    if (values[k] > fence) out.push_back(k);
  return out;
}

// Candidate tokens with the largest score, ties by smaller index; at most k.
// cand and score are parallel (score[t] belongs to token cand[t]).
inline std::vector<int> top_k(const std::vector<int>& cand, const std::vector<double>& score,
                              std::size_t k) {
  std::vector<std::size_t> order;
  for (std::size_t t = 0; t < cand.size(); ++t) order.push_back(t);
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    if (score[x] != score[y]) return score[x] > score[y];
    return cand[x] < cand[y];
  });
  std::vector<int> out;
  for (std::size_t t = 0; t < order.size() && t < k; ++t) out.push_back(cand[order[t]]);
  return out;
}

inline bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

inline void add_unique(std::vector<int>& v, int x) {
  if (!contains(v, x)) v.push_back(x);
}

}  // namespace detail

// maps: A[l][h][i][j] at ((l*H + h)*N + i)*N + j, any finite values. Inputs assumed valid.
inline result select(const std::vector<double>& maps, const config& c) {
  const int L = c.layers, H = c.heads, N = c.tokens;
  const std::size_t NN = static_cast<std::size_t>(N) * static_cast<std::size_t>(N);

  // Candidates C = {a, ..., N-b-1}.
  std::vector<int> cand;
  for (int t = c.prefix; t <= N - c.suffix - 1; ++t) cand.push_back(t);
  const std::size_t M = cand.size();

  // Step 0: head mean, Abar[l][i][j] = (1/H) * sum_h A[l][h][i][j].
  std::vector<double> abar(static_cast<std::size_t>(L) * NN, 0.0);
  for (int l = 0; l < L; ++l) {
    for (std::size_t e = 0; e < NN; ++e) {
      double s = 0.0;
      for (int h = 0; h < H; ++h)
        s += maps[(static_cast<std::size_t>(l) * static_cast<std::size_t>(H) +
                   static_cast<std::size_t>(h)) * NN + e];
      abar[static_cast<std::size_t>(l) * NN + e] = s / static_cast<double>(H);
    }
  }
  auto at = [&](int l, int i, int j) -> double {
    return abar[static_cast<std::size_t>(l) * NN + static_cast<std::size_t>(i) * static_cast<std::size_t>(N) +
                static_cast<std::size_t>(j)];
  };

  std::vector<int> pivot_layers = c.pivot_layers;
  if (pivot_layers.empty())
    for (int l = 0; l < L; ++l) pivot_layers.push_back(l);

  // Step 1: contribution degree r_l[i] = sum_j Abar_l[j][i] - Abar_l[i][i], over candidates.
  std::vector<std::vector<double>> r;  // r[pl][t] for token cand[t]
  for (int l : pivot_layers) {
    std::vector<double> rl;
    for (int i : cand) {
      double s = 0.0;
      for (int j = 0; j < N; ++j) s += at(l, j, i);
      rl.push_back(s - at(l, i, i));
    }
    r.push_back(rl);
  }

  // Step 2: pivotal tokens.
  std::vector<int> P;
  for (const std::vector<double>& rl : r) {
    if (c.pivots_per_layer > 0) {
      for (int p : detail::top_k(cand, rl, static_cast<std::size_t>(c.pivots_per_layer)))
        detail::add_unique(P, p);
    } else {
      for (std::size_t t : detail::upper_outliers(rl, c.fence_factor)) detail::add_unique(P, cand[t]);
    }
  }
  if (P.empty()) {
    for (const std::vector<double>& rl : r)
      for (int p : detail::top_k(cand, rl, 1)) detail::add_unique(P, p);
  }
  std::sort(P.begin(), P.end());

  // Step 3: complementary tokens.
  const int cl = c.complementary_layer < 0 ? L - 1 : c.complementary_layer;
  auto v = [&](int p, int j) -> double { return c.column ? at(cl, j, p) : at(cl, p, j); };
  std::vector<int> Q;
  for (int p : P) {
    std::vector<int> js;
    std::vector<double> vp;
    for (int j : cand) {
      if (j == p) continue;
      js.push_back(j);
      vp.push_back(v(p, j));
    }
    for (std::size_t t : detail::upper_outliers(vp, c.fence_factor))
      if (!detail::contains(P, js[t])) detail::add_unique(Q, js[t]);
  }
  std::sort(Q.begin(), Q.end());

  result res;
  if (c.kind == budget_kind::adaptive) {
    // Step 4.
    res.pivotal = P;
    res.complementary = Q;
    res.indices = P;
    for (int q : Q) res.indices.push_back(q);
    std::sort(res.indices.begin(), res.indices.end());
    return res;
  }

  // Step 5: fixed budget.
  std::size_t m = 0;
  if (c.kind == budget_kind::count) {
    m = static_cast<std::size_t>(c.budget_value);
  } else {
    const double mm = std::floor(c.budget_value * static_cast<double>(M) + 0.5);
    m = mm < 1.0 ? 1 : static_cast<std::size_t>(mm);
  }
  if (m > M) m = M;

  // 1. P by (min over pivot layers of rank_l(i), i).
  std::vector<std::size_t> best_rank;
  for (int i : P) {
    std::size_t best = M;
    for (const std::vector<double>& rl : r) {
      std::size_t ti = 0;
      while (cand[ti] != i) ++ti;
      std::size_t rank = 0;
      for (std::size_t tj = 0; tj < M; ++tj)
        if (rl[tj] > rl[ti] || (rl[tj] == rl[ti] && cand[tj] < i)) ++rank;
      best = std::min(best, rank);
    }
    best_rank.push_back(best);
  }
  std::vector<std::size_t> porder;
  for (std::size_t k = 0; k < P.size(); ++k) porder.push_back(k);
  std::sort(porder.begin(), porder.end(), [&](std::size_t x, std::size_t y) {
    if (best_rank[x] != best_rank[y]) return best_rank[x] < best_rank[y];
    return P[x] < P[y];
  });

  // Affinity w(j) = sum_{p in P} v_p[j] (p ascending), for j not in P.
  auto w = [&](int j) -> double {
    double s = 0.0;
    for (int p : P) s += v(p, j);
    return s;
  };
  auto by_affinity = [&](std::vector<int> set) -> std::vector<int> {
    std::vector<double> ws;
    for (int j : set) ws.push_back(w(j));
    return detail::top_k(set, ws, set.size());
  };
  std::vector<int> rest;
  for (int j : cand)
    if (!detail::contains(P, j) && !detail::contains(Q, j)) rest.push_back(j);

  std::vector<int> order;
  for (std::size_t k : porder) order.push_back(P[k]);
  for (int j : by_affinity(Q)) order.push_back(j);
  for (int j : by_affinity(rest)) order.push_back(j);

  for (std::size_t k = 0; k < m; ++k) {
    res.indices.push_back(order[k]);
    if (detail::contains(P, order[k])) res.pivotal.push_back(order[k]);
    else res.complementary.push_back(order[k]);
  }
  std::sort(res.indices.begin(), res.indices.end());
  std::sort(res.pivotal.begin(), res.pivotal.end());
  std::sort(res.complementary.begin(), res.complementary.end());
  return res;
}

}  // namespace fpref

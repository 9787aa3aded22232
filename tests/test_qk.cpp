// select on queries and keys (qk.hpp) against the materialized path: the
// softmax maps formed in double from the same Q/K values, given to
// freepruner::select.
//
// Inputs have logits within about +-20, as real encoders do (the float
// error of a probability grows with its logits' size).
//
// Tolerances:
//  - degrees r_l and scores v_p: |qk - reference| <= tol * max |reference|
//    over the vector, tol = 1e-5 for float, half and bfloat16 inputs
//    (computed in float; the largest errors measured over many seeds are
//    2.5e-7 for degrees and 2.3e-6 for scores) and 1e-13 for double inputs
//    (computed in double; measured 2e-15).
//  - selections: identical whenever no decision is a near-tie. Every
//    decision of the reference is a comparison of two values; it is a
//    near-tie when their gap is below 2 tol (1 + f) times the largest value
//    of the vector compared, since each side may be off by tol (a fence
//    Q3 + f (Q3 - Q1) by (1 + 2 f) tol). The comparisons: every fence
//    against every value (steps 2 and 3), the k-th degree against the
//    (k+1)-th, the top-1 fallback, the budget's cuts in the affinity order,
//    and the degree order next to a pivot when a fixed budget ranks the
//    pivots. Near-tie draws are redrawn and counted; they must stay a small
//    minority (measured: about 5%).

#include <catch2/catch.hpp>

#include <freepruner/freepruner.hpp>
#include <freepruner/qk.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

namespace fp = freepruner;
using fp::index_t;
using Catch::Matchers::Contains;

namespace {

template <class E>
double value_tolerance() {
  return std::is_same<E, double>::value ? 1e-13 : 1e-5;
}

// Q and K of L layers, held as doubles already rounded to element type E,
// and stored as E in one of four layouts.
enum class layout { heads_major, tokens_major, padded, dim_strided };

using fptest::element;

template <class E>
struct qk_data {
  int layers = 1, heads = 1, tokens = 1, dim = 1;
  layout kind = layout::heads_major;
  double scale = 1;
  std::vector<double> q, k;      // exact stored values, [l][h][n][t]
  std::vector<E> q_store, k_store;  // per layer, in `kind`'s layout
  std::size_t layer_size = 0;

  double& at(std::vector<double>& x, int l, int h, int n, int t) {
    return x[((static_cast<std::size_t>(l) * heads + h) * tokens + n) * dim + t];
  }
  double get(const std::vector<double>& x, int l, int h, int n, int t) const {
    return x[((static_cast<std::size_t>(l) * heads + h) * tokens + n) * dim + t];
  }

  // Element offset of (h, n, t) inside one layer, and the strides.
  std::array<index_t, 3> strides() const {
    const index_t H = heads, N = tokens, d = dim;
    switch (kind) {
      case layout::heads_major: return {N * d, d, 1};
      case layout::tokens_major: return {d, H * d, 1};
      case layout::padded: return {d + 2, H * (d + 2) + 1, 1};  // [N][H][d+2], one spare per token
      case layout::dim_strided: return {d * N, 1, N};           // [H][d][N]
    }
    return {0, 0, 0};
  }

  void store() {
    const auto s = strides();
    layer_size = static_cast<std::size_t>(s[0] * heads + s[1] * tokens + s[2] * dim);
    q_store.assign(layer_size * static_cast<std::size_t>(layers), element<E>(-7.0));
    k_store = q_store;
    for (int l = 0; l < layers; ++l)
      for (int h = 0; h < heads; ++h)
        for (int n = 0; n < tokens; ++n)
          for (int t = 0; t < dim; ++t) {
            const std::size_t off = layer_size * static_cast<std::size_t>(l) +
                                    static_cast<std::size_t>(h * s[0] + n * s[1] + t * s[2]);
            q_store[off] = element<E>(get(q, l, h, n, t));
            k_store[off] = element<E>(get(k, l, h, n, t));
          }
  }

  std::vector<fp::qk_layer<const E>> view() const {
    std::vector<fp::qk_layer<const E>> out;
    const std::array<index_t, 3> e{heads, tokens, dim};
    for (int l = 0; l < layers; ++l) {
      const fp::qk_tensor<const E> qt(q_store.data() + layer_size * static_cast<std::size_t>(l), e, strides());
      const fp::qk_tensor<const E> kt(k_store.data() + layer_size * static_cast<std::size_t>(l), e, strides());
      out.push_back(fp::qk_layer<const E>{qt, kt, scale});
    }
    return out;
  }

  // The softmax maps in double, [l][h][i][j].
  std::vector<double> maps() const {
    const auto N = static_cast<std::size_t>(tokens);
    std::vector<double> a(static_cast<std::size_t>(layers) * heads * N * N), s(N);
    for (int l = 0; l < layers; ++l)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < tokens; ++i) {
          double top = -std::numeric_limits<double>::infinity();
          for (int j = 0; j < tokens; ++j) {
            double dot = 0;
            for (int t = 0; t < dim; ++t) dot += get(q, l, h, i, t) * get(k, l, h, j, t);
            s[static_cast<std::size_t>(j)] = scale * dot;
            top = std::max(top, s[static_cast<std::size_t>(j)]);
          }
          double sum = 0;
          for (auto& x : s) sum += x = std::exp(x - top);
          double* row = &a[((static_cast<std::size_t>(l) * heads + h) * N + static_cast<std::size_t>(i)) * N];
          for (std::size_t j = 0; j < N; ++j) row[j] = s[j] / sum;
        }
    return a;
  }
};

// Rounds x to E (as the stored value will be).
template <class E>
double rounded(double x) {
  return static_cast<double>(static_cast<float>(element<E>(x)));
}
template <>
double rounded<double>(double x) {
  return x;
}

// Random Q/K shaped like an encoder's: per layer-head a shared direction u;
// queries lean on u, and about 12% of the keys ("sinks") carry a large
// component along u, so degrees have outliers; `flat` leaves them out.
// Logits stay within about +-20, as in real encoders.
template <class E>
qk_data<E> random_qk(int layers, int heads, int tokens, int dim, layout kind, bool flat) {
  qk_data<E> x;
  x.layers = layers;
  x.heads = heads;
  x.tokens = tokens;
  x.dim = dim;
  x.kind = kind;
  x.scale = fptest::uniform(0.5, 1.5) / std::sqrt(static_cast<double>(dim));
  if (fptest::uniform(0, 1) < 0.5) x.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const std::size_t size = static_cast<std::size_t>(layers) * heads * tokens * dim;
  x.q.assign(size, 0.0);
  x.k.assign(size, 0.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> u(static_cast<std::size_t>(dim));
  // Components along u add lean * sink to a logit; the others about spread^2.
  const double along = 1.0 / std::sqrt(x.scale), across = std::pow(static_cast<double>(dim), -0.25) / std::sqrt(x.scale);
  for (int l = 0; l < layers; ++l)
    for (int h = 0; h < heads; ++h) {
      double norm = 0;
      for (auto& c : u) {
        c = normal(fptest::rng());
        norm += c * c;
      }
      for (auto& c : u) c /= std::sqrt(norm);
      const double spread = fptest::uniform(0.5, 1.5), lean = fptest::uniform(0.5, 2.0);
      for (int n = 0; n < tokens; ++n) {
        const double sink = flat ? 0.0 : (fptest::uniform(0, 1) < 0.12 ? fptest::uniform(2.0, 5.0) : 0.0);
        for (int t = 0; t < dim; ++t) {
          const double ut = u[static_cast<std::size_t>(t)] * along;
          x.at(x.q, l, h, n, t) = rounded<E>(spread * across * normal(fptest::rng()) + lean * ut);
          x.at(x.k, l, h, n, t) = rounded<E>(spread * across * normal(fptest::rng()) + sink * ut);
        }
      }
    }
  x.store();
  return x;
}

layout random_layout() { return static_cast<layout>(fptest::uniform_int(0, 3)); }
int random_dim() {
  static const int dims[] = {1, 2, 3, 8, 16, 33, 64};
  return dims[fptest::uniform_int(0, 6)];
}

// Degrees of the pivot layers and the decisions of the reference, each
// with its margin; the smallest margin relative to the values it compares.
struct margins {
  double tolerance = 1e-5;
  double fence_factor = 1.5;
  bool near_tie = false;
  // A comparison of two values (one a fence when `fence`) of a vector whose
  // largest magnitude is `scale`.
  void add(double gap, double scale, bool fence = false) {
    const double allowed = (fence ? 2 + 2 * fence_factor : 2) * tolerance * scale;
    near_tie = near_tie || std::abs(gap) < allowed;
  }
};

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::abs(v));
  return m;
}

double fence_of(std::vector<double> x, double f) {
  std::sort(x.begin(), x.end());
  const double q1 = fpref::detail::np_quantile_linear(x, 0.25), q3 = fpref::detail::np_quantile_linear(x, 0.75);
  return q3 + f * (q3 - q1);
}

// Descending by value, ties by smaller token.
std::vector<int> ordered(const std::vector<int>& tokens, const std::vector<double>& value) {
  std::vector<int> order(tokens.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const auto sa = static_cast<std::size_t>(a), sb = static_cast<std::size_t>(b);
    return value[sa] > value[sb] || (value[sa] == value[sb] && tokens[sa] < tokens[sb]);
  });
  return order;
}

// True when a decision of the reference selection is a near-tie for values
// that may be off by `tolerance` times their vector's largest magnitude.
bool near_tie(const fp::attention_view<const double>& v, const fp::options& o, const fp::budget& b, double tolerance) {
  const index_t L = v.layers(), N = v.tokens(), H = v.heads();
  std::vector<int> cand;
  for (index_t t = o.prefix_tokens; t < N - o.suffix_tokens; ++t) cand.push_back(static_cast<int>(t));
  const std::size_t M = cand.size();
  std::vector<index_t> pivot_layers = o.pivot_layers;
  if (pivot_layers.empty())
    for (index_t l = 0; l < L; ++l) pivot_layers.push_back(l);
  for (auto& l : pivot_layers) l = l < 0 ? L - 1 : l;
  margins m;
  m.tolerance = tolerance;
  m.fence_factor = o.fence_factor;
  std::vector<std::vector<double>> degrees, over_c;
  bool any_outlier = false;
  for (index_t l : pivot_layers) {
    degrees.push_back(fp::contribution_degree(v, l));
    std::vector<double> x;
    for (int t : cand) x.push_back(degrees.back()[static_cast<std::size_t>(t)]);
    over_c.push_back(x);
    const double scale = max_abs(x);
    if (o.pivots_per_layer > 0) {
      const auto k = static_cast<std::size_t>(o.pivots_per_layer);
      if (k < M) {
        const auto order = ordered(cand, x);
        m.add(x[static_cast<std::size_t>(order[k - 1])] - x[static_cast<std::size_t>(order[k])], scale);
      }
      any_outlier = true;
    } else {
      const double fence = fence_of(x, o.fence_factor);
      for (double y : x) {
        if (y != fence) m.add(y - fence, scale, true);  // y == fence: the fence is y itself, in every path
        any_outlier = any_outlier || y > fence;
      }
    }
  }
  if (!any_outlier && M >= 2)  // the top-1 fallback
    for (const auto& x : over_c) {
      const auto order = ordered(cand, x);
      m.add(x[static_cast<std::size_t>(order[0])] - x[static_cast<std::size_t>(order[1])], max_abs(x));
    }
  const auto pivots = fp::pivotal_tokens(degrees, o);
  auto is_pivot = [&](int t) { return std::binary_search(pivots.begin(), pivots.end(), t); };
  // Step 3: every pivot's fence against every score.
  const index_t c = o.complementary_layer < 0 ? L - 1 : o.complementary_layer;
  for (fp::token_t p : pivots) {
    std::vector<double> s;
    for (int j : cand) {
      if (j == p) continue;
      double sum = 0;
      for (index_t h = 0; h < H; ++h) sum += o.complementary_from == fp::direction::row ? v(c, h, p, j) : v(c, h, j, p);
      s.push_back(sum / static_cast<double>(H));
    }
    if (s.empty()) continue;
    const double fence = fence_of(s, o.fence_factor), scale = max_abs(s);
    for (double y : s)
      if (y != fence) m.add(y - fence, scale, true);
  }
  // Step 5: the cuts a fixed budget makes.
  const auto kept = fp::kept_tokens(b, N, o);
  if (!kept) return m.near_tie;
  const auto budget = static_cast<std::size_t>(*kept);
  if (pivots.size() > budget)  // pivots ranked: rank swaps that involve a pivot
    for (const auto& x : over_c) {
      const auto order = ordered(cand, x);
      for (std::size_t r = 0; r + 1 < order.size(); ++r) {
        const auto a = static_cast<std::size_t>(order[r]), b2 = static_cast<std::size_t>(order[r + 1]);
        if (is_pivot(cand[a]) || is_pivot(cand[b2])) m.add(x[a] - x[b2], max_abs(x));
      }
    }
  const auto comps = fp::complementary_tokens(v, pivots, o);
  std::vector<int> q_set(comps.tokens.begin(), comps.tokens.end()), rest;
  for (int j : cand)
    if (!is_pivot(j) && !std::binary_search(comps.tokens.begin(), comps.tokens.end(), j)) rest.push_back(j);
  double w_scale = 0;
  for (int j : cand)
    if (!is_pivot(j)) w_scale = std::max(w_scale, std::abs(comps.affinity[static_cast<std::size_t>(j)]));
  auto cut = [&](const std::vector<int>& group, std::size_t room) {
    if (room == 0 || room >= group.size()) return;
    std::vector<double> w;
    for (int j : group) w.push_back(comps.affinity[static_cast<std::size_t>(j)]);
    const auto order = ordered(group, w);
    m.add(w[static_cast<std::size_t>(order[room - 1])] - w[static_cast<std::size_t>(order[room])], w_scale);
  };
  const std::size_t room = budget - std::min(budget, pivots.size());
  cut(q_set, room);
  if (room > q_set.size()) cut(rest, room - q_set.size());
  return m.near_tie;
}

struct tally {
  int compared = 0, redrawn = 0;
};

template <class E>
void check_against_maps(int trials, tally& count) {
  while (count.compared < trials) {
    const fpref::config c = fptest::random_config();
    const bool flat = fptest::uniform_int(0, 5) == 0;
    const auto x = random_qk<E>(c.layers, c.heads, c.tokens, random_dim(), random_layout(), flat);
    const auto maps = x.maps();
    const fp::attention_view<const double> v(maps.data(), c.layers, c.heads, c.tokens);
    const auto o = fptest::options_of(c);
    const auto b = fptest::budget_of(c);
    if (near_tie(v, o, b, value_tolerance<E>())) {
      ++count.redrawn;
      continue;
    }
    ++count.compared;
    const auto layers = x.view();
    INFO(fptest::describe(c) << " dim=" << x.dim << " layout=" << static_cast<int>(x.kind) << " scale=" << x.scale);
    const auto want = fp::select(v, b, o);
    const auto got = fp::select(layers, b, o);
    REQUIRE(got.indices == want.indices);
    REQUIRE(got.pivotal == want.pivotal);
    REQUIRE(got.complementary == want.complementary);
  }
}

template <class E>
void check_random(int trials) {
  tally count;
  check_against_maps<E>(trials, count);
  INFO("redrawn " << count.redrawn << " of " << count.compared + count.redrawn);
  CHECK(count.redrawn * 4 <= count.compared);  // near-ties stay rare
}

}  // namespace

TEST_CASE("qk select equals select on the double maps: float", "[qk][reference]") { check_random<float>(800); }
TEST_CASE("qk select equals select on the double maps: double", "[qk][reference]") { check_random<double>(300); }
TEST_CASE("qk select equals select on the double maps: half", "[qk][reference]") { check_random<Eigen::half>(300); }
TEST_CASE("qk select equals select on the double maps: bfloat16", "[qk][reference]") {
  check_random<Eigen::bfloat16>(300);
}

namespace {

// Token counts that take several GEMM blocks, with a short last one: the
// degrees within tolerance, and (double, whose near-ties are 1e-13 wide even
// among a thousand values) the selection.
template <class E>
void check_many_blocks() {
  for (int tokens : {300, 577, 1100}) {
    const int L = fptest::uniform_int(1, 2), H = fptest::uniform_int(1, 2), d = fptest::uniform_int(1, 12);
    const auto x = random_qk<E>(L, H, tokens, d, random_layout(), false);
    const auto maps = x.maps();
    const fp::attention_view<const double> v(maps.data(), L, H, tokens);
    INFO("N=" << tokens << " L=" << L << " H=" << H << " d=" << d << " layout=" << static_cast<int>(x.kind));
    const auto layers = x.view();
    std::vector<double> r(static_cast<std::size_t>(tokens));
    REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[0], "layers[0]", r.data()).ok());
    const auto want = fp::contribution_degree(v, 0);
    for (int i = 0; i < tokens; ++i)
      REQUIRE(std::abs(r[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]) <=
              value_tolerance<E>() * max_abs(want));
    if (!std::is_same<E, double>::value) continue;
    int compared = 0;
    for (int trial = 0; trial < 6; ++trial) {
      fp::options o;
      o.prefix_tokens = fptest::uniform_int(0, 1);
      o.suffix_tokens = fptest::uniform_int(0, 1);
      o.complementary_from = trial % 2 ? fp::direction::row : fp::direction::column;
      const fp::budget b = trial < 3 ? fp::budget::adaptive() : fp::budget::ratio(fptest::uniform(0.1, 0.9));
      if (near_tie(v, o, b, value_tolerance<E>())) continue;
      ++compared;
      REQUIRE(fp::select(layers, b, o) == fp::select(v, b, o));
    }
    CHECK(compared >= 2);  // near-ties are judged against the vector's largest value: spiky rows have some
  }
}

}  // namespace

TEST_CASE("qk: several blocks per head (N = 300, 577, 1100)", "[qk][reference]") {
  check_many_blocks<float>();
  check_many_blocks<double>();
  check_many_blocks<Eigen::bfloat16>();
}

namespace {

template <class E>
void check_degrees_and_scores(int trials) {
  double worst = 0, worst_score = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const int L = fptest::uniform_int(1, 2), H = fptest::uniform_int(1, 4), N = fptest::uniform_int(1, 90);
    const auto x = random_qk<E>(L, H, N, random_dim(), random_layout(), false);
    const auto maps = x.maps();
    const fp::attention_view<const double> v(maps.data(), L, H, N);
    const auto layers = x.view();
    const int l = fptest::uniform_int(0, L - 1);
    INFO("L=" << L << " H=" << H << " N=" << N << " dim=" << x.dim << " layout=" << static_cast<int>(x.kind));
    std::vector<double> r(static_cast<std::size_t>(N));
    REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[static_cast<std::size_t>(l)], "layers[l]", r.data()).ok());
    const auto want = fp::contribution_degree(v, l);
    const double scale = std::max(max_abs(want), 1e-300);
    for (int i = 0; i < N; ++i) {
      const double err = std::abs(r[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]) / scale;
      worst = std::max(worst, err);
      REQUIRE(err <= value_tolerance<E>());
    }
    // Scores of a few pivots, both directions, against the head mean.
    std::vector<fp::token_t> pivots;
    for (int p = 0; p < N; p += fptest::uniform_int(1, 9)) pivots.push_back(p);
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      std::vector<double> s;
      REQUIRE(fp::detail::cpu::qk::pivot_scores(layers[static_cast<std::size_t>(l)], "layers[l]", pivots, 0, N, dir, s)
                  .ok());
      for (std::size_t k = 0; k < pivots.size(); ++k) {
        std::vector<double> ref(static_cast<std::size_t>(N));
        for (int j = 0; j < N; ++j) {
          for (int h = 0; h < H; ++h)
            ref[static_cast<std::size_t>(j)] += dir == fp::direction::row ? v(l, h, pivots[k], j) : v(l, h, j, pivots[k]);
          ref[static_cast<std::size_t>(j)] /= H;
        }
        const double top = max_abs(ref);
        for (int j = 0; j < N; ++j) {
          const double err =
              std::abs(s[k * static_cast<std::size_t>(N) + static_cast<std::size_t>(j)] - ref[static_cast<std::size_t>(j)]) / top;
          worst_score = std::max(worst_score, err);
          REQUIRE(err <= value_tolerance<E>());
        }
      }
    }
  }
  // The measured errors, for the record (-s shows them).
  SUCCEED("largest relative error: degrees " << worst << ", scores " << worst_score);
}

}  // namespace

TEST_CASE("qk degrees and scores are within the stated tolerance of float64", "[qk][reference]") {
  check_degrees_and_scores<float>(60);
  check_degrees_and_scores<double>(30);
  check_degrees_and_scores<Eigen::half>(30);
  check_degrees_and_scores<Eigen::bfloat16>(30);
}

TEST_CASE("qk: the three layer operations agree to the bit", "[qk][stream]") {
  // Shapes where key counts leave every GEMM remainder, several blocks,
  // and a depth past one cache block (d = 300).
  const int shapes[][3] = {{1, 1, 1}, {2, 2, 1}, {5, 3, 4}, {23, 2, 8}, {47, 1, 64}, {49, 2, 33},
                           {77, 3, 16}, {130, 2, 64}, {300, 1, 64}, {577, 2, 64}, {61, 1, 300}, {1500, 1, 4}};
  for (const auto& shape : shapes) {
    for (int type = 0; type < 2; ++type) {
      const int N = shape[0], H = shape[1], d = shape[2];
      INFO("N=" << N << " H=" << H << " d=" << d << " type=" << type);
      auto run = [&](auto tag) {
        using E = decltype(tag);
        const auto x = random_qk<E>(1, H, N, d, random_layout(), false);
        const auto layer = x.view()[0];
        std::vector<double> mean(static_cast<std::size_t>(N) * N);
        REQUIRE(fp::detail::cpu::qk::head_mean(layer, "l", mean.data()).ok());
        // Pivots at random positions, in random order, so each pivot row
        // sits at another place in its GEMM than in head_mean's.
        std::vector<fp::token_t> pivots;
        for (int p = 0; p < N; ++p)
          if (fptest::uniform(0, 1) < 0.3 || p == N - 1) pivots.push_back(p);
        std::shuffle(pivots.begin(), pivots.end(), fptest::rng());
        const int first = fptest::uniform_int(0, N - 1), last = fptest::uniform_int(first + 1, N);
        std::vector<double> rows, cols;
        REQUIRE(fp::detail::cpu::qk::pivot_scores(layer, "l", pivots, 0, N, fp::direction::row, rows).ok());
        REQUIRE(fp::detail::cpu::qk::pivot_scores(layer, "l", pivots, first, last, fp::direction::column, cols).ok());
        const auto n = static_cast<std::size_t>(N);
        // select's chunks (2^21 / N pivots: two for N = 1500), one pivot at a time.
        std::vector<fp::token_t> ascending(pivots);
        std::sort(ascending.begin(), ascending.end());
        std::vector<double> buffer;
        std::size_t seen = 0;
        for (auto dir : {fp::direction::row, fp::direction::column})
          REQUIRE(fp::detail::cpu::qk::for_each_pivot_scores(
                      layer, "l", ascending, first, last, dir, buffer,
                      [&](fp::token_t p, const double* v) {
                        const auto pp = static_cast<std::size_t>(p);
                        for (std::size_t j = static_cast<std::size_t>(first); j < static_cast<std::size_t>(last); ++j)
                          REQUIRE(v[j] == (dir == fp::direction::row ? mean[pp * n + j] : mean[j * n + pp]));
                        ++seen;
                        return fp::status{};
                      })
                      .ok());
        REQUIRE(seen == 2 * pivots.size());
        for (std::size_t k = 0; k < pivots.size(); ++k)
          for (std::size_t j = 0; j < n; ++j) {
            const auto p = static_cast<std::size_t>(pivots[k]);
            REQUIRE(rows[k * n + j] == mean[p * n + j]);
            const bool in_c = static_cast<index_t>(j) >= first && static_cast<index_t>(j) < last;
            REQUIRE(cols[k * n + j] == (in_c ? mean[j * n + p] : 0.0));
          }
      };
      if (type == 0)
        run(float{});
      else
        run(Eigen::half{});
    }
  }
}

TEST_CASE("qk: every SIMD level gives the same floats and the same selection", "[qk][simd]") {
  // The kernels' paths (qk_kernels.hpp) against the scalar one: head
  // means, degrees and both directions' scores equal to the bit, on shapes
  // with every key remainder mod 16, row counts that leave a partial group
  // of 8, several blocks, d = 1 and a depth past 64.
  namespace cpu = fp::detail::cpu;
  struct restore {
    ~restore() { cpu::simd_cap().store(-1); }
  } guard;
  const int shapes[][3] = {{1, 1, 1}, {2, 2, 1}, {5, 3, 4}, {17, 2, 8}, {23, 2, 8}, {47, 1, 64}, {49, 2, 33},
                           {130, 2, 64}, {300, 1, 64}, {577, 2, 64}, {61, 1, 300}, {1500, 1, 4}};
  for (const auto& shape : shapes)
    for (int type = 0; type < 3; ++type) {
      const int N = shape[0], H = shape[1], d = shape[2];
      INFO("N=" << N << " H=" << H << " d=" << d << " type=" << type);
      auto run = [&](auto tag) {
        using E = decltype(tag);
        const auto x = random_qk<E>(2, H, N, d, random_layout(), false);
        const auto layers = x.view();
        std::vector<fp::token_t> pivots;
        for (int p = 0; p < N; ++p)
          if (fptest::uniform(0, 1) < 0.3 || p == N - 1) pivots.push_back(p);
        const int first = fptest::uniform_int(0, N - 1), last = fptest::uniform_int(first + 1, N);
        fp::options o;
        o.prefix_tokens = N > 2 ? 1 : 0;
        std::vector<double> want_mean, want_degrees, want_rows, want_cols;
        fp::selection want_selection;
        for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
          cpu::simd_cap().store(level);
          INFO("SIMD level cap " << level);
          std::vector<double> mean(static_cast<std::size_t>(N) * N), degrees(static_cast<std::size_t>(N)), rows, cols;
          REQUIRE(fp::detail::cpu::qk::head_mean(layers[0], "l", mean.data()).ok());
          REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[1], "l", degrees.data()).ok());
          REQUIRE(fp::detail::cpu::qk::pivot_scores(layers[0], "l", pivots, 0, N, fp::direction::row, rows).ok());
          REQUIRE(
              fp::detail::cpu::qk::pivot_scores(layers[1], "l", pivots, first, last, fp::direction::column, cols).ok());
          const fp::selection got = fp::select(layers, fp::budget::ratio(0.5), o);
          if (level == 0) {
            want_mean = mean;
            want_degrees = degrees;
            want_rows = rows;
            want_cols = cols;
            want_selection = got;
            continue;
          }
          REQUIRE(mean == want_mean);
          REQUIRE(degrees == want_degrees);
          REQUIRE(rows == want_rows);
          REQUIRE(cols == want_cols);
          REQUIRE(got == want_selection);
        }
      };
      if (type == 0)
        run(float{});
      else if (type == 1)
        run(Eigen::half{});
      else
        run(double{});
    }
}

TEST_CASE("qk: both layouts and the strided ones give one answer", "[qk][view]") {
  for (int trial = 0; trial < 40; ++trial) {
    const fpref::config c = fptest::random_config();
    const int d = random_dim();
    auto x = random_qk<float>(c.layers, c.heads, c.tokens, d, layout::heads_major, false);
    const auto want = fp::select(x.view(), fptest::budget_of(c), fptest::options_of(c));
    for (auto kind : {layout::tokens_major, layout::padded, layout::dim_strided}) {
      x.kind = kind;
      x.store();
      INFO(fptest::describe(c) << " dim=" << d << " layout=" << static_cast<int>(kind));
      REQUIRE(fp::select(x.view(), fptest::budget_of(c), fptest::options_of(c)) == want);
    }
  }
}

TEST_CASE("qk: heads_major and tokens_major address what they say", "[qk][view]") {
  std::vector<float> buffer(2 * 3 * 4);
  std::iota(buffer.begin(), buffer.end(), 0.0f);
  const auto hm = fp::qk_tensor<const float>::heads_major(buffer.data(), 2, 3, 4);
  const auto tm = fp::qk_tensor<const float>::tokens_major(buffer.data(), 2, 3, 4);
  REQUIRE(hm(1, 2, 3) == 1 * 12 + 2 * 4 + 3);  // [H][N][d]
  REQUIRE(tm(1, 2, 3) == 2 * 8 + 1 * 4 + 3);   // [N][H][d] = ggml [d, H, N]
  REQUIRE(hm.heads() == 2);
  REQUIRE(hm.tokens() == 3);
  REQUIRE(hm.dim() == 4);
  const fp::qk_tensor<float> mutable_view = fp::qk_tensor<float>::heads_major(buffer.data(), 2, 3, 4);
  const fp::qk_tensor<const float> converted = mutable_view;
  REQUIRE(converted.data() == buffer.data());
  REQUIRE(fp::make_qk_layer(hm, hm).scale == Approx(0.5));
  REQUIRE(fp::make_qk_layer(hm, hm, 1.0).scale == 1.0);
}

TEST_CASE("qk: the scale is the softmax's (Hugging Face's pre-scaled q uses 1)", "[qk]") {
  for (int trial = 0; trial < 20; ++trial) {
    const fpref::config c = fptest::random_config();
    auto x = random_qk<double>(c.layers, c.heads, c.tokens, 16, layout::tokens_major, false);
    x.scale = 0.25;
    const auto want = fp::select(x.view(), fptest::budget_of(c), fptest::options_of(c));
    for (auto& value : x.q) value *= 0.25;  // q already scaled, scale 1: the same maps
    x.scale = 1;
    x.store();
    INFO(fptest::describe(c));
    REQUIRE(fp::select(x.view(), fptest::budget_of(c), fptest::options_of(c)) == want);
  }
}

TEST_CASE("qk: edges (one token, one candidate, one layer, one head, dim 1)", "[qk][edges]") {
  SECTION("N = 1") {
    auto x = random_qk<float>(1, 1, 1, 1, layout::heads_major, false);
    for (auto b : {fp::budget::adaptive(), fp::budget::count(3), fp::budget::ratio(0.1)}) {
      const auto s = fp::select(x.view(), b);
      REQUIRE(s.indices == std::vector<fp::token_t>{0});
      REQUIRE(s.pivotal == std::vector<fp::token_t>{0});
    }
  }
  SECTION("one candidate left by prefix and suffix") {
    auto x = random_qk<Eigen::bfloat16>(2, 3, 5, 4, layout::tokens_major, false);
    fp::options o;
    o.prefix_tokens = 3;
    o.suffix_tokens = 1;
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      o.complementary_from = dir;
      REQUIRE(fp::select(x.view(), fp::budget::adaptive(), o).indices == std::vector<fp::token_t>{3});
    }
  }
  SECTION("one layer, one head, dim 1, every budget against the maps") {
    tally count;
    for (int trial = 0; trial < 60; ++trial) {
      auto x = random_qk<double>(1, 1, fptest::uniform_int(2, 40), 1, random_layout(), false);
      const auto maps = x.maps();
      const fp::attention_view<const double> v(maps.data(), 1, 1, x.tokens);
      fp::options o;
      o.prefix_tokens = fptest::uniform_int(0, 1);
      o.complementary_from = trial % 2 ? fp::direction::row : fp::direction::column;
      const fp::budget b = trial % 3 == 0 ? fp::budget::adaptive()
                                          : (trial % 3 == 1 ? fp::budget::count(fptest::uniform_int(1, 10))
                                                            : fp::budget::ratio(fptest::uniform(0.05, 1.0)));
      if (near_tie(v, o, b, value_tolerance<double>())) {
        ++count.redrawn;
        continue;
      }
      ++count.compared;
      REQUIRE(fp::select(x.view(), b, o) == fp::select(v, b, o));
    }
    CHECK(count.compared >= 30);
  }
}

TEST_CASE("qk: a CLIP-like layer pair (N = 197, 12 heads, d = 64, CLS prefix)", "[qk][reference]") {
  tally count;
  for (int trial = 0; trial < 3 && count.redrawn < 20; ++trial) {
    const auto x = random_qk<float>(2, 12, 197, 64, layout::tokens_major, false);
    const auto maps = x.maps();
    const fp::attention_view<const double> v(maps.data(), 2, 12, 197);
    fp::options o;
    o.prefix_tokens = 1;
    o.complementary_from = trial == 1 ? fp::direction::column : fp::direction::row;
    const fp::budget b = trial == 2 ? fp::budget::ratio(0.5) : fp::budget::adaptive();
    if (near_tie(v, o, b, value_tolerance<float>())) {
      ++count.redrawn;
      --trial;
      continue;
    }
    REQUIRE(fp::select(x.view(), b, o) == fp::select(v, b, o));
  }
}

// ---------------------------------------------------------------------------
// Bad input.

namespace {

template <class E = float>
qk_data<E> small_qk(int layers = 2, int heads = 2, int tokens = 6, int dim = 3) {
  return random_qk<E>(layers, heads, tokens, dim, layout::heads_major, false);
}

template <class E>
void expect_error(const std::vector<fp::qk_layer<const E>>& layers, fp::errc code, const std::string& text,
                  const fp::options& o = {}, const fp::budget& b = fp::budget::adaptive()) {
  fp::selection out;
  out.indices = {1};
  const fp::status s = fp::try_select(layers, b, o, out);
  INFO(s.message());
  REQUIRE(!s.ok());
  REQUIRE(s.code() == code);
  REQUIRE_THAT(s.message(), Contains(text));
  REQUIRE(out.indices.empty());
  try {
    (void)fp::select(layers, b, o);
    FAIL("select did not throw");
  } catch (const fp::error& e) {
    REQUIRE(e.code() == code);
    REQUIRE(std::string(e.what()) == s.message());
  }
}

}  // namespace

TEST_CASE("qk: bad shapes, scale, data and options are rejected by name", "[qk][errors]") {
  const auto x = small_qk();
  const auto good = x.view();
  REQUIRE_NOTHROW(fp::select(good));

  expect_error<float>({}, fp::errc::invalid_shape, "layers: empty");

  auto layers = good;
  layers[1].q = fp::qk_tensor<const float>(x.q_store.data(), {2, 0, 3}, {18, 3, 1});
  expect_error(layers, fp::errc::invalid_shape, "layers[1].q: tokens = 0 (must be >= 1)");
  layers = good;
  layers[0].k = fp::qk_tensor<const float>(x.k_store.data(), {-1, 6, 3}, {18, 3, 1});
  expect_error(layers, fp::errc::invalid_shape, "layers[0].k: heads = -1 (must be >= 1)");
  layers = good;
  layers[0].k = fp::qk_tensor<const float>(x.k_store.data(), {2, 6, 0}, {18, 3, 1});
  expect_error(layers, fp::errc::invalid_shape, "layers[0].k: dim = 0 (must be >= 1)");
  layers = good;
  layers[1].k = fp::qk_tensor<const float>(x.k_store.data(), {2, 5, 3}, {18, 3, 1});
  expect_error(layers, fp::errc::invalid_shape, "layers[1]: q is [2, 6, 3] but k is [2, 5, 3]");
  layers = good;
  layers[1].q = fp::qk_tensor<const float>(x.q_store.data(), {2, 5, 3}, {18, 3, 1});
  layers[1].k = layers[1].q;
  expect_error(layers, fp::errc::invalid_shape, "layers[1]: tokens = 5 but layers[0] has tokens = 6");

  for (double scale : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    layers = good;
    layers[1].scale = scale;
    expect_error(layers, fp::errc::invalid_option, "layers[1].scale = ");
  }
  layers = good;
  layers[1].scale = -2;
  expect_error(layers, fp::errc::invalid_option, "layers[1].scale = -2 (must be finite and > 0");

  layers = good;
  layers[1].q = fp::qk_tensor<const float>(nullptr, {2, 6, 3}, {18, 3, 1});
  expect_error(layers, fp::errc::null_data, "layers[1].q: data is null with shape [2, 6, 3]");
  layers = good;
  layers[0].k = fp::qk_tensor<const float>(nullptr, {2, 6, 3}, {18, 3, 1});
  expect_error(layers, fp::errc::null_data, "layers[0].k: data is null");

  fp::options o;
  o.prefix_tokens = 6;
  expect_error(good, fp::errc::invalid_tokens, "options.prefix_tokens + options.suffix_tokens = 6 + 0", o);
  o = {};
  o.complementary_layer = 2;
  expect_error(good, fp::errc::invalid_layer, "options.complementary_layer = 2", o);
  o = {};
  o.fence_factor = -1;
  expect_error(good, fp::errc::invalid_option, "options.fence_factor = -1", o);
  expect_error(good, fp::errc::invalid_budget, "budget::count(0)", {}, fp::budget::count(0));
  expect_error(good, fp::errc::invalid_budget, "budget::ratio(1.5)", {}, fp::budget::ratio(1.5));
}

namespace {

// Writes `value` at (layer, head, token, dim) of q or k in the stored layout.
template <class E>
void poison(qk_data<E>& x, bool in_k, int l, int h, int n, int t, double value) {
  const auto s = x.strides();
  const std::size_t off = x.layer_size * static_cast<std::size_t>(l) + static_cast<std::size_t>(h * s[0] + n * s[1] + t * s[2]);
  (in_k ? x.k_store : x.q_store)[off] = element<E>(value);
}

template <class E>
void check_non_finite_messages() {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (auto kind : {layout::heads_major, layout::tokens_major, layout::dim_strided}) {
    auto x = random_qk<E>(3, 4, 30, 5, kind, false);
    REQUIRE_NOTHROW(fp::select(x.view()));
    poison(x, true, 2, 3, 5, 0, nan);
    expect_error(x.view(), fp::errc::non_finite, "layers[2].k[head 3][token 5][dim 0] = nan (every value read must be finite)");
    x.store();
    poison(x, false, 1, 0, 29, 4, -inf);
    expect_error(x.view(), fp::errc::non_finite, "layers[1].q[head 0][token 29][dim 4] = -inf");
    x.store();
    poison(x, true, 0, 2, 0, 2, inf);
    poison(x, true, 0, 2, 7, 1, nan);
    expect_error(x.view(), fp::errc::non_finite, "layers[0].k[head 2][token 0][dim 2] = inf");
    x.store();
  }
}

}  // namespace

TEST_CASE("qk: a NaN or infinity in Q or K names its place", "[qk][errors]") {
  check_non_finite_messages<float>();
  check_non_finite_messages<double>();
  check_non_finite_messages<Eigen::half>();
  check_non_finite_messages<Eigen::bfloat16>();
}

TEST_CASE("qk: a -inf key that only yields zero probabilities is still found", "[qk][errors]") {
  // Every query has q[0] > 0, so q . k_3 = -inf for all of them: no NaN
  // reaches the sums, the key would just look unattended.
  auto x = small_qk(1, 1, 8, 2);
  for (int n = 0; n < 8; ++n) {
    x.at(x.q, 0, 0, n, 0) = 1.0 + n;
    x.at(x.q, 0, 0, n, 1) = 0.5;
  }
  x.store();
  poison(x, true, 0, 0, 3, 0, -std::numeric_limits<double>::infinity());
  expect_error(x.view(), fp::errc::non_finite, "layers[0].k[head 0][token 3][dim 0] = -inf");
}

TEST_CASE("qk: logits that overflow float are an error, not a silent answer", "[qk][errors]") {
  auto x = small_qk(1, 2, 6, 3);
  for (int n = 0; n < 6; ++n)
    for (int t = 0; t < 3; ++t) {
      x.at(x.q, 0, 1, n, t) = 1e20;
      x.at(x.k, 0, 1, n, t) = 1e20;
    }
  x.store();
  expect_error(x.view(), fp::errc::non_finite, "layers[0]: the logits q . k * scale of head 1, query token 0 overflow float");
  // The same values in double are fine.
  auto y = small_qk<double>(1, 2, 6, 3);
  for (int n = 0; n < 6; ++n)
    for (int t = 0; t < 3; ++t) {
      y.at(y.q, 0, 1, n, t) = 1e20 * (1 + 0.01 * n);
      y.at(y.k, 0, 1, n, t) = 1e-20 * (1 + 0.1 * t);
    }
  y.store();
  REQUIRE_NOTHROW(fp::select(y.view()));
}

TEST_CASE("qk: values that are not read are not checked", "[qk][errors]") {
  // Layer 0 picks pivots, layer 1 gives complements, layer 2 is not read.
  auto x = random_qk<float>(3, 2, 20, 4, layout::tokens_major, false);
  fp::options o;
  o.pivot_layers = {0};
  o.complementary_layer = 1;
  o.prefix_tokens = 1;
  const auto clean = fp::select(x.view(), fp::budget::adaptive(), o);
  poison(x, false, 2, 1, 4, 2, std::numeric_limits<double>::quiet_NaN());
  poison(x, true, 2, 0, 7, 0, std::numeric_limits<double>::infinity());
  REQUIRE(fp::select(x.view(), fp::budget::adaptive(), o) == clean);
  // In layer 1, the row direction reads the pivots' queries only; the
  // column direction reads every candidate's query.
  int spare = 1;
  while (std::binary_search(clean.pivotal.begin(), clean.pivotal.end(), spare)) ++spare;
  poison(x, false, 1, 1, spare, 3, std::numeric_limits<double>::quiet_NaN());
  REQUIRE(fp::select(x.view(), fp::budget::adaptive(), o) == clean);
  o.complementary_from = fp::direction::column;
  expect_error(x.view(), fp::errc::non_finite,
               "layers[1].q[head 1][token " + std::to_string(spare) + "][dim 3] = nan", o);
  // Token 0 (the prefix) is no candidate: its query is not read in either direction.
  x.store();
  poison(x, false, 1, 0, 0, 0, std::numeric_limits<double>::quiet_NaN());
  REQUIRE_NOTHROW(fp::select(x.view(), fp::budget::adaptive(), o));
}

TEST_CASE("qk: any executor gives the same degrees, tokens and first error", "[qk][executor]") {
  // An engine's pool that runs the tasks last first, each on a thread of its own.
  const fp::executor backwards(4, [](fp::index_t count, const fp::executor::task& t) {
    std::vector<std::thread> threads;
    for (fp::index_t i = count; i-- > 0;) threads.emplace_back([&t, i] { t(i); });
    for (auto& thread : threads) thread.join();
  });
  std::atomic<int> tasks_run{0};
  const fp::executor counting(3, [&tasks_run](fp::index_t count, const fp::executor::task& t) {
    for (fp::index_t i = 0; i < count; ++i, ++tasks_run) t(i);
  });
  const std::vector<fp::executor> executors = {fp::executor::threads(2), fp::executor::threads(3),
                                               fp::executor::threads(16), backwards, counting};
  for (int trial = 0; trial < 12; ++trial) {
    const int H = fptest::uniform_int(1, 9), N = fptest::uniform_int(2, 140), d = random_dim();
    auto x = random_qk<float>(2, H, N, d, random_layout(), false);
    INFO("H=" << H << " N=" << N << " d=" << d);
    const auto layers = x.view();
    fp::options o;
    o.prefix_tokens = 1;
    o.complementary_from = trial % 2 ? fp::direction::row : fp::direction::column;
    std::vector<double> want(static_cast<std::size_t>(N)), got(want.size());
    REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[0], "layers[0]", want.data()).ok());
    const fp::selection want_selection = fp::select(layers, fp::budget::ratio(0.4), o);
    for (std::size_t e = 0; e < executors.size(); ++e) {
      INFO("executor " << e);
      REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[0], "layers[0]", got.data(), executors[e]).ok());
      REQUIRE(got == want);
      REQUIRE(fp::select(layers, fp::budget::ratio(0.4), o, executors[e]) == want_selection);
      fp::pruner p(2, N, o, executors[e]);
      p.observe(layers[0]);
      p.observe(layers[1]);
      REQUIRE(p.select(fp::budget::ratio(0.4)) == want_selection);
    }
    // Two bad heads: each executor names the first, as the calling thread does.
    if (H >= 3) {
      poison(x, false, 0, H - 1, N - 1, 0, std::numeric_limits<double>::quiet_NaN());
      poison(x, true, 0, 1, 0, 0, std::numeric_limits<double>::infinity());
      for (const auto& e : executors) {
        fp::selection out;
        const fp::status s = fp::try_select(x.view(), fp::budget::adaptive(), o, out, e);
        REQUIRE(s.code() == fp::errc::non_finite);
        REQUIRE(s.message() == "freepruner: layers[0].k[head 1][token 0][dim 0] = inf (every value read must be finite)");
      }
      x.store();
    }
  }
  REQUIRE(tasks_run.load() > 0);
  // The tasks are lanes of heads: at most the executor's concurrency, at most the heads.
  fp::index_t largest = 0;
  const fp::executor watch(3, [&largest](fp::index_t count, const fp::executor::task& t) {
    largest = std::max(largest, count);
    for (fp::index_t i = 0; i < count; ++i) t(i);
  });
  auto x = random_qk<float>(1, 8, 20, 4, layout::heads_major, false);
  std::vector<double> r(20);
  REQUIRE(fp::detail::cpu::qk::layer_degrees(x.view()[0], "layers[0]", r.data(), watch).ok());
  REQUIRE(largest == 3);
  auto one = random_qk<float>(1, 1, 20, 4, layout::heads_major, false);
  REQUIRE(fp::detail::cpu::qk::layer_degrees(one.view()[0], "layers[0]", r.data(), watch).ok());
  REQUIRE(largest == 3);  // one head: one task, run without the pool
}

// select() against the independent float64 reference (tests/reference.hpp)
// on fresh random maps: every option, budget, element type and layout.

#include <algorithm>
#include <numeric>
#include <utility>
#include <vector>

#include <freepruner/freepruner.hpp>

#include "common.hpp"

namespace {

using freepruner::attention_view;
using freepruner::index_t;

template <class E>
void check_random_against_reference(int trials, bool exact_mean) {
  for (int t = 0; t < trials; ++t) {
    const fpref::config c = fptest::random_config(exact_mean);
    const auto stored = fptest::convert<E>(fptest::random_maps(c.layers, c.heads, c.tokens, fptest::uniform_int(0, 5) == 0));
    const fpref::result want = fpref::select(fptest::widen(stored), c);
    const attention_view<const E> v(stored.data(), c.layers, c.heads, c.tokens);
    const freepruner::selection got = freepruner::select(v, fptest::budget_of(c), fptest::options_of(c));
    INFO(fptest::describe(c));
    REQUIRE(got.indices == fptest::tokens_of(want.indices));
    REQUIRE(got.pivotal == fptest::tokens_of(want.pivotal));
    REQUIRE(got.complementary == fptest::tokens_of(want.complementary));
  }
}

}  // namespace

TEST_CASE("select matches the float64 reference on random float maps", "[reference]") {
  check_random_against_reference<float>(400, false);
}

TEST_CASE("select matches the float64 reference on random double maps", "[reference]") {
  check_random_against_reference<double>(200, false);
}

TEST_CASE("select matches the float64 reference on random half and bfloat16 maps", "[reference]") {
  check_random_against_reference<Eigen::half>(200, true);
  check_random_against_reference<Eigen::bfloat16>(200, true);
}

TEST_CASE("the stages composed by hand give select's answer", "[reference][stages]") {
  for (int t = 0; t < 100; ++t) {
    const fpref::config c = fptest::random_config();
    const auto maps = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const attention_view<const float> v(maps.data(), c.layers, c.heads, c.tokens);
    const auto o = fptest::options_of(c);
    std::vector<std::vector<double>> degrees;
    if (c.pivot_layers.empty())
      for (int l = 0; l < c.layers; ++l) degrees.push_back(freepruner::contribution_degree(v, l));
    else
      for (int l : c.pivot_layers) degrees.push_back(freepruner::contribution_degree(v, l));
    const auto pivots = freepruner::pivotal_tokens(degrees, o);
    const auto comps = freepruner::complementary_tokens(v, pivots, o);
    const auto staged = freepruner::fit_budget(degrees, pivots, comps, fptest::budget_of(c), o);
    INFO(fptest::describe(c));
    REQUIRE(staged == freepruner::select(v, fptest::budget_of(c), o));
  }
}

TEST_CASE("fit_budget cuts P by best rank for any pivot set, layer count and tie pattern", "[reference][stages]") {
  // fit_budget sorts only the tops of the layers' orders, deeper when those
  // fall short (pivot sets that are not top sets, as a caller may pass).
  // Checked against the ranks counted as SPEC step 5 defines them.
  for (int trial = 0; trial < 300; ++trial) {
    const int layers = fptest::uniform_int(1, 30), n = fptest::uniform_int(2, 300), levels = fptest::uniform_int(2, 40);
    const bool ties = trial % 2 == 0;
    std::vector<std::vector<double>> r(static_cast<std::size_t>(layers), std::vector<double>(static_cast<std::size_t>(n)));
    for (auto& layer : r)
      for (double& x : layer) x = ties ? fptest::uniform_int(0, levels) : fptest::uniform(0, 1);
    std::vector<freepruner::token_t> all(static_cast<std::size_t>(n)), pivots;
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), fptest::rng());
    const auto k = static_cast<std::size_t>(fptest::uniform_int(2, n));
    if (trial % 3 == 0) {  // P_l = a top set of each layer, as select's pivots are
      for (const auto& layer : r) {
        std::vector<freepruner::token_t> order = all;
        std::sort(order.begin(), order.end(), [&](freepruner::token_t a, freepruner::token_t b) {
          return layer[static_cast<std::size_t>(a)] > layer[static_cast<std::size_t>(b)] ||
                 (layer[static_cast<std::size_t>(a)] == layer[static_cast<std::size_t>(b)] && a < b);
        });
        pivots.insert(pivots.end(), order.begin(), order.begin() + fptest::uniform_int(1, std::max(1, n / layers)));
      }
      std::sort(pivots.begin(), pivots.end());
      pivots.erase(std::unique(pivots.begin(), pivots.end()), pivots.end());
      if (pivots.size() < 2) continue;
    } else {
      pivots.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k));
      std::sort(pivots.begin(), pivots.end());
    }
    const int m = fptest::uniform_int(1, static_cast<int>(pivots.size()) - 1);
    std::vector<std::pair<int, freepruner::token_t>> key;  // (best rank, index)
    for (freepruner::token_t i : pivots) {
      int best = n;
      for (const auto& layer : r) {
        int rank = 0;
        for (int j = 0; j < n; ++j)
          rank += layer[static_cast<std::size_t>(j)] > layer[static_cast<std::size_t>(i)] ||
                  (layer[static_cast<std::size_t>(j)] == layer[static_cast<std::size_t>(i)] && j < i);
        best = std::min(best, rank);
      }
      key.emplace_back(best, i);
    }
    std::sort(key.begin(), key.end());
    std::vector<freepruner::token_t> want;
    for (int q = 0; q < m; ++q) want.push_back(key[static_cast<std::size_t>(q)].second);
    std::sort(want.begin(), want.end());
    INFO("trial " << trial << ": L = " << layers << ", N = " << n << ", |P| = " << pivots.size() << ", m = " << m);
    freepruner::complements none;
    none.affinity.assign(static_cast<std::size_t>(n), 0.0);
    const auto got = freepruner::fit_budget(r, pivots, none, freepruner::budget::count(m));
    REQUIRE(got.pivotal == want);
    REQUIRE(got.indices == want);
  }
}

TEST_CASE("contribution_degree matches the float64 definition", "[reference][stages]") {
  for (int t = 0; t < 50; ++t) {
    const int layers = fptest::uniform_int(1, 3), heads = fptest::uniform_int(1, 5), n = fptest::uniform_int(1, 50);
    const auto maps = fptest::random_maps(layers, heads, n);
    const attention_view<const double> v(maps.data(), layers, heads, n);
    const int l = fptest::uniform_int(0, layers - 1);
    const auto r = freepruner::contribution_degree(v, l);
    REQUIRE(r.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      double want = 0;
      for (int j = 0; j < n; ++j) {
        if (j == i) continue;
        for (int h = 0; h < heads; ++h) want += v(l, h, j, i) / heads;
      }
      REQUIRE(r[static_cast<std::size_t>(i)] == Approx(want).epsilon(1e-12).margin(1e-15));
    }
  }
}

TEST_CASE("strided layouts give the contiguous answer", "[reference][view]") {
  for (int t = 0; t < 60; ++t) {
    const fpref::config c = fptest::random_config();
    const index_t L = c.layers, H = c.heads, N = c.tokens;
    const auto maps = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const attention_view<const float> dense(maps.data(), L, H, N);
    const auto want = freepruner::select(dense, fptest::budget_of(c), fptest::options_of(c));
    INFO(fptest::describe(c));

    // Keys-major storage: element (l,h,i,j) at ((l*H+h)*N + j)*N + i.
    std::vector<float> transposed(maps.size());
    // Padded rows (pitch N+3) with heads outermost: [H][L][N][N+3], as an engine with aligned rows.
    const index_t pitch = N + 3;
    std::vector<float> padded(static_cast<std::size_t>(H * L * N * pitch), -1.0f);
    for (index_t l = 0; l < L; ++l)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j) {
            const float x = dense(l, h, i, j);
            transposed[static_cast<std::size_t>(((l * H + h) * N + j) * N + i)] = x;
            padded[static_cast<std::size_t>(((h * L + l) * N + i) * pitch + j)] = x;
          }
    const attention_view<const float> keys_major(transposed.data(), {L, H, N, N}, {H * N * N, N * N, 1, N});
    const attention_view<const float> heads_outer(padded.data(), {L, H, N, N}, {N * pitch, L * N * pitch, pitch, 1});
    REQUIRE(freepruner::select(keys_major, fptest::budget_of(c), fptest::options_of(c)) == want);
    REQUIRE(freepruner::select(heads_outer, fptest::budget_of(c), fptest::options_of(c)) == want);
  }
}

TEST_CASE("a batch selects each item on its own thresholds", "[reference][batch]") {
  for (int t = 0; t < 40; ++t) {
    const fpref::config c = fptest::random_config();
    const int batch = fptest::uniform_int(1, 5);
    std::vector<float> maps;
    std::vector<fpref::result> want;
    for (int b = 0; b < batch; ++b) {
      // Items differ in character (some flat), so per-item thresholds matter.
      const auto item = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens, b % 3 == 2));
      want.push_back(fpref::select(fptest::widen(item), c));
      maps.insert(maps.end(), item.begin(), item.end());
    }
    const freepruner::batched_attention_view<const float> v(maps.data(), batch, c.layers, c.heads, c.tokens);
    const auto got = freepruner::select(v, fptest::budget_of(c), fptest::options_of(c));
    INFO(fptest::describe(c));
    REQUIRE(got.size() == static_cast<std::size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      REQUIRE(got[static_cast<std::size_t>(b)].indices == fptest::tokens_of(want[static_cast<std::size_t>(b)].indices));
      REQUIRE(got[static_cast<std::size_t>(b)].pivotal == fptest::tokens_of(want[static_cast<std::size_t>(b)].pivotal));
      // The same item alone gives the same answer as inside the batch.
      REQUIRE(got[static_cast<std::size_t>(b)] == freepruner::select(v[b], fptest::budget_of(c), fptest::options_of(c)));
    }
  }
}

TEST_CASE("every selection is well formed and its size is known in advance", "[reference][invariants]") {
  for (int t = 0; t < 200; ++t) {
    const fpref::config c = fptest::random_config();
    const auto maps = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const attention_view<const float> v(maps.data(), c.layers, c.heads, c.tokens);
    const auto o = fptest::options_of(c);
    const auto s = freepruner::select(v, fptest::budget_of(c), o);
    INFO(fptest::describe(c));
    REQUIRE(std::is_sorted(s.indices.begin(), s.indices.end()));
    REQUIRE(std::adjacent_find(s.indices.begin(), s.indices.end()) == s.indices.end());
    REQUIRE(!s.indices.empty());
    REQUIRE(s.indices.front() >= c.prefix);
    REQUIRE(s.indices.back() < c.tokens - c.suffix);
    std::vector<freepruner::token_t> merged(s.pivotal.size() + s.complementary.size());
    std::merge(s.pivotal.begin(), s.pivotal.end(), s.complementary.begin(), s.complementary.end(), merged.begin());
    REQUIRE(merged == s.indices);  // disjoint and covering
    const auto expected = freepruner::kept_tokens(fptest::budget_of(c), c.tokens, o);
    if (c.kind == fpref::budget_kind::adaptive)
      REQUIRE(!expected.has_value());
    else
      REQUIRE(static_cast<index_t>(s.size()) == *expected);
  }
}

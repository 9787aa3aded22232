// The streaming pruner fed queries and keys (stream.hpp, qk.hpp): layer by
// layer it must return exactly what Q/K select returns on the same layers
// (operator== on the selection, and the stage accessors to the bit) for
// every option, budget, element type and layout; fail where select fails,
// with its code (and its message when one value is bad); stay unchanged
// after an error; and hold no N x N buffer.
//
// Inputs are fresh each run: Catch's --rng-seed (printed on failure)
// replays one.

#include <freepruner/freepruner.hpp>
#include <freepruner/qk.hpp>
#include <freepruner/stream.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "common.hpp"

namespace fp = freepruner;
using Catch::Matchers::Contains;
using fp::errc;
using fp::index_t;
using fp::token_t;

namespace {

using fptest::inf_v;
using fptest::nan_v;

// ---------------------------------------------------------------------------
// Inputs: per layer, Q and K of [heads][tokens][dim] stored as E in one of
// four layouts (the two named ones, and two strided views).

enum class layout { heads_major, tokens_major, padded, dim_strided };

using fptest::element;

template <class E>
struct qk_stack {
  int tokens = 1, dim = 1;
  std::vector<int> heads;      // per layer
  std::vector<double> scales;  // per layer
  layout kind = layout::heads_major;
  std::vector<std::vector<E>> q, k;

  int layers() const { return static_cast<int>(heads.size()); }

  std::array<index_t, 3> strides(int l) const {
    const index_t H = heads[static_cast<std::size_t>(l)], N = tokens, d = dim;
    switch (kind) {
      case layout::heads_major: return {N * d, d, 1};
      case layout::tokens_major: return {d, H * d, 1};
      case layout::padded: return {d + 2, H * (d + 2) + 1, 1};  // [N][H][d+2], a spare per token
      case layout::dim_strided: return {d * N, 1, N};           // [H][d][N]
    }
    return {0, 0, 0};
  }
  std::size_t offset(int l, int h, int n, int t) const {
    const auto s = strides(l);
    return static_cast<std::size_t>(h * s[0] + n * s[1] + t * s[2]);
  }
  fp::qk_layer<const E> layer(int l) const {
    const auto ul = static_cast<std::size_t>(l);
    const std::array<index_t, 3> e{heads[ul], tokens, dim};
    return {fp::qk_tensor<const E>(q[ul].data(), e, strides(l)), fp::qk_tensor<const E>(k[ul].data(), e, strides(l)),
            scales[ul]};
  }
  std::vector<fp::qk_layer<const E>> view() const {
    std::vector<fp::qk_layer<const E>> out;
    for (int l = 0; l < layers(); ++l) out.push_back(layer(l));
    return out;
  }
  void set(bool in_k, int l, int h, int n, int t, double x) {
    (in_k ? k : q)[static_cast<std::size_t>(l)][offset(l, h, n, t)] = element<E>(x);
  }
};

layout random_layout() { return static_cast<layout>(fptest::uniform_int(0, 3)); }
int random_dim() {
  static const int dims[] = {1, 2, 3, 8, 16, 33, 64};
  return dims[fptest::uniform_int(0, 6)];
}

// Q/K shaped like an encoder's (as in test_qk.cpp): per layer-head a shared
// direction u; queries lean on u and about 12% of the keys ("sinks") carry a
// large component along it, so degrees have outliers (none when `flat`).
// Logits stay within about +-20.
template <class E>
qk_stack<E> random_stack(const std::vector<int>& heads, int tokens, int dim, layout kind, bool flat) {
  qk_stack<E> x;
  x.heads = heads;
  x.tokens = tokens;
  x.dim = dim;
  x.kind = kind;
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> u(static_cast<std::size_t>(dim));
  for (int l = 0; l < x.layers(); ++l) {
    double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    if (fptest::uniform(0, 1) < 0.5) scale *= fptest::uniform(0.5, 1.5);
    x.scales.push_back(scale);
    const auto s = x.strides(l);
    const std::size_t size = static_cast<std::size_t>(s[0] * heads[static_cast<std::size_t>(l)] + s[1] * tokens + s[2] * dim);
    x.q.emplace_back(size, element<E>(-7.0));  // gaps between strided elements hold -7
    x.k.emplace_back(size, element<E>(-7.0));
    const double along = 1.0 / std::sqrt(scale), across = std::pow(static_cast<double>(dim), -0.25) / std::sqrt(scale);
    for (int h = 0; h < heads[static_cast<std::size_t>(l)]; ++h) {
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
          x.set(false, l, h, n, t, spread * across * normal(fptest::rng()) + lean * ut);
          x.set(true, l, h, n, t, spread * across * normal(fptest::rng()) + sink * ut);
        }
      }
    }
  }
  return x;
}

// A random configuration over up to 6 layers (as in test_stream.cpp): pivot
// layers any non-empty subset in any order, the complementary layer
// anywhere (before, among or after them), so some layers are neither.
fpref::config stream_config() {
  fpref::config c = fptest::random_config();
  if (fptest::uniform_int(0, 2) == 0) c.layers = fptest::uniform_int(3, 6);
  c.complementary_layer = fptest::uniform_int(0, 2) == 0 ? -1 : fptest::uniform_int(0, c.layers - 1);
  c.pivot_layers.clear();
  if (fptest::uniform_int(0, 2) != 0) {
    for (int l = 0; l < c.layers; ++l)
      if (fptest::uniform_int(0, 1) == 1) c.pivot_layers.push_back(l);
    if (c.pivot_layers.empty()) c.pivot_layers.push_back(fptest::uniform_int(0, c.layers - 1));
    std::shuffle(c.pivot_layers.begin(), c.pivot_layers.end(), fptest::rng());
  }
  return c;
}

// The library's options for c, the last layer sometimes written as -1.
fp::options stream_options(const fpref::config& c) {
  fp::options o = fptest::options_of(c);
  for (auto& l : o.pivot_layers)
    if (l == c.layers - 1 && fptest::uniform_int(0, 1) == 1) l = -1;
  return o;
}

// Heads per layer: one count, or (a quarter of the time) each its own, which
// Q/K select allows.
std::vector<int> random_heads(const fpref::config& c) {
  std::vector<int> heads(static_cast<std::size_t>(c.layers), c.heads);
  if (fptest::uniform_int(0, 3) == 0)
    for (auto& h : heads) h = fptest::uniform_int(1, 4);
  return heads;
}

std::vector<fp::budget> budgets_for(const fpref::config& c) {
  const int m = c.tokens - c.prefix - c.suffix;
  return {fptest::budget_of(c), fp::budget::adaptive(), fp::budget::count(fptest::uniform_int(1, m + 2)),
          fp::budget::ratio(fptest::uniform(0.01, 1.0)), fp::budget::count(1), fp::budget::ratio(1.0)};
}

// Feeds every layer, skipping the unwanted ones when asked; the first
// failure's status.
template <class E>
fp::status feed(fp::pruner& pr, const std::vector<fp::qk_layer<const E>>& layers, bool skip_unwanted) {
  for (std::size_t l = 0; l < layers.size(); ++l) {
    REQUIRE(pr.observed() == static_cast<index_t>(l));
    const bool skip = skip_unwanted && !pr.wants(static_cast<index_t>(l));
    const fp::status st = skip ? pr.try_skip() : pr.try_observe(layers[l]);
    if (!st) return st;
  }
  return {};
}

std::string show(const fp::selection& s) {
  std::string out;
  for (token_t t : s.indices) out += std::to_string(t) + ' ';
  out += "| ";
  for (token_t t : s.pivotal) out += std::to_string(t) + ' ';
  out += "| ";
  for (token_t t : s.complementary) out += std::to_string(t) + ' ';
  return out;
}

// The stage accessors against the Q/K backend's own per-layer operations,
// composed as Q/K select composes them, to the bit.
template <class E>
void same_stages(const fp::pruner& pr, const std::vector<fp::qk_layer<const E>>& layers, const fp::options& o) {
  const index_t L = static_cast<index_t>(layers.size()), N = pr.tokens();
  fp::detail::plan p;
  REQUIRE(fp::detail::make_plan({L, 1, N, N}, o, p));
  std::vector<std::vector<double>> degrees;
  for (index_t l : p.pivot_layers) {
    std::vector<double> r(static_cast<std::size_t>(N));
    REQUIRE(fp::detail::cpu::qk::layer_degrees(layers[static_cast<std::size_t>(l)], "layer", r.data()));
    REQUIRE(pr.contribution_degree(l) == r);
    degrees.push_back(r);
  }
  const auto pivots = fp::pivotal_tokens(degrees, o);
  REQUIRE(pr.pivotal() == pivots);
  fp::detail::complement_builder<double> builder(pivots, p, o.fence_factor);
  std::vector<double> buffer, affinity;
  REQUIRE(fp::detail::cpu::qk::for_each_pivot_scores(layers[static_cast<std::size_t>(p.complementary_layer)], "layer",
                                                     pivots, p.first, p.last, o.complementary_from, buffer,
                                                     [&](token_t pivot, const double* v) {
                                                       return builder.add(v, pivot);
                                                     }));
  std::vector<token_t> comps;
  REQUIRE(builder.finish(comps, affinity));
  const fp::complements got = pr.complementary();
  REQUIRE(got.tokens == comps);
  REQUIRE(got.affinity == affinity);
}

// ---------------------------------------------------------------------------
// Exactness on random Q/K.

template <class E>
int check_against_select(int trials) {
  int compared = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    const auto x = random_stack<E>(random_heads(c), c.tokens, random_dim(), random_layout(), fptest::uniform_int(0, 5) == 0);
    const auto layers = x.view();
    INFO(fptest::describe(c) << " dim=" << x.dim << " layout=" << static_cast<int>(x.kind));
    fp::pruner pr(c.layers, c.tokens, o);
    REQUIRE(feed(pr, layers, fptest::uniform_int(0, 1) == 1));
    same_stages(pr, layers, o);
    for (const fp::budget& b : budgets_for(c)) {
      const fp::selection want = fp::select(layers, b, o);
      const fp::selection got = pr.select(b);
      INFO("budget kind " << static_cast<int>(b.mode()) << " " << b.count_value() << " " << b.ratio_value()
                          << "\n want " << show(want) << "\n got  " << show(got));
      REQUIRE(got == want);
      ++compared;
    }
    // The next image through the same pruner, in another layout.
    const auto y = random_stack<E>(random_heads(c), c.tokens, random_dim(), random_layout(), false);
    pr.reset();
    REQUIRE(pr.observed() == 0);
    REQUIRE(pr.heads() == 0);
    REQUIRE(feed(pr, y.view(), fptest::uniform_int(0, 1) == 1));
    const fp::budget b = fptest::budget_of(c);
    REQUIRE(pr.select(b) == fp::select(y.view(), b, o));
    ++compared;
  }
  return compared;
}

}  // namespace

TEST_CASE("pruner on Q/K equals Q/K select: float, every option, budget and layout", "[stream][qk][exact]") {
  CHECK(check_against_select<float>(300) == 300 * 7);
}

TEST_CASE("pruner on Q/K equals Q/K select: double, half and bfloat16", "[stream][qk][exact]") {
  check_against_select<double>(100);
  check_against_select<Eigen::half>(100);
  check_against_select<Eigen::bfloat16>(100);
}

TEST_CASE("pruner on Q/K equals Q/K select on every SIMD level of the CPU kernels", "[stream][qk][exact][simd]") {
  namespace cpu = fp::detail::cpu;
  struct restore {
    ~restore() { cpu::simd_cap().store(-1); }
  } guard;
  for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
    cpu::simd_cap().store(level);
    INFO("SIMD level cap " << level);
    check_against_select<float>(40);
    check_against_select<Eigen::half>(20);
    check_against_select<Eigen::bfloat16>(20);
  }
}

TEST_CASE("pruner on Q/K: the complementary layer before, among and after the pivot layers", "[stream][qk][exact]") {
  // Every position of c against every pivot-layer set over 3 layers, both
  // directions; N past one GEMM block (and one of several sizes).
  for (auto dir : {fp::direction::row, fp::direction::column})
    for (index_t c = 0; c < 3; ++c)
      for (const std::vector<index_t>& pivots :
           {std::vector<index_t>{0}, {1}, {2}, {0, 1}, {2, 0}, {1, 2}, std::vector<index_t>{}}) {
        const int N = fptest::uniform_int(0, 1) ? 300 : fptest::uniform_int(20, 90);
        const auto x = random_stack<float>({3, 3, 3}, N, 16, random_layout(), false);
        const auto layers = x.view();
        fp::options o;
        o.prefix_tokens = 1;
        o.complementary_from = dir;
        o.complementary_layer = c;
        o.pivot_layers = pivots;
        INFO("c = " << c << " pivot layers " << pivots.size() << " N = " << N);
        fp::pruner pr(3, N, o);
        REQUIRE(feed(pr, layers, true));
        same_stages(pr, layers, o);
        for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::ratio(0.3), fp::budget::count(7)})
          REQUIRE(pr.select(b) == fp::select(layers, b, o));
      }
}

TEST_CASE("pruner on Q/K: a reused pruner across images of every element type", "[stream][qk][reset]") {
  // c = 0 before the last pivot layer: the kept Q and K change element type
  // from image to image.
  fp::options o;
  o.prefix_tokens = 1;
  o.complementary_layer = 0;
  o.complementary_from = fp::direction::column;
  const int N = 40;
  fp::pruner pr(2, N, o);
  auto run = [&](auto tag) {
    using E = decltype(tag);
    const auto x = random_stack<E>({4, 4}, N, 8, random_layout(), false);
    pr.reset();
    REQUIRE(feed(pr, x.view(), false));
    for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::ratio(0.5)}) REQUIRE(pr.select(b) == fp::select(x.view(), b, o));
  };
  for (int image = 0; image < 3; ++image) {
    run(float{});
    run(Eigen::half{});
    run(double{});
    run(Eigen::bfloat16{});
  }
  // The same image again reallocates nothing.
  const auto x = random_stack<float>({4, 4}, N, 8, layout::heads_major, false);
  pr.reset();
  REQUIRE(feed(pr, x.view(), false));
  CHECK(pr.select() == fp::select(x.view(), fp::budget::adaptive(), o));
  const std::size_t held = pr.state_bytes();
  pr.reset();
  REQUIRE(feed(pr, x.view(), false));
  CHECK(pr.state_bytes() == held);
}

TEST_CASE("pruner on Q/K reads the mutable views and the views' conversions", "[stream][qk]") {
  auto x = random_stack<float>({2, 2}, 12, 4, layout::tokens_major, false);
  std::vector<fp::qk_layer<float>> mutable_layers;
  for (int l = 0; l < 2; ++l) {
    const auto ul = static_cast<std::size_t>(l);
    const std::array<index_t, 3> e{2, 12, 4};
    mutable_layers.push_back(
        {fp::qk_tensor<float>(x.q[ul].data(), e, x.strides(l)), fp::qk_tensor<float>(x.k[ul].data(), e, x.strides(l)),
         x.scales[ul]});
  }
  fp::pruner pr(2, 12);
  pr.observe(mutable_layers[0]);
  pr.observe(mutable_layers[1]);
  CHECK(pr.select() == fp::select(x.view()));
  CHECK(pr.heads() == 2);
}

// ---------------------------------------------------------------------------
// Map layers and Q/K layers in one image.

namespace {

// Layer l of x as one head of maps: its head mean (H = 1 in x), whose row
// and column sums are the Q/K path's own values (a sum of one head is exact).
template <class E>
std::vector<double> as_maps(const qk_stack<E>& x, int l) {
  const auto n = static_cast<std::size_t>(x.tokens);
  std::vector<double> mean(n * n);
  REQUIRE(fp::detail::cpu::qk::head_mean(x.layer(l), "layer", mean.data()));
  return mean;
}

}  // namespace

TEST_CASE("pruner mixes map layers and Q/K layers in one image", "[stream][qk][mixed]") {
  for (int trial = 0; trial < 24; ++trial) {
    const int N = fptest::uniform_int(10, 60);
    const auto x = random_stack<float>({1, 1, 1}, N, 8, random_layout(), false);
    fp::options o;
    o.prefix_tokens = fptest::uniform_int(0, 1);
    o.complementary_from = trial % 2 ? fp::direction::column : fp::direction::row;
    o.complementary_layer = (trial / 2) % 2 ? 0 : 2;  // before or after the pivot layers
    o.pivot_layers.assign(1, o.complementary_layer == 0 ? index_t(1) : index_t(0));
    const index_t c = o.complementary_layer;
    const auto c_maps = as_maps(x, static_cast<int>(c));
    const fp::attention_view<const double> c_view(c_maps.data(), 1, 1, N);
    INFO("N = " << N << " c = " << c);
    // Q/K pivot layers, map complementary layer: Q/K select's answer.
    fp::pruner mixed(3, N, o);
    for (index_t l = 0; l < 3; ++l)
      if (l == c)
        mixed.observe(c_view);
      else
        mixed.observe(x.layer(static_cast<int>(l)));
    const auto budget = fp::budget::ratio(0.4);
    CHECK(mixed.select() == fp::select(x.view(), fp::budget::adaptive(), o));
    CHECK(mixed.select(budget) == fp::select(x.view(), budget, o));
    // Map pivot layers, Q/K complementary layer: the all-maps pruner's answer.
    std::vector<std::vector<double>> maps;
    for (int l = 0; l < 3; ++l) maps.push_back(as_maps(x, l));
    fp::pruner on_maps(3, N, o), other(3, N, o);
    for (index_t l = 0; l < 3; ++l) {
      const fp::attention_view<const double> v(maps[static_cast<std::size_t>(l)].data(), 1, 1, N);
      on_maps.observe(v);
      if (l == c)
        other.observe(x.layer(static_cast<int>(l)));
      else
        other.observe(v);
    }
    CHECK(other.select() == on_maps.select());
    CHECK(other.select(budget) == on_maps.select(budget));
  }
}

TEST_CASE("pruner: a map layer must have the heads of the image's first layer", "[stream][qk][mixed][errors]") {
  const auto x = random_stack<float>({3, 3}, 9, 4, layout::heads_major, false);
  const std::vector<float> maps(2 * 9 * 9, 1.0f / 9);
  fp::pruner pr(2, 9);
  pr.observe(x.layer(0));
  CHECK(pr.heads() == 3);
  const fp::status s = pr.try_observe(fp::attention_view<const float>(maps.data(), 1, 2, 9));
  CHECK(s.code() == errc::invalid_shape);
  CHECK_THAT(s.message(), Contains("pruner::observe, layer 1: layer_maps has heads = 2, the image's first layer had heads = 3"));
  CHECK(pr.observed() == 1);
}

// ---------------------------------------------------------------------------
// Errors: select's code (and message), and the pruner unchanged.

namespace {

// Observes `layers`, layer `bad` replaced by `wrong`: that observe fails as
// select on the same layers fails; the pruner is then as before, takes the
// right layer, and answers as select.
void expect_layer_error(const std::vector<fp::qk_layer<const float>>& layers, std::size_t bad,
                        const fp::qk_layer<const float>& wrong, errc code, const std::string& text,
                        bool same_message = true) {
  auto broken = layers;
  broken[bad] = wrong;
  fp::selection out;
  const fp::status one_shot = fp::try_select(broken, fp::budget::adaptive(), {}, out);
  fp::pruner pr(static_cast<index_t>(layers.size()), layers[0].q.tokens());
  for (std::size_t l = 0; l < bad; ++l) pr.observe(layers[l]);
  const index_t heads = pr.heads();
  const std::size_t bytes = pr.state_bytes();
  const fp::status streamed = pr.try_observe(wrong);
  INFO("select: " << one_shot.message() << "\npruner: " << streamed.message());
  CHECK(one_shot.code() == code);
  CHECK(streamed.code() == code);
  CHECK_THAT(streamed.message(), Contains(text));
  if (same_message) CHECK(streamed.message() == one_shot.message());
  try {
    pr.observe(wrong);
    FAIL("observe did not throw");
  } catch (const fp::error& e) {
    CHECK(e.code() == code);
    CHECK(std::string(e.what()) == streamed.message());
  }
  CHECK(pr.observed() == static_cast<index_t>(bad));
  CHECK(pr.heads() == heads);
  CHECK(pr.state_bytes() == bytes);
  for (std::size_t l = bad; l < layers.size(); ++l) pr.observe(layers[l]);
  CHECK(pr.select() == fp::select(layers));
}

}  // namespace

TEST_CASE("pruner on Q/K: bad shapes, scale and data, with select's code and message", "[stream][qk][errors]") {
  const auto x = random_stack<float>({2, 2, 2}, 6, 3, layout::heads_major, false);
  const auto good = x.view();
  for (std::size_t bad = 0; bad < 3; ++bad) {
    INFO("bad layer " << bad);
    const float* q = x.q[bad].data();
    const float* k = x.k[bad].data();
    auto layer = good[bad];
    layer.q = fp::qk_tensor<const float>(q, {2, 0, 3}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::invalid_shape, ".q: tokens = 0 (must be >= 1)");
    layer = good[bad];
    layer.k = fp::qk_tensor<const float>(k, {-1, 6, 3}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::invalid_shape, ".k: heads = -1 (must be >= 1)");
    layer = good[bad];
    layer.k = fp::qk_tensor<const float>(k, {2, 6, 0}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::invalid_shape, ".k: dim = 0 (must be >= 1)");
    layer = good[bad];
    layer.k = fp::qk_tensor<const float>(k, {1, 6, 3}, {18, 3, 1});  // q and k heads differ
    expect_layer_error(good, bad, layer, errc::invalid_shape, ": q is [2, 6, 3] but k is [1, 6, 3]");
    layer = good[bad];
    layer.k = fp::qk_tensor<const float>(k, {2, 6, 2}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::invalid_shape, ": q is [2, 6, 3] but k is [2, 6, 2]");
    for (double scale : {0.0, -2.0, nan_v, inf_v}) {
      layer = good[bad];
      layer.scale = scale;
      expect_layer_error(good, bad, layer, errc::invalid_option, ".scale = ");
    }
    layer = good[bad];
    layer.q = fp::qk_tensor<const float>(nullptr, {2, 6, 3}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::null_data, ".q: data is null with shape [2, 6, 3]");
    layer = good[bad];
    layer.k = fp::qk_tensor<const float>(nullptr, {2, 6, 3}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::null_data, ".k: data is null");
    // Other tokens than the pruner's N: select's code, the pruner's words
    // (its N is fixed when it is built, not by layers[0]).
    layer = good[bad];
    layer.q = fp::qk_tensor<const float>(q, {2, 5, 3}, {18, 3, 1});
    layer.k = fp::qk_tensor<const float>(k, {2, 5, 3}, {18, 3, 1});
    expect_layer_error(good, bad, layer, errc::invalid_shape,
                       "layer.q has tokens = 5, the pruner was built for tokens = 6", false);
  }
  // The label is select's: "layers[1]" names the second layer observed.
  auto layer = good[1];
  layer.scale = -2;
  expect_layer_error(good, 1, layer, errc::invalid_option, "layers[1].scale = -2 (must be finite and > 0");
}

TEST_CASE("pruner on Q/K: unread layers are checked for shape, not for values", "[stream][qk][errors]") {
  auto x = random_stack<float>({2, 2, 2}, 20, 4, layout::tokens_major, false);
  fp::options o;
  o.pivot_layers.assign(1, 0);
  o.complementary_layer = 1;
  o.prefix_tokens = 1;
  x.set(false, 2, 1, 4, 2, nan_v);
  x.set(true, 2, 0, 7, 0, inf_v);
  fp::pruner pr(3, 20, o);
  CHECK_FALSE(pr.wants(2));
  REQUIRE(feed(pr, x.view(), false));  // layer 2 observed, not read
  CHECK(pr.select() == fp::select(x.view(), fp::budget::adaptive(), o));
  pr.reset();
  pr.observe(x.layer(0));
  pr.observe(x.layer(1));
  auto shapeless = x.layer(2);
  shapeless.q = fp::qk_tensor<const float>(nullptr, {2, 20, 4}, {4, 8, 1});
  const fp::status s = pr.try_observe(shapeless);
  CHECK(s.code() == errc::null_data);
  CHECK(s.message() == "freepruner: layers[2].q: data is null with shape [2, 20, 4]");
  pr.skip();
  CHECK(pr.select() == fp::select(x.view(), fp::budget::adaptive(), o));
}

TEST_CASE("pruner on Q/K: calls out of order", "[stream][qk][errors]") {
  const auto x = random_stack<Eigen::half>({3, 3}, 9, 5, layout::dim_strided, false);
  const auto layers = x.view();
  fp::options o;
  o.prefix_tokens = 1;
  fp::pruner pr(2, 9, o);
  auto code_of = [](auto&& call) {
    try {
      call();
    } catch (const fp::error& e) {
      return e.code();
    }
    return errc::ok;
  };
  CHECK(code_of([&] { (void)pr.select(); }) == errc::invalid_layer);
  CHECK(code_of([&] { pr.skip(); }) == errc::invalid_layer);  // layer 0 is read
  CHECK(code_of([&] { (void)pr.pivotal(); }) == errc::invalid_layer);
  pr.observe(layers[0]);
  CHECK(code_of([&] { (void)pr.select(); }) == errc::invalid_layer);
  CHECK(code_of([&] { (void)pr.complementary(); }) == errc::invalid_layer);
  CHECK(pr.contribution_degree(0).size() == 9);
  pr.observe(layers[1]);
  const fp::status again = pr.try_observe(layers[1]);
  CHECK(again.code() == errc::invalid_layer);
  CHECK_THAT(again.message(), Contains("pruner::observe: all 2 layers were already observed"));
  CHECK(pr.observed() == 2);
  CHECK(pr.select(fp::budget::ratio(0.5)) == fp::select(layers, fp::budget::ratio(0.5), o));
}

namespace {

// Writes a NaN, -inf or +inf at a random place of q or k of layer l.
template <class E>
std::string poison_random(qk_stack<E>& x, int l) {
  const int h = fptest::uniform_int(0, x.heads[static_cast<std::size_t>(l)] - 1);
  const int n = fptest::uniform_int(0, x.tokens - 1), t = fptest::uniform_int(0, x.dim - 1);
  const bool in_k = fptest::uniform_int(0, 1) == 1;
  const int kind = fptest::uniform_int(0, 2);
  x.set(in_k, l, h, n, t, kind == 0 ? nan_v : kind == 1 ? -inf_v : inf_v);
  return std::string(in_k ? "k" : "q") + " l=" + std::to_string(l) + " h=" + std::to_string(h) +
         " n=" + std::to_string(n) + " t=" + std::to_string(t);
}

template <class E>
void check_faults(int trials, int& failures, int& same_message) {
  for (int trial = 0; trial < trials; ++trial) {
    const fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    auto x = random_stack<E>(random_heads(c), c.tokens, random_dim(), random_layout(), false);
    const auto clean = x;
    fp::detail::plan p;
    REQUIRE(fp::detail::make_plan({c.layers, 1, c.tokens, c.tokens}, o, p));
    // One bad value (in the complementary layer half the time), or several.
    const int bad_values = fptest::uniform_int(0, 3) == 0 ? fptest::uniform_int(2, 4) : 1;
    std::string where;
    for (int k = 0; k < bad_values; ++k)
      where += poison_random(x, fptest::uniform_int(0, 1) ? static_cast<int>(p.complementary_layer)
                                                          : fptest::uniform_int(0, c.layers - 1)) +
               "; ";
    const fp::budget b = fptest::budget_of(c);
    fp::selection want, got;
    const fp::status one_shot = fp::try_select(x.view(), b, o, want);
    fp::pruner pr(c.layers, c.tokens, o);
    fp::status streamed = feed(pr, x.view(), fptest::uniform_int(0, 1) == 1);
    const index_t stopped = pr.observed();
    if (streamed) streamed = pr.try_select(b, got);
    INFO(fptest::describe(c) << " dim=" << x.dim << " layout=" << static_cast<int>(x.kind) << "\n bad: " << where
                             << "\n select: " << one_shot.message() << "\n pruner: " << streamed.message());
    REQUIRE(streamed.code() == one_shot.code());
    if (one_shot.ok()) {
      REQUIRE(got == want);
      continue;
    }
    ++failures;
    if (bad_values == 1) {
      REQUIRE(streamed.message() == one_shot.message());
      ++same_message;
    }
    // Unchanged: the failed layer, retried clean, goes through when the
    // bad value was in it; else (it was in a kept layer) reset() starts over.
    REQUIRE(pr.observed() == stopped);
    const auto clean_layers = clean.view();
    fp::status retry = pr.try_observe(clean_layers[static_cast<std::size_t>(stopped)]);
    for (auto l = static_cast<std::size_t>(stopped) + 1; retry && l < clean_layers.size(); ++l)
      retry = pr.try_observe(clean_layers[l]);
    if (!retry) {
      pr.reset();
      REQUIRE(feed(pr, clean_layers, false));
    }
    REQUIRE(pr.select(b) == fp::select(clean_layers, b, o));
  }
}

}  // namespace

TEST_CASE("pruner on Q/K fails where Q/K select fails, with its message", "[stream][qk][errors][non_finite]") {
  int failures = 0, same_message = 0;
  check_faults<float>(200, failures, same_message);
  check_faults<double>(60, failures, same_message);
  check_faults<Eigen::half>(60, failures, same_message);
  check_faults<Eigen::bfloat16>(60, failures, same_message);
  CHECK(failures > 100);
  CHECK(same_message > 50);
}

TEST_CASE("pruner on Q/K: a kept complementary layer's values are read as select reads them",
          "[stream][qk][errors][non_finite]") {
  // c = 0 comes before the pivot layer 1: Q and K of layer 0 are kept and
  // read once the pivots are known. The row direction reads the pivots'
  // queries only (a NaN elsewhere is no error), the column direction every
  // candidate's; every key is read in both.
  const int N = 30;
  for (auto dir : {fp::direction::row, fp::direction::column}) {
    const auto clean = random_stack<float>({2, 2}, N, 4, layout::tokens_major, false);
    fp::options o;
    o.prefix_tokens = 1;
    o.complementary_layer = 0;
    o.pivot_layers.assign(1, 1);
    o.complementary_from = dir;
    const auto pivots = fp::select(clean.view(), fp::budget::adaptive(), o).pivotal;
    int spare = 1;
    while (std::binary_search(pivots.begin(), pivots.end(), static_cast<token_t>(spare))) ++spare;
    struct fault {
      bool in_k;
      int token;
      double value;
    };
    for (const fault& f : {fault{false, spare, nan_v}, fault{false, static_cast<int>(pivots.front()), -inf_v},
                           fault{true, spare, inf_v}, fault{false, 0, nan_v}, fault{true, 0, nan_v}}) {
      auto x = clean;
      x.set(f.in_k, 0, 1, f.token, 2, f.value);
      fp::selection want, got;
      const fp::status one_shot = fp::try_select(x.view(), fp::budget::ratio(0.5), o, want);
      fp::pruner pr(2, N, o);
      pr.observe(x.layer(0));  // kept, not read yet
      const fp::status streamed = pr.try_observe(x.layer(1));
      INFO((dir == fp::direction::row ? "row" : "column") << (f.in_k ? " k" : " q") << " token " << f.token
                                                          << "\n select: " << one_shot.message()
                                                          << "\n pruner: " << streamed.message());
      REQUIRE(streamed.code() == one_shot.code());
      REQUIRE(streamed.message() == one_shot.message());
      if (one_shot.ok()) {
        REQUIRE(pr.try_select(fp::budget::ratio(0.5), got));
        REQUIRE(got == want);
      } else {
        CHECK_THAT(streamed.message(), Contains("layers[0]."));
        CHECK(pr.observed() == 1);
        CHECK(pr.try_observe(clean.layer(1)).code() == errc::non_finite);  // layer 0's values are still kept
        pr.reset();
        REQUIRE(feed(pr, clean.view(), false));
        REQUIRE(pr.select(fp::budget::ratio(0.5)) == fp::select(clean.view(), fp::budget::ratio(0.5), o));
      }
    }
  }
}

TEST_CASE("pruner on Q/K: logits that overflow are select's error, where select computes them",
          "[stream][qk][errors][non_finite]") {
  for (auto dir : {fp::direction::row, fp::direction::column})
    for (index_t c : {index_t(0), index_t(1)}) {
      auto x = random_stack<float>({2, 2}, 12, 3, layout::heads_major, false);
      fp::options o;
      o.complementary_layer = c;
      o.pivot_layers.assign(1, 1 - c);
      o.complementary_from = dir;
      for (int n = 0; n < 12; ++n)
        for (int t = 0; t < 3; ++t) {
          x.set(false, static_cast<int>(c), 1, n, t, 1e20);
          x.set(true, static_cast<int>(c), 1, n, t, 1e20);
        }
      fp::selection want, got;
      const fp::status one_shot = fp::try_select(x.view(), fp::budget::adaptive(), o, want);
      fp::pruner pr(2, 12, o);
      fp::status streamed = feed(pr, x.view(), false);
      if (streamed) streamed = pr.try_select(fp::budget::adaptive(), got);
      INFO("select: " << one_shot.message() << "\npruner: " << streamed.message());
      CHECK_THAT(one_shot.message(), Contains("overflow float"));
      CHECK(streamed.code() == one_shot.code());
      CHECK(streamed.message() == one_shot.message());
    }
}

TEST_CASE("pruner on Q/K across select's pivot chunks: values and the first error", "[stream][qk][non_finite]") {
  // N = 1500: select scores pivots in chunks of 2^21 / 1500 = 1398; 1450
  // pivots from layer `pivot`, complements from layer 1 - pivot.
  const int N = 1500;
  const auto clean = random_stack<float>({2, 2}, N, 4, layout::heads_major, false);
  for (index_t pivot : {index_t(0), index_t(1)})
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      const int comp = static_cast<int>(1 - pivot);
      fp::options o;
      o.pivot_layers.assign(1, pivot);
      o.complementary_layer = comp;
      o.pivots_per_layer = 1450;
      o.complementary_from = dir;
      const fp::budget b = fp::budget::ratio(0.99);
      const auto pivots = fp::select(clean.view(), b, o).pivotal;
      REQUIRE(pivots.size() == 1450);
      fp::pruner pr(2, N, o);
      REQUIRE(feed(pr, clean.view(), false));
      REQUIRE(pr.select(b) == fp::select(clean.view(), b, o));
      // Bad queries of two pivots, in the second chunk and in the first.
      for (std::size_t k : {std::size_t(1420), std::size_t(3)}) {
        auto x = clean;
        x.set(false, comp, 1, static_cast<int>(pivots[1440]), 0, nan_v);
        x.set(false, comp, 1, static_cast<int>(pivots[k]), 1, inf_v);
        fp::selection want;
        const fp::status one_shot = fp::try_select(x.view(), b, o, want);
        pr.reset();
        const fp::status streamed = feed(pr, x.view(), false);
        INFO("pivot layer " << pivot << " k " << k << "\n select: " << one_shot.message() << "\n pruner: "
                            << streamed.message());
        REQUIRE(!one_shot.ok());
        CHECK(streamed.message() == one_shot.message());
      }
    }
}

// ---------------------------------------------------------------------------
// State.

namespace {

// The documented state (stream.hpp) of a pruner fed Q/K layers only, whose
// kept complementary layer (if any) has `heads` heads, dim d, elements of
// `element` bytes.
std::size_t documented_qk_bytes(const fp::pruner& pr, const fp::options& o, std::size_t pivots, std::size_t complements,
                                std::size_t heads, std::size_t d, std::size_t element) {
  const std::size_t n = static_cast<std::size_t>(pr.tokens()), layers = static_cast<std::size_t>(pr.layers());
  const std::size_t p = o.pivot_layers.empty() ? layers : o.pivot_layers.size();
  index_t last_pivot = o.pivot_layers.empty() ? pr.layers() - 1 : 0;
  for (index_t l : o.pivot_layers) last_pivot = std::max(last_pivot, l < 0 ? pr.layers() - 1 : l);
  const index_t c = o.complementary_layer < 0 ? pr.layers() - 1 : o.complementary_layer;
  return 8 * (p * n + n) + 4 * (pivots + complements) + 8 * (layers + 2 * p) -
         (o.pivot_layers.empty() ? 8 * p : 0) + (c < last_pivot ? 2 * heads * n * d * element : 0);
}

}  // namespace

TEST_CASE("pruner on Q/K at CLIP-336 size: no N x N buffer, the state as documented", "[stream][qk][memory]") {
  // 16 heads, d = 64, N = 577 with the CLS prefix; one layer's Q/K reused
  // for every layer, as an engine's buffer is.
  const int H = 16, N = 577, d = 64;
  const auto one = random_stack<float>({H}, N, d, layout::tokens_major, false);
  for (index_t L : {index_t(2), index_t(8)})
    for (index_t c : {index_t(-1), index_t(0)}) {
      fp::options o;
      o.prefix_tokens = 1;
      o.complementary_layer = c;
      const std::vector<fp::qk_layer<const float>> layers(static_cast<std::size_t>(L), one.layer(0));
      fp::pruner pr(L, N, o);
      for (const auto& layer : layers) pr.observe(layer);
      const std::size_t bytes = pr.state_bytes();
      same_stages(pr, layers, o);
      for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::ratio(0.5), fp::budget::count(64)})
        REQUIRE(pr.select(b) == fp::select(layers, b, o));
      const fp::selection kept = pr.select();
      const std::size_t want = documented_qk_bytes(pr, o, kept.pivotal.size(), kept.complementary.size(), H, d, 4);
      INFO("L = " << L << " c = " << c << ": state_bytes " << bytes << ", documented " << want << ", pivots "
                  << kept.pivotal.size() << ", complements " << kept.complementary.size());
      CHECK(bytes == want);
      if (c == -1) CHECK(bytes < static_cast<std::size_t>(N) * N * 8 / 4);  // no N x N, nor M x N
      pr.reset();
      CHECK(pr.state_bytes() == bytes);
      for (const auto& layer : layers) pr.observe(layer);
      CHECK(pr.select() == kept);
      CHECK(pr.state_bytes() == bytes);
    }
}

TEST_CASE("pruner on Q/K: state_bytes is the documented formula on random inputs", "[stream][qk][memory]") {
  for (int trial = 0; trial < 60; ++trial) {
    const fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    const auto x = random_stack<Eigen::half>(std::vector<int>(static_cast<std::size_t>(c.layers), c.heads), c.tokens,
                                             random_dim(), random_layout(), false);
    fp::pruner pr(c.layers, c.tokens, o);
    REQUIRE(feed(pr, x.view(), true));
    const fp::selection kept = pr.select();
    INFO(fptest::describe(c) << " dim=" << x.dim);
    CHECK(pr.state_bytes() == documented_qk_bytes(pr, o, kept.pivotal.size(), kept.complementary.size(),
                                                  static_cast<std::size_t>(c.heads), static_cast<std::size_t>(x.dim), 2));
  }
}

// The streaming pruner (stream.hpp): fed layer by layer, it must return
// exactly what select returns on the stacked layers (operator== on the
// selection) for every option, budget, element type and layout; report
// every misuse and every non-finite value that select reports, with the
// same message where select's is defined; stay unchanged after an error;
// and hold the documented state, O(L x N), plus M x N only when the
// complementary layer comes before the last pivot layer.

#include <freepruner/adapters/eigen.hpp>
#include <freepruner/freepruner.hpp>
#include <freepruner/stream.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define FREEPRUNER_STREAM_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FREEPRUNER_STREAM_SANITIZED 1
#endif
#ifndef FREEPRUNER_STREAM_SANITIZED
#define FREEPRUNER_STREAM_SANITIZED 0
#endif
// glibc's own count of the bytes malloc has handed out (every operator new
// ends there): a measure of the state independent of state_bytes().
#if !FREEPRUNER_STREAM_SANITIZED && defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define FREEPRUNER_STREAM_MALLINFO 1
#include <malloc.h>
#else
#define FREEPRUNER_STREAM_MALLINFO 0
#endif

namespace fp = freepruner;
using Catch::Matchers::Contains;
using fp::errc;
using fp::index_t;
using fp::token_t;

namespace {

using fptest::inf_v;
using fptest::nan_v;

// ---------------------------------------------------------------------------
// Inputs: L layers stored in one of three layouts, seen as the stacked view
// select reads and as one-layer views the pruner reads.

enum class layout { contiguous, keys_major, heads_outer_padded };

template <class E>
struct stacked {
  index_t L = 0, H = 0, N = 0;
  std::vector<E> data;
  fp::attention_view<const E> view;

  stacked() = default;
  stacked(const stacked& o)
      : L(o.L), H(o.H), N(o.N), data(o.data), view(data.data(), o.view.extents(), o.view.strides()) {}
  stacked& operator=(const stacked&) = delete;

  // One layer as the engine hands it over: extents [1][H][N][N], the stack's strides.
  fp::attention_view<const E> layer(index_t l) const {
    return fp::attention_view<const E>(view.row(l, 0, 0), {1, H, N, N}, view.strides());
  }
  E& at(index_t l, index_t h, index_t i, index_t j) { return const_cast<E&>(view(l, h, i, j)); }
};

template <class E>
stacked<E> store(const std::vector<E>& dense, index_t L, index_t H, index_t N, layout how) {
  stacked<E> s;
  s.L = L, s.H = H, s.N = N;
  const index_t pitch = N + 3;
  switch (how) {
    case layout::contiguous: s.data = dense; break;
    case layout::keys_major: s.data.resize(dense.size()); break;
    case layout::heads_outer_padded: s.data.assign(static_cast<std::size_t>(H * L * N * pitch), E(-1.0f)); break;
  }
  if (how == layout::contiguous)
    s.view = fp::attention_view<const E>(s.data.data(), L, H, N);
  else if (how == layout::keys_major)
    s.view = fp::attention_view<const E>(s.data.data(), {L, H, N, N}, {H * N * N, N * N, 1, N});
  else
    s.view = fp::attention_view<const E>(s.data.data(), {L, H, N, N}, {N * pitch, L * N * pitch, pitch, 1});
  if (how != layout::contiguous)
    for (index_t l = 0; l < L; ++l)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j) s.at(l, h, i, j) = dense[static_cast<std::size_t>(((l * H + h) * N + i) * N + j)];
  return s;
}

layout random_layout() { return static_cast<layout>(fptest::uniform_int(0, 2)); }

// A random configuration over up to 6 layers: pivot layers any non-empty
// subset in any order (the last sometimes spelled -1), the complementary
// layer anywhere (before, among or after the pivot layers), so some layers
// are neither.
fpref::config stream_config(bool exact_mean = false) {
  fpref::config c = fptest::random_config(exact_mean);
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

// A few budgets of each kind for one input.
std::vector<fp::budget> budgets_for(const fpref::config& c) {
  const int m = c.tokens - c.prefix - c.suffix;
  return {fptest::budget_of(c), fp::budget::adaptive(), fp::budget::count(fptest::uniform_int(1, m + 2)),
          fp::budget::ratio(fptest::uniform(0.01, 1.0)), fp::budget::count(1), fp::budget::ratio(1.0)};
}

// Feeds every layer, skipping the unwanted ones when asked; the first
// failure's status.
template <class E>
fp::status feed(fp::pruner& pr, const stacked<E>& s, bool skip_unwanted) {
  for (index_t l = 0; l < s.L; ++l) {
    REQUIRE(pr.observed() == l);
    const fp::status st = skip_unwanted && !pr.wants(l) ? pr.try_skip() : pr.try_observe(s.layer(l));
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

// The documented state (stream.hpp), from the pruner's inputs and answer.
std::size_t documented_bytes(const fp::pruner& pr, const fp::options& o, std::size_t pivots, std::size_t complements) {
  const std::size_t n = static_cast<std::size_t>(pr.tokens()), layers = static_cast<std::size_t>(pr.layers());
  const std::size_t m = n - static_cast<std::size_t>(o.prefix_tokens + o.suffix_tokens);
  std::size_t p = o.pivot_layers.empty() ? layers : o.pivot_layers.size();
  index_t last_pivot = 0;
  if (o.pivot_layers.empty()) last_pivot = pr.layers() - 1;
  for (index_t l : o.pivot_layers) last_pivot = std::max(last_pivot, l < 0 ? pr.layers() - 1 : l);
  const index_t c = o.complementary_layer < 0 ? pr.layers() - 1 : o.complementary_layer;
  const std::size_t chunk = std::max<std::size_t>(1, (std::size_t{1} << 21) / n);
  const std::size_t score_vectors = c < last_pivot                               ? 0
                                    : o.complementary_from == fp::direction::row ? 1
                                                                                 : std::min(pivots, chunk);
  return 8 * (p * n + 2 * n + score_vectors * n) + 4 * (pivots + complements) + 8 * (layers + 2 * p) +
         (c < last_pivot ? 8 * m * n : 0) - (o.pivot_layers.empty() ? 8 * p : 0);
}

// The stages' outputs, compared to the bit with the stage routines on the
// stacked maps: a summation in another order shows here even where the
// selection does not change.
template <class E>
void same_stages(const fp::pruner& pr, const fp::attention_view<const E>& v, const fp::options& o) {
  fp::detail::plan p;
  REQUIRE(fp::detail::make_plan(v.extents(), o, p));
  std::vector<std::vector<double>> degrees;
  for (index_t l : p.pivot_layers) {
    degrees.push_back(fp::contribution_degree(v, l));
    REQUIRE(pr.contribution_degree(l) == degrees.back());
  }
  const auto pivots = fp::pivotal_tokens(degrees, o);
  REQUIRE(pr.pivotal() == pivots);
  const fp::complements want = fp::complementary_tokens(v, pivots, o), got = pr.complementary();
  REQUIRE(got.tokens == want.tokens);
  REQUIRE(got.affinity == want.affinity);
}

// ---------------------------------------------------------------------------
// Exactness on random maps.

template <class E>
int check_against_select(int trials, bool exact_mean) {
  int compared = 0;
  for (int t = 0; t < trials; ++t) {
    const fpref::config c = stream_config(exact_mean);
    const fp::options o = stream_options(c);
    const auto dense = fptest::convert<E>(fptest::random_maps(c.layers, c.heads, c.tokens, fptest::uniform_int(0, 5) == 0));
    const auto s = store(dense, c.layers, c.heads, c.tokens, random_layout());
    INFO(fptest::describe(c));
    fp::pruner pr(c.layers, c.tokens, o);
    REQUIRE(feed(pr, s, fptest::uniform_int(0, 1) == 1));
    same_stages(pr, s.view, o);
    for (const fp::budget& b : budgets_for(c)) {
      const fp::selection want = fp::select(s.view, b, o);
      const fp::selection got = pr.select(b);
      INFO("budget kind " << static_cast<int>(b.mode()) << " " << b.count_value() << " " << b.ratio_value()
                          << "\n want " << show(want) << "\n got  " << show(got));
      REQUIRE(got == want);
      ++compared;
    }
    // The next image through the same pruner.
    const auto dense2 = fptest::convert<E>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const auto s2 = store(dense2, c.layers, c.heads, c.tokens, random_layout());
    pr.reset();
    REQUIRE(pr.observed() == 0);
    REQUIRE(feed(pr, s2, fptest::uniform_int(0, 1) == 1));
    const fp::budget b = fptest::budget_of(c);
    REQUIRE(pr.select(b) == fp::select(s2.view, b, o));
    ++compared;
  }
  return compared;
}

}  // namespace

TEST_CASE("pruner equals select on random float maps: every option, budget and layout", "[stream][exact]") {
  const int compared = check_against_select<float>(500, false);
  CHECK(compared == 500 * 7);
}

TEST_CASE("pruner equals select on random double, half and bfloat16 maps", "[stream][exact]") {
  check_against_select<double>(200, false);
  check_against_select<Eigen::half>(200, false);
  check_against_select<Eigen::bfloat16>(200, false);
}

TEST_CASE("pruner equals select on every SIMD level of the CPU kernels", "[stream][exact][simd]") {
  struct restore {
    ~restore() { fp::detail::cpu::simd_cap().store(-1); }
  } guard;
  for (int level = 0; level <= static_cast<int>(fp::detail::cpu::detected_simd()); ++level) {
    fp::detail::cpu::simd_cap().store(level);
    INFO("SIMD level cap " << level);
    check_against_select<float>(60, false);
    check_against_select<Eigen::half>(30, false);
    check_against_select<Eigen::bfloat16>(30, false);
  }
}

TEST_CASE("pruner matches the float64 reference", "[stream][reference]") {
  auto run = [](auto tag, int trials, bool exact_mean) {
    using E = decltype(tag);
    for (int t = 0; t < trials; ++t) {
      const fpref::config c = fptest::random_config(exact_mean);
      const auto dense = fptest::convert<E>(fptest::random_maps(c.layers, c.heads, c.tokens, fptest::uniform_int(0, 5) == 0));
      const fpref::result want = fpref::select(fptest::widen(dense), c);
      const auto s = store(dense, c.layers, c.heads, c.tokens, layout::contiguous);
      fp::pruner pr(c.layers, c.tokens, fptest::options_of(c));
      REQUIRE(feed(pr, s, true));
      const fp::selection got = pr.select(fptest::budget_of(c));
      INFO(fptest::describe(c));
      REQUIRE(got.indices == fptest::tokens_of(want.indices));
      REQUIRE(got.pivotal == fptest::tokens_of(want.pivotal));
      REQUIRE(got.complementary == fptest::tokens_of(want.complementary));
    }
  };
  run(float{}, 300, false);
  run(double{}, 100, false);
  run(Eigen::half{}, 100, true);
  run(Eigen::bfloat16{}, 100, true);
}

TEST_CASE("pruner on the SPEC conformance vectors", "[stream][conformance]") {
#ifdef FREEPRUNER_TEST_CONFORMANCE_DIR
  const std::string dir = FREEPRUNER_TEST_CONFORMANCE_DIR;
#else
  const std::string dir = "tests/data/conformance";
#endif
  std::ifstream cases(dir + "/cases.txt");
  INFO("the conformance vectors: " << dir << "/cases.txt (tools/tests/make_conformance.py writes them)");
  REQUIRE(cases);
  auto read_list = [](std::istringstream& in) {
    std::vector<token_t> out;
    std::string word;
    while (in >> word && word != "|") out.push_back(static_cast<token_t>(std::stol(word)));
    return out;
  };
  int checked = 0;
  std::string line;
  while (std::getline(cases, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string name, file, kind, direction, bar;
    index_t L = 0, H = 0, N = 0, prefix = 0, suffix = 0, pivots = 0, comp = 0;
    double value = 0;
    in >> name >> file >> L >> H >> N >> prefix >> suffix >> kind >> value >> pivots >> direction >> comp >> bar;
    fp::selection want;
    want.indices = read_list(in);
    want.pivotal = read_list(in);
    want.complementary = read_list(in);
    INFO(name);
    std::vector<float> maps(static_cast<std::size_t>(L * H * N * N));
    std::ifstream f(dir + "/" + file, std::ios::binary);
    f.read(reinterpret_cast<char*>(maps.data()), static_cast<std::streamsize>(maps.size() * sizeof(float)));
    REQUIRE(f);
    fp::options o;
    o.prefix_tokens = prefix;
    o.suffix_tokens = suffix;
    o.pivots_per_layer = pivots;
    o.complementary_layer = comp;
    o.complementary_from = direction == "column" ? fp::direction::column : fp::direction::row;
    const fp::budget b = kind == "adaptive" ? fp::budget::adaptive()
                         : kind == "count"  ? fp::budget::count(static_cast<index_t>(value))
                                            : fp::budget::ratio(value);
    for (layout how : {layout::contiguous, layout::keys_major, layout::heads_outer_padded}) {
      const auto s = store(maps, L, H, N, how);
      fp::pruner pr(L, N, o);
      REQUIRE(feed(pr, s, how == layout::keys_major));
      const fp::selection got = pr.select(b);
      INFO("layout " << static_cast<int>(how) << "\n want " << show(want) << "\n got  " << show(got));
      REQUIRE(got == want);
    }
    const std::vector<double> wide(maps.begin(), maps.end());
    fp::pruner pr(L, N, o);
    REQUIRE(feed(pr, store(wide, L, H, N, layout::contiguous), false));
    REQUIRE(pr.select(b) == want);
    ++checked;
  }
  CHECK(checked >= 8);
}

TEST_CASE("pruner reads Eigen tensors of one layer, either storage order", "[stream][adapters]") {
  for (int t = 0; t < 40; ++t) {
    const fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    const index_t L = c.layers, H = c.heads, N = c.tokens;
    const auto dense = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const fp::attention_view<const float> v(dense.data(), L, H, N);
    const fp::budget b = fptest::budget_of(c);
    using row_major = Eigen::Tensor<float, 4, Eigen::RowMajor>;
    using col_major = Eigen::Tensor<float, 4, Eigen::ColMajor>;
    fp::pruner by_row(L, N, o), by_col(L, N, o);
    for (index_t l = 0; l < L; ++l) {
      row_major r(1, H, N, N);
      col_major k(1, H, N, N);
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j) r(0, h, i, j) = k(0, h, i, j) = v(l, h, i, j);
      by_row.observe(Eigen::TensorMap<row_major>(r.data(), 1, H, N, N));
      by_col.observe(k);
    }
    INFO(fptest::describe(c));
    const fp::selection want = fp::select(v, b, o);
    REQUIRE(by_row.select(b) == want);
    REQUIRE(by_col.select(b) == want);
  }
}

TEST_CASE("pruner at CLIP-336 size, 2 and 23 layers; its state is as documented", "[stream][exact][memory]") {
  // One layer's buffer, reused for every layer as an engine does; select
  // sees the same layers through a layer stride of 0.
  const index_t H = 16, N = 577;
  const auto one = fptest::convert<float>(fptest::random_maps(1, static_cast<int>(H), static_cast<int>(N)));
  const fp::attention_view<const float> layer(one.data(), 1, H, N);
  for (index_t L : {index_t(2), index_t(23)})
    for (index_t c : {index_t(-1), index_t(0)}) {
      fp::options o;
      o.prefix_tokens = 1;
      o.complementary_layer = c;
      INFO("L = " << L << ", complementary_layer = " << c);
      const fp::attention_view<const float> all(one.data(), {L, H, N, N}, {0, N * N, N, 1});
#if FREEPRUNER_STREAM_MALLINFO
      const auto heap_before = mallinfo2().uordblks + mallinfo2().hblkhd;  // small chunks and mmapped blocks
#endif
      auto* pr = new fp::pruner(L, N, o);
      for (index_t l = 0; l < L; ++l) pr->observe(layer);
#if FREEPRUNER_STREAM_MALLINFO
      const auto heap_held = static_cast<long long>(mallinfo2().uordblks + mallinfo2().hblkhd - heap_before) -
                             static_cast<long long>(sizeof(fp::pruner));
#endif
      const std::size_t bytes = pr->state_bytes();
      same_stages(*pr, all, o);
      for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::ratio(0.5), fp::budget::count(64)}) {
        const fp::selection want = fp::select(all, b, o);
        REQUIRE(pr->select(b) == want);
      }
      const fp::selection kept = pr->select();
      const std::size_t want_bytes = documented_bytes(*pr, o, kept.pivotal.size(), kept.complementary.size());
      INFO("state_bytes " << bytes << ", documented " << want_bytes << ", pivots " << kept.pivotal.size()
                          << ", complements " << kept.complementary.size());
      CHECK(bytes == want_bytes);
      if (c == -1) CHECK(bytes < static_cast<std::size_t>(8 * (L + 3) * N + 8 * 2 * N));
      if (c == 0 && L > 1) CHECK(bytes > static_cast<std::size_t>(8 * (N - 1) * N));
#if FREEPRUNER_STREAM_MALLINFO
      // malloc's own count: the buffers, a chunk header each, give or take
      // the small chunks its thread cache held before (counted as in use).
      INFO("heap held " << heap_held);
      CHECK(heap_held >= static_cast<long long>(bytes) - 4096);
      CHECK(heap_held <= static_cast<long long>(bytes) + 4096);
#endif
      // The next image of the same shape keeps the buffers.
      pr->reset();
      CHECK(pr->state_bytes() == bytes);
      for (index_t l = 0; l < L; ++l) pr->observe(layer);
      CHECK(pr->select() == kept);
      delete pr;
    }
}

TEST_CASE("state_bytes is the documented formula on random inputs", "[stream][memory]") {
  for (int t = 0; t < 200; ++t) {
    const fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    const auto dense = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const auto s = store(dense, c.layers, c.heads, c.tokens, layout::contiguous);
    fp::pruner pr(c.layers, c.tokens, o);
    REQUIRE(feed(pr, s, true));
    const fp::selection kept = pr.select();
    INFO(fptest::describe(c));
    CHECK(pr.state_bytes() == documented_bytes(pr, o, kept.pivotal.size(), kept.complementary.size()));
  }
}

TEST_CASE("pruner: wants() names the layers read; skip() passes the others", "[stream][layers]") {
  const auto dense = fptest::convert<float>(fptest::random_maps(5, 2, 20));
  const auto s = store(dense, 5, 2, 20, layout::contiguous);
  fp::options o;
  o.pivot_layers = {3, 1};
  o.complementary_layer = 0;  // before both pivot layers
  fp::pruner pr(5, 20, o);
  const std::vector<bool> expected = {true, true, false, true, false};
  for (index_t l = 0; l < 5; ++l) CHECK(pr.wants(l) == expected[static_cast<std::size_t>(l)]);
  pr.observe(s.layer(0));
  pr.observe(s.layer(1));
  pr.skip();
  pr.observe(s.layer(3));
  pr.skip();
  CHECK(pr.observed() == 5);
  CHECK(pr.heads() == 2);
  for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::ratio(0.3)}) CHECK(pr.select(b) == fp::select(s.view, b, o));

  // An unwanted layer's values are not read (as in select): a NaN there is no error.
  auto bad = s;
  bad.at(2, 1, 3, 4) = nan_v;
  bad.at(4, 0, 0, 0) = inf_v;
  pr.reset();
  CHECK(pr.heads() == 0);
  REQUIRE(feed(pr, bad, false));
  CHECK(pr.select() == fp::select(bad.view, fp::budget::adaptive(), o));
}

// ---------------------------------------------------------------------------
// Misuse: an error naming the argument and the value, and the pruner unchanged.

namespace {

template <class F>
void expect_error(F&& call, errc code, const std::string& text) {
  try {
    call();
    FAIL("no error; expected " << fp::to_string(code) << ": " << text);
  } catch (const fp::error& e) {
    CHECK(e.code() == code);
    CHECK_THAT(e.what(), Contains(text));
  }
}

}  // namespace

TEST_CASE("pruner: bad constructor arguments", "[stream][errors]") {
  auto check_both = [](index_t layers, index_t tokens, const fp::options& o, errc code, const std::string& text) {
    const fp::status s = fp::pruner::validate(layers, tokens, o);
    CHECK(s.code() == code);
    CHECK_THAT(s.message(), Contains(text));
    expect_error([&] { fp::pruner pr(layers, tokens, o); }, code, text);
  };
  fp::options o;
  check_both(0, 5, o, errc::invalid_shape, "pruner: layers = 0 (must be >= 1)");
  check_both(-3, 5, o, errc::invalid_shape, "layers = -3");
  check_both(2, 0, o, errc::invalid_shape, "pruner: tokens = 0 (must be >= 1)");
  o.prefix_tokens = 3;
  o.suffix_tokens = 2;
  check_both(2, 5, o, errc::invalid_tokens,
             "options.prefix_tokens + options.suffix_tokens = 3 + 2 leaves no candidate among tokens = 5");
  o = {};
  o.pivot_layers = {0, 2};
  check_both(2, 5, o, errc::invalid_layer, "options.pivot_layers entry = 2 is outside the given layers 0..1");
  o.pivot_layers = {1, -1};
  check_both(2, 5, o, errc::invalid_layer, "options.pivot_layers names layer 1 twice");
  o = {};
  o.complementary_layer = 4;
  check_both(3, 5, o, errc::invalid_layer, "options.complementary_layer = 4");
  o = {};
  o.fence_factor = -1;
  check_both(1, 5, o, errc::invalid_option, "options.fence_factor = -1");
  o.fence_factor = nan_v;
  check_both(1, 5, o, errc::invalid_option, "options.fence_factor = nan");
  o = {};
  o.pivots_per_layer = -2;
  check_both(1, 5, o, errc::invalid_option, "options.pivots_per_layer = -2");
  o = {};
  o.complementary_from = static_cast<fp::direction>(7);
  check_both(1, 5, o, errc::invalid_option, "options.complementary_from = 7");
  CHECK(fp::pruner::validate(2, 5, {}));
}

TEST_CASE("pruner: calls out of order, bad budgets, bad layer shapes", "[stream][errors]") {
  const auto dense = fptest::convert<float>(fptest::random_maps(2, 3, 9));
  const auto s = store(dense, 2, 3, 9, layout::contiguous);
  fp::options o;
  o.prefix_tokens = 1;
  fp::pruner pr(2, 9, o);

  expect_error([&] { (void)pr.select(); }, errc::invalid_layer, "pruner::select: 0 of 2 layers observed");
  expect_error([&] { (void)pr.wants(2); }, errc::invalid_layer, "pruner::wants: layer = 2 is outside 0..1");
  expect_error([&] { (void)pr.wants(-1); }, errc::invalid_layer, "pruner::wants: layer = -1");
  expect_error([&] { pr.skip(); }, errc::invalid_layer, "pruner::skip: layer 0 is a pivot layer");
  expect_error([&] { (void)pr.contribution_degree(0); }, errc::invalid_layer,
               "pruner::contribution_degree: layer 0 is not observed yet (0 observed)");
  expect_error([&] { (void)pr.contribution_degree(2); }, errc::invalid_layer,
               "pruner::contribution_degree: layer = 2 is outside the given layers 0..1");
  expect_error([&] { (void)pr.pivotal(); }, errc::invalid_layer, "pruner::pivotal: the last pivot layer, 1, is not observed yet");
  expect_error([&] { (void)pr.complementary(); }, errc::invalid_layer, "pruner::complementary: layer 1 is not observed yet");

  // Shapes: two layers at once, not square, other tokens; then other heads than the first layer's.
  expect_error([&] { pr.observe(s.view); }, errc::invalid_shape, "pruner::observe, layer 0: layer_maps has layers = 2");
  expect_error([&] { pr.observe(fp::attention_view<const float>(dense.data(), {1, 3, 9, 8}, {0, 81, 9, 1})); },
               errc::invalid_shape, "attention maps are not square: queries = 9, keys = 8");
  expect_error([&] { pr.observe(fp::attention_view<const float>(dense.data(), 1, 3, 8)); }, errc::invalid_shape,
               "layer_maps has tokens = 8, the pruner was built for tokens = 9");
  expect_error([&] { pr.observe(fp::attention_view<const float>(dense.data(), 1, 0, 9)); }, errc::invalid_shape,
               "attention maps: heads = 0 (must be >= 1)");
  expect_error([&] { pr.observe(fp::attention_view<const float>(nullptr, 1, 3, 9)); }, errc::null_data,
               "attention maps: data of layer 0 is null with shape [2, 3, 9, 9]");
  CHECK(pr.observed() == 0);
  CHECK(pr.heads() == 0);
  pr.observe(s.layer(0));
  CHECK(pr.heads() == 3);
  expect_error([&] { pr.observe(fp::attention_view<const float>(dense.data(), 1, 2, 9)); }, errc::invalid_shape,
               "pruner::observe, layer 1: layer_maps has heads = 2, the image's first layer had heads = 3");
  expect_error([&] { (void)pr.select(); }, errc::invalid_layer, "pruner::select: 1 of 2 layers observed");
  CHECK(pr.observed() == 1);
  pr.observe(s.layer(1));
  expect_error([&] { pr.observe(s.layer(1)); }, errc::invalid_layer, "pruner::observe: all 2 layers were already observed");
  expect_error([&] { pr.skip(); }, errc::invalid_layer, "pruner::skip: all 2 layers were already observed");
  CHECK(pr.observed() == 2);

  expect_error([&] { (void)pr.select(fp::budget::count(0)); }, errc::invalid_budget, "budget::count(0) (must be >= 1)");
  expect_error([&] { (void)pr.select(fp::budget::ratio(1.5)); }, errc::invalid_budget, "budget::ratio(1.5)");
  expect_error([&] { (void)pr.select(fp::budget::ratio(nan_v)); }, errc::invalid_budget, "budget::ratio(nan)");
  // Errors changed nothing: the answer is select's.
  CHECK(pr.select(fp::budget::ratio(0.5)) == fp::select(s.view, fp::budget::ratio(0.5), o));

  // try_ forms: a status, the output emptied.
  fp::selection out{{1}, {1}, {}};
  const fp::status st = pr.try_select(fp::budget::count(-4), out);
  CHECK(st.code() == errc::invalid_budget);
  CHECK(out == fp::selection{});
  CHECK(pr.try_select(fp::budget::count(4), out));
  CHECK(out.size() == 4);
  CHECK(pr.try_observe(s.layer(0)).code() == errc::invalid_layer);
  CHECK(pr.try_skip().code() == errc::invalid_layer);

  // skip() of the complementary layer that picks no pivots.
  fp::options q;
  q.pivot_layers = {0};
  q.complementary_layer = 1;
  fp::pruner pq(3, 9, q);
  CHECK(pq.wants(1));
  CHECK_FALSE(pq.wants(2));
  pq.observe(s.layer(0));
  CHECK(pq.contribution_degree(0) == fp::contribution_degree(s.view, 0));
  CHECK(pq.pivotal().size() >= 1);
  expect_error([&] { (void)pq.contribution_degree(1); }, errc::invalid_layer,
               "pruner::contribution_degree: layer 1 is not a pivot layer");
  expect_error([&] { pq.skip(); }, errc::invalid_layer, "pruner::skip: layer 1 is the complementary layer");
  CHECK(pq.observed() == 1);
}

TEST_CASE("pruner: a layer with a non-finite value is refused and can be retried", "[stream][errors]") {
  for (auto dir : {fp::direction::row, fp::direction::column})
    for (index_t c : {index_t(-1), index_t(0)}) {
      const auto dense = fptest::convert<float>(fptest::random_maps(3, 2, 12));
      const auto clean = store(dense, 3, 2, 12, layout::contiguous);
      auto bad = clean;
      bad.at(1, 1, 4, 7) = nan_v;
      fp::options o;
      o.complementary_from = dir;
      o.complementary_layer = c;
      fp::pruner pr(3, 12, o);
      pr.observe(clean.layer(0));
      expect_error([&] { pr.observe(bad.layer(1)); }, errc::non_finite,
                   "attention maps[layer 1][head 1][query 4][key 7] = nan (every value read must be finite)");
      CHECK(pr.observed() == 1);
      pr.observe(clean.layer(1));  // the retry
      pr.observe(clean.layer(2));
      CHECK(pr.select(fp::budget::ratio(0.4)) == fp::select(clean.view, fp::budget::ratio(0.4), o));
      // And from scratch after a reset.
      pr.reset();
      REQUIRE(feed(pr, clean, false));
      CHECK(pr.select() == fp::select(clean.view, fp::budget::adaptive(), o));
    }
}

// ---------------------------------------------------------------------------
// Non-finite values: the pruner fails exactly when select fails, with its
// code, and with its message when there is one bad value (or the bad values
// are all in the complementary layer, where the order of the pivots decides).

namespace {

template <class E>
void inject(stacked<E>& s, index_t l, index_t h, index_t i, index_t j) {
  const int kind = fptest::uniform_int(0, 3);
  const double x = kind == 0 ? nan_v : kind == 1 ? -inf_v : inf_v;
  s.at(l, h, i, j) = static_cast<E>(kind == 3 ? 3e38 : x);  // 3e38: finite, but large
}

fp::status run_stream(fp::pruner& pr, const stacked<float>& s, const fp::budget& b, fp::selection& out) {
  if (auto st = feed(pr, s, true); !st) return st;
  return pr.try_select(b, out);
}

}  // namespace

TEST_CASE("pruner fails where select fails, with its message", "[stream][errors][non_finite]") {
  int failures = 0, same_message = 0;
  for (int t = 0; t < 600; ++t) {
    fpref::config c = stream_config();
    const fp::options o = stream_options(c);
    const auto dense = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    auto s = store(dense, c.layers, c.heads, c.tokens, random_layout());
    const index_t L = c.layers, H = c.heads, N = c.tokens;
    const int bad_values = fptest::uniform_int(0, 3) == 0 ? fptest::uniform_int(2, 5) : 1;
    // Only in the complementary layer (when it picks no pivots) or anywhere.
    fp::detail::plan p;
    REQUIRE(fp::detail::make_plan({L, H, N, N}, o, p));
    const bool c_picks =
        std::find(p.pivot_layers.begin(), p.pivot_layers.end(), p.complementary_layer) != p.pivot_layers.end();
    const bool only_c = !c_picks && fptest::uniform_int(0, 1) == 1;
    for (int k = 0; k < bad_values; ++k)
      inject(s, only_c ? p.complementary_layer : fptest::uniform_int(0, static_cast<int>(L - 1)),
             fptest::uniform_int(0, static_cast<int>(H - 1)), fptest::uniform_int(0, static_cast<int>(N - 1)),
             fptest::uniform_int(0, static_cast<int>(N - 1)));
    const fp::budget b = fptest::budget_of(c);
    fp::selection want, got;
    const fp::status one_shot = fp::try_select(s.view, b, o, want);
    fp::pruner pr(L, N, o);
    const fp::status streamed = run_stream(pr, s, b, got);
    INFO(fptest::describe(c) << "\n select: " << one_shot.message() << "\n pruner: " << streamed.message());
    REQUIRE(one_shot.code() == streamed.code());
    if (one_shot.ok()) {
      REQUIRE(got == want);
      continue;
    }
    ++failures;
    if (bad_values == 1 || only_c) {
      REQUIRE(streamed.message() == one_shot.message());
      ++same_message;
    }
  }
  CHECK(failures > 100);
  CHECK(same_message > 50);
}

TEST_CASE("pruner reports a complementary layer's bad values as select does, across select's pivot chunks",
          "[stream][errors][non_finite]") {
  // N = 1500: select scores pivots in chunks of 2^21 / 1500 = 1398 and
  // reports the first chunk with a bad value, the earliest head first within
  // it. 1450 pivots from layer `pivot`, complements from layer `comp`.
  const index_t H = 2, N = 1500;
  std::vector<float> dense(static_cast<std::size_t>(2 * H * N * N));
  std::mt19937_64 gen(fptest::rng()());
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (auto& x : dense) x = u(gen) / static_cast<float>(N);
  for (index_t pivot : {index_t(0), index_t(1)})
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      const index_t comp = 1 - pivot;  // comp = 0: kept until the pivots are known
      fp::options o;
      o.pivot_layers = {pivot};
      o.complementary_layer = comp;
      o.pivots_per_layer = 1450;
      o.complementary_from = dir;
      const auto clean = store(dense, 2, H, N, layout::contiguous);
      const auto pivots = fp::pivotal_tokens({fp::contribution_degree(clean.view, pivot)}, o);
      REQUIRE(pivots.size() == 1450);
      auto line = [&](std::size_t k, index_t h, index_t other, double x, stacked<float>& s) {
        const auto p = static_cast<index_t>(pivots[k]);
        if (dir == fp::direction::row)
          s.at(comp, h, p, other) = static_cast<float>(x);
        else
          s.at(comp, h, other, p) = static_cast<float>(x);
      };
      struct fault {
        std::size_t k;
        index_t h, other;
        double x;
      };
      const std::vector<std::vector<fault>> scenarios = {
          {{1397, 1, 5, nan_v}, {1398, 0, 3, nan_v}},           // last of chunk 1 vs first of chunk 2
          {{10, 1, 5, inf_v}, {20, 0, 9, -inf_v}, {30, 0, 2, nan_v}},  // one chunk: head 0 first
          {{1400, 1, 7, nan_v}, {1420, 1, 4, nan_v}},
          {{5, 1, 8, -inf_v}, {700, 0, 1, nan_v}, {700, 0, 0, inf_v}},
      };
      for (const auto& faults : scenarios) {
        auto s = clean;
        for (const fault& f : faults) line(f.k, f.h, f.other, f.x, s);
        fp::selection want, got;
        const fp::status one_shot = fp::try_select(s.view, fp::budget::ratio(0.5), o, want);
        fp::pruner pr(2, N, o);
        const fp::status streamed = run_stream(pr, s, fp::budget::ratio(0.5), got);
        INFO("pivot layer " << pivot << (dir == fp::direction::row ? " row" : " column") << "\n select: "
                            << one_shot.message() << "\n pruner: " << streamed.message());
        REQUIRE(!one_shot.ok());
        CHECK(streamed.code() == one_shot.code());
        CHECK(streamed.message() == one_shot.message());
      }
      fp::pruner pr(2, N, o);
      fp::selection got;
      REQUIRE(run_stream(pr, clean, fp::budget::ratio(0.5), got));
      CHECK(got == fp::select(clean.view, fp::budget::ratio(0.5), o));
    }
}

TEST_CASE("pruner reports sums over heads that overflow as select does", "[stream][errors][non_finite]") {
  // Double maps: every value finite, one pivot's complementary line sums
  // past the double range (2 heads of 1e308), before or after the pivots.
  for (index_t comp : {index_t(0), index_t(1)})
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      const auto dense = fptest::random_maps(2, 2, 10);
      auto s = store(dense, 2, 2, 10, layout::contiguous);
      fp::options o;
      o.pivot_layers = {1 - comp};
      o.complementary_layer = comp;
      o.complementary_from = dir;
      const auto pivots = fp::pivotal_tokens({fp::contribution_degree(s.view, 1 - comp)}, o);
      const index_t p = pivots.front(), other = p == 3 ? 4 : 3;
      for (index_t h = 0; h < 2; ++h) (dir == fp::direction::row ? s.at(comp, h, p, other) : s.at(comp, h, other, p)) = 1e308;
      fp::selection want, got;
      const fp::status one_shot = fp::try_select(s.view, fp::budget::adaptive(), o, want);
      fp::pruner pr(2, 10, o);
      fp::status streamed = feed(pr, s, false);
      if (streamed) streamed = pr.try_select(fp::budget::adaptive(), got);
      INFO("select: " << one_shot.message() << "\npruner: " << streamed.message());
      CHECK_THAT(one_shot.message(), Contains("a sum over heads overflows"));
      CHECK(streamed.code() == one_shot.code());
      CHECK(streamed.message() == one_shot.message());
    }
}

TEST_CASE("distinct pruners on separate threads are independent", "[stream][threads]") {
  const fpref::config c = [] {
    fpref::config k;
    k.layers = 4, k.heads = 3, k.tokens = 40, k.prefix = 1;
    return k;
  }();
  const auto dense = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
  const auto s = store(dense, c.layers, c.heads, c.tokens, layout::contiguous);
  std::vector<fp::options> opts(4);
  for (std::size_t k = 0; k < opts.size(); ++k) {
    opts[k].prefix_tokens = 1;
    opts[k].complementary_layer = static_cast<index_t>(k) - 1;
    opts[k].complementary_from = k % 2 ? fp::direction::column : fp::direction::row;
  }
  std::vector<fp::selection> got(opts.size());
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < opts.size(); ++k)
    threads.emplace_back([&, k] {
      fp::pruner pr(c.layers, c.tokens, opts[k]);
      for (int image = 0; image < 20; ++image) {
        pr.reset();
        for (index_t l = 0; l < c.layers; ++l) pr.observe(s.layer(l));
        got[k] = pr.select(fp::budget::ratio(0.5));
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t k = 0; k < opts.size(); ++k) CHECK(got[k] == fp::select(s.view, fp::budget::ratio(0.5), opts[k]));
}

// Bad input (SPEC.md "Bad input"): every invalid argument is rejected with
// the right `errc` and a message naming the argument and its value, by
// `select` (throws), `try_select` (returns a status, never throws, leaves the
// output empty), the batched view and the stage routines. Each rejection sits
// next to a valid call that differs only in the offending argument, so the
// tests prove the check is specific; maps the call does not read are not
// checked.

#include <catch2/catch.hpp>

#include <freepruner/freepruner.hpp>

#include "common.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace fp = freepruner;
using fp::errc;
using fp::index_t;
using Catch::Matchers::Contains;

namespace {

using fptest::inf_v;
using fptest::nan_v;
const float nan_f = std::numeric_limits<float>::quiet_NaN();
const float inf_f = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------
// Small maps, contiguous [layers][heads][queries][keys].

template <class E = float>
struct maps {
  index_t layers = 0, heads = 0, tokens = 0;
  std::vector<E> data;

  E& at(index_t l, index_t h, index_t i, index_t j) {
    return data[static_cast<std::size_t>(((l * heads + h) * tokens + i) * tokens + j)];
  }
  fp::attention_view<const E> view() const { return fp::attention_view<const E>(data.data(), layers, heads, tokens); }
};

// Every row the uniform softmax 1/N.
maps<float> uniform_maps(index_t layers, index_t heads, index_t tokens) {
  maps<float> m{layers, heads, tokens, {}};
  m.data.assign(static_cast<std::size_t>(layers * heads * tokens * tokens), 1.0f / static_cast<float>(tokens));
  return m;
}

// Random positive rows, each normalized to sum 1.
maps<float> random_maps(index_t layers, index_t heads, index_t tokens, unsigned seed = 7) {
  maps<float> m{layers, heads, tokens, {}};
  m.data.resize(static_cast<std::size_t>(layers * heads * tokens * tokens));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(0.05f, 1.0f);
  for (std::size_t row = 0; row < m.data.size(); row += static_cast<std::size_t>(tokens)) {
    float sum = 0;
    for (index_t j = 0; j < tokens; ++j) sum += (m.data[row + static_cast<std::size_t>(j)] = dist(gen));
    for (index_t j = 0; j < tokens; ++j) m.data[row + static_cast<std::size_t>(j)] /= sum;
  }
  return m;
}

// Random rows, except that in layer `layer` every query attends mostly to
// `focus`, which makes `focus` that layer's only pivot (an upper outlier of
// the contribution degrees).
maps<float> focused_maps(index_t layers, index_t heads, index_t tokens, index_t layer, index_t focus) {
  maps<float> m = random_maps(layers, heads, tokens);
  const float other = 1.0f / static_cast<float>(2 * tokens - 1);
  for (index_t h = 0; h < heads; ++h)
    for (index_t i = 0; i < tokens; ++i)
      for (index_t j = 0; j < tokens; ++j) m.at(layer, h, i, j) = j == focus ? other * static_cast<float>(tokens) : other;
  return m;
}

template <class E>
maps<E> convert_maps(const maps<float>& in) {
  maps<E> out{in.layers, in.heads, in.tokens, {}};
  for (float x : in.data) out.data.push_back(static_cast<E>(x));
  return out;
}

// `count` copies of `item`, as one contiguous batch.
struct batch_maps {
  index_t batch = 0;
  maps<float> item;  // shape of one item (data unused)
  std::vector<float> data;

  float& at(index_t b, index_t l, index_t h, index_t i, index_t j) {
    const index_t n = item.tokens;
    return data[static_cast<std::size_t>((((b * item.layers + l) * item.heads + h) * n + i) * n + j)];
  }
  fp::batched_attention_view<const float> view() const {
    return fp::batched_attention_view<const float>(data.data(), batch, item.layers, item.heads, item.tokens);
  }
};

batch_maps make_batch(index_t count, index_t layers, index_t heads, index_t tokens) {
  batch_maps b{count, maps<float>{layers, heads, tokens, {}}, {}};
  for (index_t k = 0; k < count; ++k) {
    const auto m = random_maps(layers, heads, tokens, static_cast<unsigned>(11 + k));
    b.data.insert(b.data.end(), m.data.begin(), m.data.end());
  }
  return b;
}

fp::options with_prefix_suffix(index_t a, index_t b) {
  fp::options o;
  o.prefix_tokens = a;
  o.suffix_tokens = b;
  return o;
}

fp::options with_layers(std::vector<index_t> pivot_layers, index_t complementary_layer) {
  fp::options o;
  o.pivot_layers = std::move(pivot_layers);
  o.complementary_layer = complementary_layer;
  return o;
}

// Something for try_select to overwrite.
fp::selection junk_selection() { return fp::selection{{1, 2, 3}, {1}, {2, 3}}; }

std::vector<fp::selection> junk_batch() { return {junk_selection(), junk_selection()}; }

// ---------------------------------------------------------------------------
// Checks. Each reports the line it was called from (the macros below).

// `call` throws freepruner::error with `code` and a message containing every part.
template <class F>
void check_error(F&& call, errc code, const std::vector<std::string>& parts) {
  bool thrown = false;
  try {
    call();
  } catch (const fp::error& e) {
    thrown = true;
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(e.code() == code);
    CHECK_THAT(what, Contains("freepruner: "));
    for (const auto& part : parts) CHECK_THAT(what, Contains(part));
  }
  CHECK(thrown);
}

void check_status(const fp::status& s, errc code, const std::vector<std::string>& parts) {
  CAPTURE(s.message());
  CHECK_FALSE(s.ok());
  CHECK_FALSE(static_cast<bool>(s));
  CHECK(s.code() == code);
  for (const auto& part : parts) CHECK_THAT(s.message(), Contains(part));
}

// select throws, try_select returns the same error without throwing and
// leaves its output empty.
template <class View>
void check_rejected(const View& v, const fp::budget& b, const fp::options& o, errc code,
                    const std::vector<std::string>& parts) {
  check_error([&] { (void)fp::select(v, b, o); }, code, parts);
  fp::selection out = junk_selection();
  fp::status s;
  CHECK_NOTHROW(s = fp::try_select(v, b, o, out));
  check_status(s, code, parts);
  CHECK(out.indices.empty());
  CHECK(out.pivotal.empty());
  CHECK(out.complementary.empty());
  // The thrown message is the status message.
  try {
    (void)fp::select(v, b, o);
  } catch (const fp::error& e) {
    CHECK(std::string(e.what()) == s.message());
  }
}

template <class View>
fp::selection check_accepted(const View& v, const fp::budget& b = fp::budget::adaptive(), const fp::options& o = {}) {
  fp::selection sel;
  CHECK_NOTHROW(sel = fp::select(v, b, o));
  CHECK_FALSE(sel.indices.empty());
  fp::selection out = junk_selection();
  fp::status s;
  CHECK_NOTHROW(s = fp::try_select(v, b, o, out));
  CAPTURE(s.message());
  CHECK(s.ok());
  CHECK(s.code() == errc::ok);
  CHECK(out == sel);
  return sel;
}

void check_batch_rejected(const fp::batched_attention_view<const float>& v, const fp::budget& b, const fp::options& o,
                          errc code, const std::vector<std::string>& parts) {
  check_error([&] { (void)fp::select(v, b, o); }, code, parts);
  std::vector<fp::selection> out = junk_batch();
  fp::status s;
  CHECK_NOTHROW(s = fp::try_select(v, b, o, out));
  check_status(s, code, parts);
  CHECK(out.empty());
}

std::vector<fp::selection> check_batch_accepted(const fp::batched_attention_view<const float>& v,
                                                const fp::budget& b = fp::budget::adaptive(), const fp::options& o = {}) {
  std::vector<fp::selection> sel;
  CHECK_NOTHROW(sel = fp::select(v, b, o));
  CHECK(static_cast<index_t>(sel.size()) == v.batch());
  std::vector<fp::selection> out = junk_batch();
  fp::status s;
  CHECK_NOTHROW(s = fp::try_select(v, b, o, out));
  CAPTURE(s.message());
  CHECK(s.ok());
  CHECK(out == sel);
  return sel;
}

}  // namespace

#define CHECK_ERROR(call, code, ...)                             \
  do {                                                           \
    INFO("checked at line " << __LINE__);                        \
    check_error([&] { (void)(call); }, code, {__VA_ARGS__});     \
  } while (0)

#define CHECK_REJECTED(view, budget_, options_, code, ...)       \
  do {                                                           \
    INFO("checked at line " << __LINE__);                        \
    check_rejected(view, budget_, options_, code, {__VA_ARGS__}); \
  } while (0)

#define CHECK_ACCEPTED(...)                 \
  do {                                      \
    INFO("checked at line " << __LINE__);   \
    (void)check_accepted(__VA_ARGS__);      \
  } while (0)

#define CHECK_BATCH_REJECTED(view, budget_, options_, code, ...)       \
  do {                                                                 \
    INFO("checked at line " << __LINE__);                              \
    check_batch_rejected(view, budget_, options_, code, {__VA_ARGS__}); \
  } while (0)

// ===========================================================================

TEST_CASE("error type and status basics", "[errors]") {
  STATIC_REQUIRE(std::is_base_of<std::invalid_argument, fp::error>::value);
  const fp::status ok;
  CHECK(ok.ok());
  CHECK(ok.code() == errc::ok);
  CHECK(ok.message().empty());
  CHECK(std::string(fp::to_string(errc::invalid_shape)) == "invalid_shape");
  CHECK(std::string(fp::to_string(errc::non_finite)) == "non_finite");

  const auto m = uniform_maps(2, 1, 4);
  CHECK_THROWS_AS(fp::select(m.view(), fp::budget::count(0)), std::invalid_argument);
  CHECK_THROWS_AS(fp::select(m.view(), fp::budget::count(0)), fp::error);
  CHECK_ACCEPTED(m.view(), fp::budget::count(1));
}

TEST_CASE("empty and negative extents are invalid_shape", "[errors]") {
  float dummy[64] = {};
  const fp::options o;
  const auto b = fp::budget::adaptive();

  SECTION("N = 0") {
    CHECK_REJECTED(fp::attention_view<const float>(dummy, 2, 2, 0), b, o, errc::invalid_shape, "queries = 0");
    CHECK_ACCEPTED(uniform_maps(2, 2, 1).view());
  }
  SECTION("L = 0") {
    CHECK_REJECTED(fp::attention_view<const float>(dummy, 0, 2, 4), b, o, errc::invalid_shape, "layers = 0");
    CHECK_ACCEPTED(uniform_maps(1, 2, 4).view());
  }
  SECTION("H = 0") {
    CHECK_REJECTED(fp::attention_view<const float>(dummy, 2, 0, 4), b, o, errc::invalid_shape, "heads = 0");
    CHECK_ACCEPTED(uniform_maps(2, 1, 4).view());
  }
  SECTION("negative extents") {
    CHECK_REJECTED(fp::attention_view<const float>(dummy, -1, 2, 4), b, o, errc::invalid_shape, "layers = -1");
    CHECK_REJECTED(fp::attention_view<const float>(dummy, 2, -2, 4), b, o, errc::invalid_shape, "heads = -2");
    CHECK_REJECTED(fp::attention_view<const float>(dummy, 2, 2, -3), b, o, errc::invalid_shape, "queries = -3");
    CHECK_REJECTED(fp::attention_view<const float>(dummy, {1, 1, 4, -4}, {16, 16, 4, 1}), b, o, errc::invalid_shape,
                   "keys = -4");
    CHECK_REJECTED(fp::attention_view<const float>(dummy, {1, 1, -4, -4}, {16, 16, 4, 1}), b, o, errc::invalid_shape,
                   "queries = -4");
  }
  SECTION("a default-constructed view") {
    CHECK_REJECTED(fp::attention_view<const float>(), b, o, errc::invalid_shape, "layers = 0");
  }
  SECTION("more tokens than a token_t holds") {
    const index_t n = index_t{std::numeric_limits<fp::token_t>::max()} + 1;
    CHECK_REJECTED(fp::attention_view<const float>(dummy, {1, 1, n, n}, {n * n, n * n, n, 1}), b, o,
                   errc::invalid_shape, "tokens = " + std::to_string(n));
  }
}

TEST_CASE("non-square maps are invalid_shape", "[errors]") {
  const auto m = random_maps(2, 2, 5);  // room for 2 x 2 x 4 x 5 as well
  const fp::options o;
  SECTION("queries < keys") {
    const fp::attention_view<const float> v(m.data.data(), {2, 2, 4, 5}, {2 * 4 * 5, 4 * 5, 5, 1});
    CHECK_REJECTED(v, fp::budget::adaptive(), o, errc::invalid_shape, "not square", "queries = 4", "keys = 5");
    CHECK_REJECTED(v, fp::budget::count(2), o, errc::invalid_shape, "queries = 4", "keys = 5");
  }
  SECTION("queries > keys") {
    const fp::attention_view<const float> v(m.data.data(), {2, 2, 5, 4}, {2 * 5 * 5, 5 * 5, 5, 1});
    CHECK_REJECTED(v, fp::budget::adaptive(), o, errc::invalid_shape, "not square", "queries = 5", "keys = 4");
  }
  SECTION("the square strided view of the same memory is fine") {
    const fp::attention_view<const float> v(m.data.data(), {2, 2, 5, 5}, {2 * 5 * 5, 5 * 5, 5, 1});
    CHECK(check_accepted(v) == check_accepted(m.view()));
  }
}

TEST_CASE("prefix and suffix tokens must leave a candidate", "[errors]") {
  const auto m = random_maps(2, 2, 8);
  const auto v = m.view();
  const auto b = fp::budget::adaptive();

  SECTION("negative prefix") {
    CHECK_REJECTED(v, b, with_prefix_suffix(-1, 0), errc::invalid_tokens, "prefix_tokens = -1");
    CHECK_REJECTED(v, b, with_prefix_suffix(-5, 2), errc::invalid_tokens, "prefix_tokens = -5");
    CHECK_ACCEPTED(v, b, with_prefix_suffix(0, 0));
  }
  SECTION("negative suffix") {
    CHECK_REJECTED(v, b, with_prefix_suffix(0, -2), errc::invalid_tokens, "suffix_tokens = -2");
    CHECK_REJECTED(v, b, with_prefix_suffix(1, -1), errc::invalid_tokens, "suffix_tokens = -1");
    CHECK_ACCEPTED(v, b, with_prefix_suffix(1, 0));
  }
  SECTION("a + b == N") {
    CHECK_REJECTED(v, b, with_prefix_suffix(5, 3), errc::invalid_tokens, "prefix_tokens", "suffix_tokens", "5 + 3",
                   "tokens = 8");
    CHECK_REJECTED(v, b, with_prefix_suffix(8, 0), errc::invalid_tokens, "prefix_tokens", "8 + 0", "tokens = 8");
    CHECK_REJECTED(v, b, with_prefix_suffix(0, 8), errc::invalid_tokens, "suffix_tokens", "0 + 8", "tokens = 8");
    CHECK_REJECTED(v, fp::budget::count(1), with_prefix_suffix(4, 4), errc::invalid_tokens, "4 + 4");
    // One candidate left: valid.
    const auto one = check_accepted(v, b, with_prefix_suffix(5, 2));
    CHECK(one.indices == std::vector<fp::token_t>{5});
    CHECK(check_accepted(v, fp::budget::count(3), with_prefix_suffix(0, 7)).indices == std::vector<fp::token_t>{0});
  }
  SECTION("a + b > N") {
    CHECK_REJECTED(v, b, with_prefix_suffix(5, 4), errc::invalid_tokens, "prefix_tokens", "suffix_tokens", "5 + 4",
                   "tokens = 8");
    CHECK_REJECTED(v, b, with_prefix_suffix(100, 0), errc::invalid_tokens, "prefix_tokens", "100 + 0");
  }
}

TEST_CASE("pivot and complementary layers must be among the given layers", "[errors]") {
  const auto m = random_maps(3, 2, 8);
  const auto v = m.view();
  const auto b = fp::budget::adaptive();

  SECTION("pivot layer out of range") {
    CHECK_REJECTED(v, b, with_layers({3}, -1), errc::invalid_layer, "pivot_layers", "= 3", "0..2");
    CHECK_REJECTED(v, b, with_layers({0, 7}, -1), errc::invalid_layer, "pivot_layers", "= 7");
    CHECK_REJECTED(v, b, with_layers({-2}, -1), errc::invalid_layer, "pivot_layers", "= -2");
    CHECK_REJECTED(v, b, with_layers({std::numeric_limits<index_t>::min()}, -1), errc::invalid_layer, "pivot_layers",
                   std::to_string(std::numeric_limits<index_t>::min()));
    CHECK_ACCEPTED(v, b, with_layers({2}, -1));
    CHECK_ACCEPTED(v, b, with_layers({0}, -1));
    CHECK_ACCEPTED(v, b, with_layers({0, 1, 2}, -1));
  }
  SECTION("-1 is the last pivot layer") {
    CHECK(check_accepted(v, b, with_layers({-1}, -1)) == check_accepted(v, b, with_layers({2}, -1)));
  }
  SECTION("duplicate pivot layers") {
    CHECK_REJECTED(v, b, with_layers({1, 1}, -1), errc::invalid_layer, "pivot_layers", "layer 1", "twice");
    CHECK_REJECTED(v, b, with_layers({0, 2, 0}, -1), errc::invalid_layer, "pivot_layers", "layer 0", "twice");
    // -1 and 2 are the same layer when L = 3.
    CHECK_REJECTED(v, b, with_layers({2, -1}, -1), errc::invalid_layer, "pivot_layers", "layer 2", "twice");
    CHECK_ACCEPTED(v, b, with_layers({1, 2}, -1));
    CHECK_ACCEPTED(v, b, with_layers({2, 0}, -1));
  }
  SECTION("complementary layer out of range") {
    CHECK_REJECTED(v, b, with_layers({}, 3), errc::invalid_layer, "complementary_layer = 3", "0..2");
    CHECK_REJECTED(v, b, with_layers({}, -2), errc::invalid_layer, "complementary_layer = -2");
    CHECK_REJECTED(v, b, with_layers({}, 100), errc::invalid_layer, "complementary_layer = 100");
    CHECK_REJECTED(v, fp::budget::ratio(0.5), with_layers({0}, 3), errc::invalid_layer, "complementary_layer = 3");
    CHECK_ACCEPTED(v, b, with_layers({}, 0));
    CHECK_ACCEPTED(v, b, with_layers({}, 2));
  }
  SECTION("-1 is the last complementary layer") {
    CHECK(check_accepted(v, b, with_layers({}, -1)) == check_accepted(v, b, with_layers({}, 2)));
  }
}

TEST_CASE("invalid budgets are invalid_budget", "[errors]") {
  const auto m = random_maps(2, 2, 8);
  const auto v = m.view();
  const fp::options o;

  SECTION("count <= 0") {
    CHECK_REJECTED(v, fp::budget::count(0), o, errc::invalid_budget, "budget::count(0)");
    CHECK_REJECTED(v, fp::budget::count(-3), o, errc::invalid_budget, "budget::count(-3)");
    CHECK_REJECTED(v, fp::budget::count(std::numeric_limits<index_t>::min()), o, errc::invalid_budget,
                   "budget::count(" + std::to_string(std::numeric_limits<index_t>::min()) + ")");
    CHECK(check_accepted(v, fp::budget::count(1), o).size() == 1);
    CHECK(check_accepted(v, fp::budget::count(100), o).size() == 8);
  }
  SECTION("ratio 0 or negative") {
    CHECK_REJECTED(v, fp::budget::ratio(0.0), o, errc::invalid_budget, "budget::ratio(0)");
    CHECK_REJECTED(v, fp::budget::ratio(-0.0), o, errc::invalid_budget, "budget::ratio(");
    CHECK_REJECTED(v, fp::budget::ratio(-0.25), o, errc::invalid_budget, "budget::ratio(-0.25)");
    CHECK(check_accepted(v, fp::budget::ratio(1e-9), o).size() == 1);
    CHECK(check_accepted(v, fp::budget::ratio(0.5), o).size() == 4);
  }
  SECTION("ratio > 1") {
    CHECK_REJECTED(v, fp::budget::ratio(1.5), o, errc::invalid_budget, "budget::ratio(1.5)");
    CHECK_REJECTED(v, fp::budget::ratio(1.0000001), o, errc::invalid_budget, "budget::ratio(1.0000001");
    CHECK(check_accepted(v, fp::budget::ratio(1.0), o).size() == 8);
  }
  SECTION("ratio NaN or infinite") {
    CHECK_REJECTED(v, fp::budget::ratio(nan_v), o, errc::invalid_budget, "budget::ratio(", "nan");
    CHECK_REJECTED(v, fp::budget::ratio(inf_v), o, errc::invalid_budget, "budget::ratio(inf)");
    CHECK_REJECTED(v, fp::budget::ratio(-inf_v), o, errc::invalid_budget, "budget::ratio(-inf)");
    CHECK(check_accepted(v, fp::budget::ratio(0.25), o).size() == 2);
  }
  SECTION("the budget is checked with prefix/suffix in place") {
    CHECK_REJECTED(v, fp::budget::count(0), with_prefix_suffix(1, 1), errc::invalid_budget, "budget::count(0)");
    CHECK(check_accepted(v, fp::budget::count(100), with_prefix_suffix(1, 1)).size() == 6);
  }
}

TEST_CASE("invalid options are invalid_option", "[errors]") {
  const auto m = random_maps(2, 2, 8);
  const auto v = m.view();
  const auto b = fp::budget::adaptive();
  fp::options o;

  SECTION("fence_factor") {
    o.fence_factor = -0.5;
    CHECK_REJECTED(v, b, o, errc::invalid_option, "fence_factor = -0.5");
    o.fence_factor = nan_v;
    CHECK_REJECTED(v, b, o, errc::invalid_option, "fence_factor = ", "nan");
    o.fence_factor = inf_v;
    CHECK_REJECTED(v, b, o, errc::invalid_option, "fence_factor = inf");
    o.fence_factor = -inf_v;
    CHECK_REJECTED(v, b, o, errc::invalid_option, "fence_factor = -inf");
    o.fence_factor = -1e-300;
    CHECK_REJECTED(v, fp::budget::count(2), o, errc::invalid_option, "fence_factor = -1e-300");
    o.fence_factor = 0.0;
    CHECK_ACCEPTED(v, b, o);
    o.fence_factor = 1e6;
    CHECK_ACCEPTED(v, b, o);
  }
  SECTION("pivots_per_layer") {
    o.pivots_per_layer = -1;
    CHECK_REJECTED(v, b, o, errc::invalid_option, "pivots_per_layer = -1");
    o.pivots_per_layer = -100;
    CHECK_REJECTED(v, fp::budget::count(3), o, errc::invalid_option, "pivots_per_layer = -100");
    o.pivots_per_layer = 0;
    CHECK_ACCEPTED(v, b, o);
    o.pivots_per_layer = 1;
    CHECK_ACCEPTED(v, b, o);
    o.pivots_per_layer = 1000;  // more than the candidates: all of them
    CHECK(check_accepted(v, b, o).pivotal.size() == 8);
  }
  SECTION("direction") {
    o.complementary_from = static_cast<fp::direction>(7);
    CHECK_REJECTED(v, b, o, errc::invalid_option, "complementary_from = 7");
    o.complementary_from = static_cast<fp::direction>(-1);
    CHECK_REJECTED(v, b, o, errc::invalid_option, "complementary_from = -1");
    o.complementary_from = fp::direction::column;
    CHECK_ACCEPTED(v, b, o);
    o.complementary_from = fp::direction::row;
    CHECK_ACCEPTED(v, b, o);
  }
}

TEST_CASE("NaN and infinities in a pivot layer are non_finite, with their position", "[errors]") {
  const auto clean = random_maps(3, 2, 8);
  const auto b = fp::budget::adaptive();
  const fp::options o;  // every layer is a pivot layer
  CHECK_ACCEPTED(clean.view(), b, o);

  SECTION("NaN") {
    auto m = clean;
    m.at(1, 1, 2, 5) = nan_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 1", "query 2", "key 5", "= nan");
    CHECK_REJECTED(m.view(), fp::budget::count(3), o, errc::non_finite, "layer 1", "head 1", "query 2", "key 5");
  }
  SECTION("+inf") {
    auto m = clean;
    m.at(0, 0, 7, 0) = inf_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 0", "head 0", "query 7", "key 0", "= inf");
  }
  SECTION("-inf") {
    auto m = clean;
    m.at(2, 1, 0, 7) = -inf_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 2", "head 1", "query 0", "key 7", "= -inf");
  }
  SECTION("+inf and -inf in the same column") {
    auto m = clean;
    m.at(1, 0, 3, 6) = inf_f;
    m.at(1, 1, 4, 6) = -inf_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 0", "query 3", "key 6", "= inf");
  }
  SECTION("on the diagonal") {
    auto m = clean;
    m.at(2, 0, 4, 4) = nan_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 2", "head 0", "query 4", "key 4");
  }
  SECTION("in a prefix row (every row of a pivot layer is read)") {
    auto m = clean;
    m.at(0, 1, 0, 3) = inf_f;
    CHECK_REJECTED(m.view(), b, with_prefix_suffix(2, 1), errc::non_finite, "layer 0", "head 1", "query 0", "key 3");
    m.at(0, 1, 0, 3) = 0.1f;
    CHECK_ACCEPTED(m.view(), b, with_prefix_suffix(2, 1));
  }
  SECTION("the only pivot layer") {
    auto m = clean;
    m.at(0, 1, 6, 2) = nan_f;
    CHECK_REJECTED(m.view(), b, with_layers({0}, 1), errc::non_finite, "layer 0", "head 1", "query 6", "key 2");
    CHECK_REJECTED(m.view(), b, with_layers({-1, 0}, 1), errc::non_finite, "layer 0", "head 1", "query 6", "key 2");
  }
}

TEST_CASE("maps that are not read are not checked", "[errors]") {
  const auto clean = random_maps(3, 2, 8);
  const auto b = fp::budget::adaptive();
  const auto o = with_layers({0}, 1);
  const auto expected = check_accepted(clean.view(), b, o);

  auto m = clean;
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < 8; ++i) m.at(2, h, i, (i + h) % 8) = (i % 3 == 0) ? nan_f : (i % 3 == 1 ? inf_f : -inf_f);
  CHECK(check_accepted(m.view(), b, o) == expected);
  CHECK(check_accepted(m.view(), fp::budget::count(5), o) == check_accepted(clean.view(), fp::budget::count(5), o));
  // The same layer, read as a pivot layer or as the complementary layer, is checked.
  CHECK_REJECTED(m.view(), b, with_layers({0, 2}, 1), errc::non_finite, "layer 2");
  CHECK_REJECTED(m.view(), b, with_layers({0}, 2), errc::non_finite, "layer 2");
  CHECK_REJECTED(m.view(), b, fp::options{}, errc::non_finite, "layer 2");
}

TEST_CASE("non-finite values in the complementary layer's pivot rows", "[errors]") {
  // Layer 0 makes token 3 the only pivot; layer 1 is only the complementary layer.
  const auto clean = focused_maps(2, 2, 8, 0, 3);
  const auto b = fp::budget::adaptive();
  auto o = with_layers({0}, 1);
  const auto expected = check_accepted(clean.view(), b, o);
  REQUIRE(expected.pivotal == std::vector<fp::token_t>{3});

  SECTION("row direction: the pivot's row is read, other rows are not") {
    auto m = clean;
    m.at(1, 1, 3, 5) = nan_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 1", "query 3", "key 5", "nan");
    m.at(1, 1, 3, 5) = clean.view()(1, 1, 3, 5);
    m.at(1, 0, 3, 0) = -inf_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 0", "query 3", "key 0", "-inf");
    m.at(1, 0, 3, 0) = clean.view()(1, 0, 3, 0);
    CHECK(check_accepted(m.view(), b, o) == expected);

    // Non-finite values outside row 3 are not read.
    for (index_t i = 0; i < 8; ++i)
      if (i != 3) m.at(1, 0, i, (i + 1) % 8) = nan_f;
    CHECK(check_accepted(m.view(), b, o) == expected);
  }
  SECTION("column direction: the pivot's column over the candidates is read") {
    o.complementary_from = fp::direction::column;
    const auto expected_column = check_accepted(clean.view(), b, o);
    auto m = clean;
    m.at(1, 0, 5, 3) = nan_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 0", "query 5", "key 3", "nan");
    m.at(1, 0, 5, 3) = clean.view()(1, 0, 5, 3);
    m.at(1, 1, 6, 3) = inf_f;
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 1", "query 6", "key 3", "inf");
    m.at(1, 1, 6, 3) = clean.view()(1, 1, 6, 3);
    // Other columns, and the pivot column in prefix rows, are not read.
    m.at(1, 0, 5, 4) = nan_f;
    m.at(1, 1, 3, 5) = inf_f;
    auto with_prefix = o;
    with_prefix.prefix_tokens = 1;
    const auto expected_prefix = check_accepted(clean.view(), b, with_prefix);
    REQUIRE(expected_prefix.pivotal == std::vector<fp::token_t>{3});
    m.at(1, 0, 0, 3) = nan_f;  // row 0 is a candidate row without a prefix, not with one
    CHECK_REJECTED(m.view(), b, o, errc::non_finite, "layer 1", "head 0", "query 0", "key 3");
    CHECK(check_accepted(m.view(), b, with_prefix) == expected_prefix);
    m.at(1, 0, 0, 3) = clean.view()(1, 0, 0, 3);
    CHECK(check_accepted(m.view(), b, o) == expected_column);
  }
}

TEST_CASE("non-finite values are located in logical positions of a strided layout", "[errors]") {
  // Memory order [query][key][head][layer]: every stride differs from the contiguous one.
  const index_t L = 2, H = 3, N = 6;
  const auto src = random_maps(L, H, N);
  std::vector<float> data(static_cast<std::size_t>(L * H * N * N));
  const fp::attention_view<const float>::extents_type strides{1, L, N * H * L, H * L};
  auto offset = [&](index_t l, index_t h, index_t i, index_t j) {
    return static_cast<std::size_t>(l * strides[0] + h * strides[1] + i * strides[2] + j * strides[3]);
  };
  for (index_t l = 0; l < L; ++l)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < N; ++i)
        for (index_t j = 0; j < N; ++j) data[offset(l, h, i, j)] = src.view()(l, h, i, j);
  const fp::attention_view<const float> v(data.data(), {L, H, N, N}, strides);
  CHECK(check_accepted(v) == check_accepted(src.view()));

  data[offset(1, 2, 4, 1)] = nan_f;
  CHECK_REJECTED(v, fp::budget::adaptive(), fp::options{}, errc::non_finite, "layer 1", "head 2", "query 4", "key 1");
}

TEST_CASE("non-finite values in double and half maps", "[errors]") {
  const auto clean = random_maps(2, 2, 6);
  const auto b = fp::budget::adaptive();
  SECTION("double") {
    auto m = convert_maps<double>(clean);
    CHECK_ACCEPTED(m.view(), b, fp::options{});
    m.at(1, 0, 2, 3) = -inf_v;
    CHECK_REJECTED(m.view(), b, fp::options{}, errc::non_finite, "layer 1", "head 0", "query 2", "key 3", "-inf");
  }
  SECTION("Eigen::half") {
    auto m = convert_maps<Eigen::half>(clean);
    CHECK_ACCEPTED(m.view(), b, fp::options{});
    m.at(0, 1, 5, 0) = Eigen::half(nan_f);
    CHECK_REJECTED(m.view(), b, fp::options{}, errc::non_finite, "layer 0", "head 1", "query 5", "key 0", "nan");
    m.at(0, 1, 5, 0) = Eigen::half(inf_f);
    CHECK_REJECTED(m.view(), b, fp::options{}, errc::non_finite, "layer 0", "head 1", "query 5", "key 0", "inf");
  }
  SECTION("Eigen::bfloat16") {
    auto m = convert_maps<Eigen::bfloat16>(clean);
    CHECK_ACCEPTED(m.view(), b, fp::options{});
    m.at(1, 1, 0, 4) = Eigen::bfloat16(-inf_f);
    CHECK_REJECTED(m.view(), b, fp::options{}, errc::non_finite, "layer 1", "head 1", "query 0", "key 4", "-inf");
  }
}

TEST_CASE("a null data pointer with a non-empty shape is null_data", "[errors]") {
  const auto b = fp::budget::adaptive();
  const fp::options o;
  CHECK_REJECTED(fp::attention_view<const float>(nullptr, 2, 2, 4), b, o, errc::null_data, "data", "null",
                 "[2, 2, 4, 4]");
  CHECK_REJECTED(fp::attention_view<const float>(nullptr, 1, 1, 1), fp::budget::count(1), o, errc::null_data, "null");
  CHECK_REJECTED(fp::attention_view<const float>(nullptr, {3, 2, 5, 5}, {1, 3, 30, 6}), b, o, errc::null_data,
                 "null", "[3, 2, 5, 5]");
  CHECK_ACCEPTED(uniform_maps(2, 2, 4).view(), b, o);
  // An empty shape is a shape error, null pointer or not.
  CHECK_REJECTED(fp::attention_view<const float>(nullptr, 0, 2, 4), b, o, errc::invalid_shape, "layers = 0");
  // Other arguments are still checked first (no read through the null pointer).
  CHECK_REJECTED(fp::attention_view<const float>(nullptr, 2, 2, 4), fp::budget::count(0), o, errc::invalid_budget,
                 "budget::count(0)");
}

TEST_CASE("the batched view", "[errors][batch]") {
  auto bm = make_batch(4, 2, 2, 6);
  const auto b = fp::budget::adaptive();
  const fp::options o;
  const auto expected = check_batch_accepted(bm.view(), b, o);
  REQUIRE(expected.size() == 4);
  for (index_t k = 0; k < 4; ++k) CHECK(expected[static_cast<std::size_t>(k)] == fp::select(bm.view()[k], b, o));

  SECTION("a NaN in item 2 names the item and the position") {
    bm.at(2, 1, 0, 3, 2) = nan_f;
    CHECK_BATCH_REJECTED(bm.view(), b, o, errc::non_finite, "batch item 2", "layer 1", "head 0", "query 3", "key 2",
                         "nan");
    CHECK_BATCH_REJECTED(bm.view(), fp::budget::ratio(0.5), o, errc::non_finite, "batch item 2", "query 3");
    // Items alone: only item 2 is bad.
    CHECK_ACCEPTED(bm.view()[1], b, o);
    CHECK_ACCEPTED(bm.view()[3], b, o);
    CHECK_REJECTED(bm.view()[2], b, o, errc::non_finite, "layer 1", "head 0", "query 3", "key 2");
  }
  SECTION("an infinity in the last item") {
    bm.at(3, 0, 1, 5, 5) = inf_f;
    CHECK_BATCH_REJECTED(bm.view(), b, o, errc::non_finite, "batch item 3", "layer 0", "head 1", "query 5", "key 5",
                         "inf");
  }
  SECTION("a NaN in an item's unread layer is not checked") {
    bm.at(2, 1, 0, 3, 2) = nan_f;
    const auto only0 = with_layers({0}, 0);
    auto got = check_batch_accepted(bm.view(), b, only0);
    REQUIRE(got.size() == 4);
    CHECK(got[2] == fp::select(bm.view()[2], b, only0));
  }
  SECTION("invalid shape, tokens, layers, options, budget") {
    const float* p = bm.data.data();
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(p, {-1, 2, 2, 6, 6}, {72, 36, 36, 6, 1}), b, o,
                         errc::invalid_shape, "batch = -1");
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(p, 2, 0, 2, 6), b, o, errc::invalid_shape,
                         "layers = 0");
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(p, 2, 2, 0, 6), b, o, errc::invalid_shape,
                         "heads = 0");
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(p, 2, 2, 2, 0), b, o, errc::invalid_shape,
                         "queries = 0");
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(p, {2, 2, 2, 6, 5}, {72, 36, 30, 5, 1}), b, o,
                         errc::invalid_shape, "queries = 6", "keys = 5");
    CHECK_BATCH_REJECTED(bm.view(), b, with_prefix_suffix(3, 3), errc::invalid_tokens, "prefix_tokens", "3 + 3");
    CHECK_BATCH_REJECTED(bm.view(), b, with_prefix_suffix(-1, 0), errc::invalid_tokens, "prefix_tokens = -1");
    CHECK_BATCH_REJECTED(bm.view(), b, with_layers({2}, -1), errc::invalid_layer, "pivot_layers", "= 2");
    CHECK_BATCH_REJECTED(bm.view(), b, with_layers({}, 2), errc::invalid_layer, "complementary_layer = 2");
    CHECK_BATCH_REJECTED(bm.view(), fp::budget::count(0), o, errc::invalid_budget, "budget::count(0)");
    CHECK_BATCH_REJECTED(bm.view(), fp::budget::ratio(nan_v), o, errc::invalid_budget, "budget::ratio(");
    fp::options bad = o;
    bad.fence_factor = -1;
    CHECK_BATCH_REJECTED(bm.view(), b, bad, errc::invalid_option, "fence_factor = -1");
    // Next to them, valid ones.
    check_batch_accepted(bm.view(), b, with_prefix_suffix(3, 2));
    check_batch_accepted(bm.view(), b, with_layers({1}, 0));
    check_batch_accepted(bm.view(), fp::budget::count(2), o);
  }
  SECTION("null data") {
    CHECK_BATCH_REJECTED(fp::batched_attention_view<const float>(nullptr, 3, 2, 2, 6), b, o, errc::null_data, "null",
                         "[2, 2, 6, 6]");
  }
  SECTION("an empty batch selects nothing, but bad arguments are still reported") {
    const fp::batched_attention_view<const float> empty(bm.data.data(), 0, 2, 2, 6);
    std::vector<fp::selection> out = junk_batch();
    CHECK(fp::try_select(empty, b, o, out).ok());
    CHECK(out.empty());
    CHECK_BATCH_REJECTED(empty, fp::budget::count(0), o, errc::invalid_budget, "budget::count(0)");
    fp::options bad = o;
    bad.fence_factor = nan_v;
    CHECK_BATCH_REJECTED(empty, b, bad, errc::invalid_option, "fence_factor");
  }
}

TEST_CASE("contribution_degree rejects bad input", "[errors][stages]") {
  const auto m = random_maps(3, 2, 8);
  const auto v = m.view();
  SECTION("layer index") {
    CHECK_ERROR(fp::contribution_degree(v, 3), errc::invalid_layer, "layer = 3", "0..2");
    CHECK_ERROR(fp::contribution_degree(v, -2), errc::invalid_layer, "layer = -2");
    CHECK_ERROR(fp::contribution_degree(v, 100), errc::invalid_layer, "layer = 100");
    CHECK(fp::contribution_degree(v, 2).size() == 8);
    CHECK(fp::contribution_degree(v, 0).size() == 8);
    CHECK(fp::contribution_degree(v, -1) == fp::contribution_degree(v, 2));
  }
  SECTION("shape and data") {
    float dummy[16] = {};
    CHECK_ERROR(fp::contribution_degree(fp::attention_view<const float>(dummy, 0, 1, 4), 0), errc::invalid_shape,
                "layers = 0");
    CHECK_ERROR(fp::contribution_degree(fp::attention_view<const float>(dummy, 1, 1, 0), 0), errc::invalid_shape,
                "queries = 0");
    CHECK_ERROR(fp::contribution_degree(fp::attention_view<const float>(dummy, {1, 1, 2, 3}, {6, 6, 3, 1}), 0),
                errc::invalid_shape, "queries = 2", "keys = 3");
    CHECK_ERROR(fp::contribution_degree(fp::attention_view<const float>(nullptr, 1, 1, 4), 0), errc::null_data, "null");
  }
  SECTION("non-finite values in the layer read, not in others") {
    auto bad = m;
    bad.at(1, 0, 6, 2) = nan_f;
    CHECK_ERROR(fp::contribution_degree(bad.view(), 1), errc::non_finite, "layer 1", "head 0", "query 6", "key 2");
    CHECK(fp::contribution_degree(bad.view(), 0) == fp::contribution_degree(v, 0));
    CHECK(fp::contribution_degree(bad.view(), 2) == fp::contribution_degree(v, 2));
  }
}

TEST_CASE("pivotal_tokens rejects bad degree tables", "[errors][stages]") {
  const std::vector<double> row{0.5, 0.6, 0.4, 5.0, 0.5, 0.55, 0.45, 0.5};
  REQUIRE(fp::pivotal_tokens({row}) == std::vector<fp::token_t>{3});
  REQUIRE(fp::pivotal_tokens({row, row}) == std::vector<fp::token_t>{3});

  SECTION("empty tables") {
    CHECK_ERROR(fp::pivotal_tokens({}), errc::invalid_shape, "degrees");
    CHECK_ERROR(fp::pivotal_tokens({{}}), errc::invalid_shape, "degrees[0]", "empty");
    CHECK_ERROR(fp::pivotal_tokens({{}, {}}), errc::invalid_shape, "degrees[0]", "empty");
  }
  SECTION("ragged tables") {
    CHECK_ERROR(fp::pivotal_tokens({row, {1.0, 2.0, 3.0}}), errc::invalid_shape, "degrees[1]", "3 values", "8");
    CHECK_ERROR(fp::pivotal_tokens({row, row, {}}), errc::invalid_shape, "degrees[2]", "0 values");
    CHECK_ERROR(fp::pivotal_tokens({{1.0, 2.0}, row}), errc::invalid_shape, "degrees[1]", "8 values", "2");
  }
  SECTION("non-finite degrees") {
    auto bad = row;
    bad[2] = nan_v;
    CHECK_ERROR(fp::pivotal_tokens({bad}), errc::non_finite, "degrees[0][2]", "nan");
    CHECK_ERROR(fp::pivotal_tokens({row, bad}), errc::non_finite, "degrees[1][2]", "nan");
    bad[2] = inf_v;
    CHECK_ERROR(fp::pivotal_tokens({row, bad}), errc::non_finite, "degrees[1][2]", "inf");
    bad[2] = -inf_v;
    CHECK_ERROR(fp::pivotal_tokens({bad}), errc::non_finite, "degrees[0][2]", "-inf");
  }
  SECTION("options") {
    CHECK_ERROR(fp::pivotal_tokens({row}, with_prefix_suffix(4, 4)), errc::invalid_tokens, "4 + 4", "tokens = 8");
    CHECK_ERROR(fp::pivotal_tokens({row}, with_prefix_suffix(-1, 0)), errc::invalid_tokens, "prefix_tokens = -1");
    CHECK(fp::pivotal_tokens({row}, with_prefix_suffix(4, 3)) == std::vector<fp::token_t>{4});
    fp::options o;
    o.pivots_per_layer = -1;
    CHECK_ERROR(fp::pivotal_tokens({row}, o), errc::invalid_option, "pivots_per_layer = -1");
    o.pivots_per_layer = 2;
    CHECK(fp::pivotal_tokens({row}, o) == std::vector<fp::token_t>{1, 3});
    o = fp::options{};
    o.fence_factor = nan_v;
    CHECK_ERROR(fp::pivotal_tokens({row}, o), errc::invalid_option, "fence_factor");
  }
}

TEST_CASE("complementary_tokens rejects pivots outside the candidates", "[errors][stages]") {
  const auto m = random_maps(2, 2, 8);
  const auto v = m.view();
  const auto ok = fp::complementary_tokens(v, {3});
  CHECK(ok.affinity.size() == 8);

  CHECK_ERROR(fp::complementary_tokens(v, {8}), errc::invalid_tokens, "pivotal token 8", "0..7");
  CHECK_ERROR(fp::complementary_tokens(v, {3, 100}), errc::invalid_tokens, "pivotal token 100");
  CHECK_ERROR(fp::complementary_tokens(v, {-1}), errc::invalid_tokens, "pivotal token -1");
  const auto o = with_prefix_suffix(1, 2);
  CHECK_ERROR(fp::complementary_tokens(v, {0}, o), errc::invalid_tokens, "pivotal token 0", "1..5");
  CHECK_ERROR(fp::complementary_tokens(v, {6}, o), errc::invalid_tokens, "pivotal token 6", "1..5");
  CHECK_NOTHROW(fp::complementary_tokens(v, {1, 5}, o));

  SECTION("other arguments") {
    CHECK_ERROR(fp::complementary_tokens(v, {3}, with_layers({}, 2)), errc::invalid_layer, "complementary_layer = 2");
    CHECK_ERROR(fp::complementary_tokens(fp::attention_view<const float>(nullptr, 2, 2, 8), {3}), errc::null_data,
                "null");
    fp::options bad;
    bad.complementary_from = static_cast<fp::direction>(7);
    CHECK_ERROR(fp::complementary_tokens(v, {3}, bad), errc::invalid_option, "complementary_from = 7");
    auto nan_maps = m;
    nan_maps.at(1, 1, 3, 6) = nan_f;  // pivot row of the complementary layer
    CHECK_ERROR(fp::complementary_tokens(nan_maps.view(), {3}), errc::non_finite, "layer 1", "head 1", "query 3",
                "key 6");
    CHECK_NOTHROW(fp::complementary_tokens(nan_maps.view(), {4}));
  }
}

TEST_CASE("fit_budget rejects inconsistent stage outputs", "[errors][stages]") {
  const auto m = focused_maps(2, 2, 8, 0, 3);
  const auto v = m.view();
  const std::vector<std::vector<double>> degrees{fp::contribution_degree(v, 0), fp::contribution_degree(v, 1)};
  const auto pivots = fp::pivotal_tokens(degrees);
  REQUIRE_FALSE(pivots.empty());
  const auto comps = fp::complementary_tokens(v, pivots);
  const auto b = fp::budget::count(4);
  const auto good = fp::fit_budget(degrees, pivots, comps, b);
  CHECK(good == fp::select(v, b));

  SECTION("pivots and complements overlap") {
    auto c = comps;
    c.tokens.push_back(pivots.front());
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::invalid_tokens,
                "token " + std::to_string(pivots.front()), "both pivotal and complementary");
  }
  SECTION("affinity of the wrong size") {
    auto c = comps;
    c.affinity.resize(7);
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::invalid_shape, "affinity", "7 values", "tokens = 8");
    c.affinity.clear();
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::invalid_shape, "affinity", "0 values");
    c.affinity.resize(9, 0.0);
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::invalid_shape, "affinity", "9 values");
  }
  SECTION("tokens outside the candidates") {
    CHECK_ERROR(fp::fit_budget(degrees, {8}, comps, b), errc::invalid_tokens, "pivotal", "8");
    CHECK_ERROR(fp::fit_budget(degrees, pivots, comps, b, with_prefix_suffix(4, 0)), errc::invalid_tokens, "pivotal",
                "3");
    auto c = comps;
    c.tokens = {10};
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::invalid_tokens, "complementary", "10");
  }
  SECTION("degree tables and budget") {
    CHECK_ERROR(fp::fit_budget({}, pivots, comps, b), errc::invalid_shape, "degrees");
    CHECK_ERROR(fp::fit_budget({degrees[0], {1.0}}, pivots, comps, b), errc::invalid_shape, "degrees[1]", "1 values");
    auto bad = degrees;
    bad[1][5] = nan_v;
    CHECK_ERROR(fp::fit_budget(bad, pivots, comps, b), errc::non_finite, "degrees[1][5]", "nan");
    CHECK_ERROR(fp::fit_budget(degrees, pivots, comps, fp::budget::count(0)), errc::invalid_budget, "budget::count(0)");
    CHECK_ERROR(fp::fit_budget(degrees, pivots, comps, fp::budget::ratio(2.0)), errc::invalid_budget,
                "budget::ratio(2)");
    CHECK(fp::fit_budget(degrees, pivots, comps, fp::budget::adaptive()) == fp::select(v));
  }
  SECTION("non-finite affinity") {
    auto c = comps;
    c.affinity[6] = nan_v;
    CHECK_ERROR(fp::fit_budget(degrees, pivots, c, b), errc::non_finite, "affinity", "6", "nan");
  }
}

TEST_CASE("kept_tokens rejects bad token counts, options and budgets", "[errors][stages]") {
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 0), errc::invalid_shape, "tokens = 0");
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), -5), errc::invalid_shape, "tokens = -5");
  CHECK(fp::kept_tokens(fp::budget::count(3), 1) == index_t{1});
  CHECK(fp::kept_tokens(fp::budget::count(3), 8) == index_t{3});
  CHECK(fp::kept_tokens(fp::budget::ratio(0.5), 8) == index_t{4});
  CHECK_FALSE(fp::kept_tokens(fp::budget::adaptive(), 8).has_value());

  CHECK_ERROR(fp::kept_tokens(fp::budget::count(0), 8), errc::invalid_budget, "budget::count(0)");
  CHECK_ERROR(fp::kept_tokens(fp::budget::ratio(0.0), 8), errc::invalid_budget, "budget::ratio(0)");
  CHECK_ERROR(fp::kept_tokens(fp::budget::ratio(nan_v), 8), errc::invalid_budget, "budget::ratio(", "nan");
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 8, with_prefix_suffix(4, 4)), errc::invalid_tokens, "4 + 4");
  CHECK(fp::kept_tokens(fp::budget::count(3), 8, with_prefix_suffix(4, 3)) == index_t{1});
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 8, with_prefix_suffix(0, -1)), errc::invalid_tokens,
              "suffix_tokens = -1");
  fp::options o;
  o.fence_factor = -inf_v;
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 8, o), errc::invalid_option, "fence_factor = -inf");
}

// Last in this file: an unchecked prefix + suffix overflow reads out of
// bounds (a crash under AddressSanitizer), which would hide the tests after it.
TEST_CASE("prefix + suffix overflowing index_t is invalid_tokens", "[errors][overflow]") {
  const auto m = random_maps(2, 2, 8);
  const auto v = m.view();
  const auto b = fp::budget::adaptive();
  const index_t big = std::numeric_limits<index_t>::max();
  const std::string big_text = std::to_string(big);
  CHECK_REJECTED(v, b, with_prefix_suffix(big, 0), errc::invalid_tokens, "prefix_tokens", big_text);
  CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 8, with_prefix_suffix(big, 0)), errc::invalid_tokens,
              "prefix_tokens", big_text);
  SECTION("kept_tokens, big + 1") {
    CHECK_ERROR(fp::kept_tokens(fp::budget::count(3), 8, with_prefix_suffix(big, 1)), errc::invalid_tokens,
                "prefix_tokens", big_text);
  }
  SECTION("kept_tokens, 1 + big") {
    CHECK_ERROR(fp::kept_tokens(fp::budget::ratio(0.5), 8, with_prefix_suffix(1, big)), errc::invalid_tokens,
                "suffix_tokens", big_text);
  }
  SECTION("select, big + 1") {
    CHECK_REJECTED(v, b, with_prefix_suffix(big, 1), errc::invalid_tokens, "prefix_tokens", big_text);
  }
  SECTION("select, 1 + big") {
    CHECK_REJECTED(v, b, with_prefix_suffix(1, big), errc::invalid_tokens, "suffix_tokens", big_text);
  }
  SECTION("select, big + big") {
    CHECK_REJECTED(v, b, with_prefix_suffix(big, big), errc::invalid_tokens, "prefix_tokens", big_text);
  }
}

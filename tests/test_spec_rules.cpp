// Hand-checked tests of SPEC.md, one rule at a time.
//
// Every expected value below was derived by hand from SPEC.md (never copied
// from the library's output); the one-line comments show the arithmetic.
// All map entries are dyadic (k / 2^n) so every sum is exact in float and
// double, and equality of doubles is meaningful.

#include <catch2/catch.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <freepruner/detail/decisions.hpp>
#include <freepruner/freepruner.hpp>

namespace fp = freepruner;

namespace {

using tokens = std::vector<fp::token_t>;
using degrees = std::vector<std::vector<double>>;
using fp::index_t;

// Row-major maps [L][H][N][N], owned, with a view over them.
struct maps {
  index_t layers = 0, heads = 0, tokens = 0;
  std::vector<float> data;
  fp::attention_view<const float> view() const { return {data.data(), layers, heads, tokens}; }
};

maps make_maps(index_t layers, index_t heads, index_t n, std::vector<float> data) {
  REQUIRE(data.size() == static_cast<std::size_t>(layers * heads * n * n));
  maps m;
  m.layers = layers;
  m.heads = heads;
  m.tokens = n;
  m.data = std::move(data);
  return m;
}

// Values here are exact dyadic sums: compare with no relative slack.
Approx exact(double x) { return Approx(x).epsilon(0).margin(1e-12); }

// SPEC "Outliers" fence of a copy of x.
double fence_of(std::vector<double> x, double f = 1.5) {
  return fp::detail::upper_fence(x.data(), x.size(), f);
}

std::string list(const tokens& t) {
  std::string out = "{";
  for (std::size_t k = 0; k < t.size(); ++k) {
    if (k) out += ',';
    out += std::to_string(t[k]);
  }
  return out + "}";
}

std::string parts(const tokens& kept, const tokens& pivotal, const tokens& complementary) {
  return "K=" + list(kept) + " P=" + list(pivotal) + " Q=" + list(complementary);
}

std::string parts(const fp::selection& s) { return parts(s.indices, s.pivotal, s.complementary); }

// kept_tokens, -1 for "depends on the maps".
index_t kept(const fp::budget& b, index_t n, const fp::options& o = {}) {
  return fp::kept_tokens(b, n, o).value_or(-1);
}

// The kept tokens of fit_budget for given stage outputs.
fp::selection fit(const degrees& r, const tokens& pivots, const tokens& comps, const std::vector<double>& affinity,
                  const fp::budget& b, const fp::options& o = {}) {
  fp::complements c;
  c.tokens = comps;
  c.affinity = affinity;
  return fp::fit_budget(r, pivots, c, b, o);
}

// Map "T": L = 2, H = 1, N = 6, no prefix/suffix. Used by several rules.
//   layer 0: column 1 collects 1 from every other row; row 1 spreads.
//     r0 = [.25, 5, .25, .25, .125, .125]
//     sorted {.125,.125,.25,.25,.25,5}: Q1 = q(1.25) = .125+.25*.125 = .15625,
//     Q3 = q(3.75) = .25, fence = .25 + 1.5*.09375 = .390625 -> P0 = {1}
//   layer 1: column 5 collects 1 from rows 0,2,3,4; rows 1 and 5 spread.
//     r1 = [.125+.0625, .125, .125+.1875, .5+.5, .125+.125, 4+.125]
//        = [.1875, .125, .3125, 1, .25, 4.125]
//     sorted {.125,.1875,.25,.3125,1,4.125}: Q1 = q(1.25) = .1875+.25*.0625 = .203125,
//     Q3 = q(3.75) = .3125+.75*.6875 = .828125, fence = .828125+1.5*.625 = 1.765625 -> P1 = {5}
//   row complements from layer 1 (the last):
//     v_1 = row 1 over j in {0,2,3,4,5} = {.125,.125,.5,.125,.125}: Q1 = Q3 = .125, fence .125 -> {3}
//     v_5 = row 5 over j in {0..4} = {.0625,.125,.1875,.5,.125}: Q1 = .125, Q3 = .1875,
//           fence = .1875+1.5*.0625 = .28125 -> {3}
//   affinity w(j) = v_1[j] + v_5[j]: w0 = .1875, w2 = .3125, w3 = 1, w4 = .25
maps map_t() {
  return make_maps(2, 1, 6,
                   {
                       // layer 0
                       0, 1, 0, 0, 0, 0,                            //
                       0.25f, 0, 0.25f, 0.25f, 0.125f, 0.125f,      //
                       0, 1, 0, 0, 0, 0,                            //
                       0, 1, 0, 0, 0, 0,                            //
                       0, 1, 0, 0, 0, 0,                            //
                       0, 1, 0, 0, 0, 0,                            //
                       // layer 1
                       0, 0, 0, 0, 0, 1,                            //
                       0.125f, 0, 0.125f, 0.5f, 0.125f, 0.125f,     //
                       0, 0, 0, 0, 0, 1,                            //
                       0, 0, 0, 0, 0, 1,                            //
                       0, 0, 0, 0, 0, 1,                            //
                       0.0625f, 0.125f, 0.1875f, 0.5f, 0.125f, 0,   //
                   });
}

// Map "X": L = 1, H = 1, N = 5 (complementary rules).
maps map_x() {
  return make_maps(1, 1, 5,
                   {
                       0.5f, 0.125f, 0.125f, 0.125f, 0.25f,     //
                       0.25f, 0.25f, 0.25f, 0.125f, 0.125f,     //
                       0.25f, 0.25f, 0.25f, 0.125f, 0.125f,     //
                       0.25f, 0.25f, 0.25f, 0.125f, 0.125f,     //
                       0.125f, 0.125f, 0.125f, 0.5f, 0.125f,    //
                   });
}

}  // namespace

// A selection as text, "K={..} P={..} Q={..}", so a failure shows all three sets.
#define CHECK_SELECTION(sel, ...) CHECK(parts(sel) == parts(__VA_ARGS__))

// ---------------------------------------------------------------------------
// Step 0 - head reduction

TEST_CASE("step 0: degrees are those of the mean over heads", "[spec][step0]") {
  // head 0: [[.5,.25,.25],[.5,.5,0],[1,0,0]], head 1: [[0,1,0],[0,.5,.5],[0,.75,.25]]
  // mean:   [[.25,.625,.125],[.25,.5,.25],[.5,.375,.125]]
  const maps m = make_maps(1, 2, 3,
                           {
                               0.5f, 0.25f, 0.25f, 0.5f, 0.5f, 0, 1, 0, 0,      // head 0
                               0, 1, 0, 0, 0.5f, 0.5f, 0, 0.75f, 0.25f,         // head 1
                           });
  const auto r = fp::contribution_degree(m.view(), 0);
  REQUIRE(r.size() == 3);
  CHECK(r[0] == exact(0.75));   // .25+.25+.5 - .25
  CHECK(r[1] == exact(1.0));    // .625+.5+.375 - .5
  CHECK(r[2] == exact(0.375));  // .125+.25+.125 - .125

  // Row complements read the mean too: v_0 = mean row 0 = [_, .625, .125].
  const auto c = fp::complementary_tokens(m.view(), tokens{0});
  REQUIRE(c.affinity.size() == 3);
  CHECK(c.affinity[0] == exact(0.0));    // pivot
  CHECK(c.affinity[1] == exact(0.625));  // (.25 + 1) / 2
  CHECK(c.affinity[2] == exact(0.125));  // (.25 + 0) / 2
  // {.125,.625}: Q1 = .125+.25*.5 = .25, Q3 = .625-.5*.25 = .5, fence = .5+1.5*.25 = .875 -> none
  CHECK(c.tokens.empty());
}

TEST_CASE("step 0: the pivot of the head mean differs from each head's own", "[spec][step0]") {
  // head 0 degrees (2, 0, 1.5) -> argmax 0; head 1 degrees (0, 2, 1.5) -> argmax 1;
  // mean (1, 1, 1.5) -> argmax 2.
  const maps m = make_maps(1, 2, 3,
                           {
                               0, 0, 1, 1, 0, 0.5f, 1, 0, 0,      // head 0
                               0, 1, 0.5f, 0, 0, 1, 0, 1, 0,      // head 1
                           });
  const auto r = fp::contribution_degree(m.view(), 0);
  CHECK(r[0] == exact(1.0));  // (0+1+1 + 0+0+0) / 2
  CHECK(r[1] == exact(1.0));  // (0+0+0 + 1+0+1) / 2
  CHECK(r[2] == exact(1.5));  // (1+.5+0 + .5+1+0) / 2
  fp::options o;
  o.pivots_per_layer = 1;
  // P = {2}; v_2 = mean row 2 over {0,1} = {.5,.5}: fence .5, no outlier -> K = {2}
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {2}, {2}, {});
}

// ---------------------------------------------------------------------------
// Step 1 - contribution degree

TEST_CASE("step 1: column sum over all rows (prefix and suffix rows included) minus the diagonal",
          "[spec][step1]") {
  const maps m = make_maps(1, 1, 4,
                           {
                               0.5f, 2, 0, 1,           // prefix row
                               0.125f, 1, 0.5f, 0,      //
                               0, 0.25f, 4, 0.5f,       //
                               0.25f, 1, 0.25f, 2,      // suffix row
                           });
  const auto r = fp::contribution_degree(m.view(), 0);
  REQUIRE(r.size() == 4);
  CHECK(r[0] == exact(0.375));  // .5+.125+0+.25 - .5
  CHECK(r[1] == exact(3.25));   // 2+1+.25+1 - 1
  CHECK(r[2] == exact(0.75));   // 0+.5+4+.25 - 4
  CHECK(r[3] == exact(1.5));    // 1+0+.5+2 - 2
  const auto last = fp::contribution_degree(m.view(), -1);
  CHECK(last == r);

  // With a = b = 1, C = {1, 2}: r = (3.25, .75); M = 2 has no outlier (sorted {.75,3.25}:
  // Q1 = 1.375, Q3 = 2.625, fence 4.5) -> top-1 = 1. Candidate rows only would give
  // (.25, .5) -> 2; no diagonal subtraction would give (4.25, 4.75) -> 2.
  // v_1 over {2} = {.5}: n = 1, fence .5, no outlier.
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 1;
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {1}, {1}, {});
}

TEST_CASE("step 1: per layer, -1 is the last layer", "[spec][step1]") {
  const maps m = map_t();
  const auto r0 = fp::contribution_degree(m.view(), 0);
  const auto r1 = fp::contribution_degree(m.view(), 1);
  const std::vector<double> e0{0.25, 5, 0.25, 0.25, 0.125, 0.125};  // see map_t
  const std::vector<double> e1{0.1875, 0.125, 0.3125, 1, 0.25, 4.125};
  REQUIRE(r0.size() == 6);
  REQUIRE(r1.size() == 6);
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(r0[i] == exact(e0[i]));
    CHECK(r1[i] == exact(e1[i]));
  }
  CHECK(fp::contribution_degree(m.view(), -1) == r1);
}

// ---------------------------------------------------------------------------
// Outliers

TEST_CASE("outliers: numpy linear quartiles for n = 1, 2, 3, 4, 5, 8", "[spec][outliers]") {
  CHECK(fence_of({5}) == exact(5.0));  // Q1 = Q3 = 5
  // {2,4}: Q1 = q(.25) = 2.5, Q3 = q(.75) = 3.5, fence = 3.5 + 1.5*1
  CHECK(fence_of({4, 2}) == exact(5.0));
  // {1,2,3}: Q1 = q(.5) = 1.5, Q3 = q(1.5) = 2.5, fence = 2.5 + 1.5*1
  CHECK(fence_of({3, 1, 2}) == exact(4.0));
  // {0,2,4,10}: Q1 = q(.75) = 1.5, Q3 = q(2.25) = 4+.25*6 = 5.5, fence = 5.5 + 1.5*4
  CHECK(fence_of({10, 0, 4, 2}) == exact(11.5));
  // {1,3,5,7,100}: Q1 = x1 = 3, Q3 = x3 = 7, fence = 7 + 1.5*4
  CHECK(fence_of({7, 1, 3, 5, 100}) == exact(13.0));
  // {0,0,1,2,4,8,16,32}: Q1 = q(1.75) = 0+.75*1 = .75, Q3 = q(5.25) = 8+.25*8 = 10,
  // fence = 10 + 1.5*9.25 = 23.875
  CHECK(fence_of({16, 0, 32, 2, 0, 8, 1, 4}) == exact(23.875));
  // {1..8}: Q1 = q(1.75) = 2.75, Q3 = q(5.25) = 6.25, fence = 6.25 + 1.5*3.5
  CHECK(fence_of({8, 1, 7, 2, 6, 3, 5, 4}) == exact(11.5));
}

TEST_CASE("outliers: fence_factor 0 and large", "[spec][outliers]") {
  CHECK(fence_of({7, 1, 3, 5, 100}, 0.0) == exact(7.0));      // Q3
  CHECK(fence_of({7, 1, 3, 5, 100}, 1000.0) == exact(4007.0));  // 7 + 1000*4
  CHECK(fence_of({10, 0, 4, 2}, 0.0) == exact(5.5));

  // Through step 2: r = {1,3,5,7,7.5,8}: Q1 = q(1.25) = 3.5, Q3 = q(3.75) = 7+.75*.5 = 7.375.
  const degrees r{{1, 3, 5, 7, 7.5, 8}};
  fp::options o;
  o.fence_factor = 0;  // fence 7.375: 7.5 and 8 are outliers
  CHECK(fp::pivotal_tokens(r, o) == tokens{4, 5});
  o.fence_factor = 1.5;  // fence 7.375 + 1.5*3.875 = 13.1875: none -> top-1 = 5
  CHECK(fp::pivotal_tokens(r, o) == tokens{5});

  // Two layers: {1,2,3,4,100} and {10,1,2,3,4}; both have Q1 = 2, Q3 = 4.
  const degrees two{{1, 2, 3, 4, 100}, {10, 1, 2, 3, 4}};
  o.fence_factor = 1.5;  // fence 7: 100 (token 4) and 10 (token 0)
  CHECK(fp::pivotal_tokens(two, o) == tokens{0, 4});
  o.fence_factor = 20;  // fence 4 + 40 = 44: only 100; layer 1 adds nothing
  CHECK(fp::pivotal_tokens(two, o) == tokens{4});
  o.fence_factor = 1e6;  // fence ~4e6: no outlier anywhere -> top-1 of each: {4, 0}
  CHECK(fp::pivotal_tokens(two, o) == tokens{0, 4});
}

TEST_CASE("outliers: the fence is strict", "[spec][outliers]") {
  // {1,3,5,7,13}: Q1 = 3, Q3 = 7, fence = 7 + 1.5*4 = 13; 13 is not > 13.
  CHECK(fence_of({1, 3, 5, 7, 13}) == exact(13.0));
  // Layer 1 {14,7,5,3,1}: same quartiles, fence 13, 14 is an outlier (token 0), so the
  // fallback does not apply and layer 0's value at the fence (token 4) is not pivotal.
  CHECK(fp::pivotal_tokens(degrees{{1, 3, 5, 7, 13}, {14, 7, 5, 3, 1}}) == tokens{0});
  // Just above the fence: 13.25 > 13 -> token 4 joins.
  CHECK(fp::pivotal_tokens(degrees{{1, 3, 5, 7, 13.25}, {14, 7, 5, 3, 1}}) == tokens{0, 4});
}

TEST_CASE("outliers: numpy lerp", "[spec][outliers]") {
  CHECK(fp::detail::lerp(1.0, 3.0, 0.25) == 1.5);  // 1 + 2*.25
  CHECK(fp::detail::lerp(1.0, 3.0, 0.75) == 2.5);  // 3 - 2*.25
  CHECK(fp::detail::lerp(2.0, 4.0, 0.5) == 3.0);
  CHECK(fp::detail::lerp(4.0, 4.0, 0.3) == 4.0);
}

// ---------------------------------------------------------------------------
// Step 2 - pivotal tokens

TEST_CASE("step 2: adaptive pivots are the union of each layer's upper outliers", "[spec][step2]") {
  // Layer 0 {12,1,2,3,4,5,6,20}: sorted {1,2,3,4,5,6,12,20}, Q1 = q(1.75) = 2.75,
  //   Q3 = q(5.25) = 6+.25*6 = 7.5, fence = 7.5+1.5*4.75 = 14.625 -> {7} (12 is not)
  // Layer 1 {1,30,2,3,4,5,6,7}: Q1 = 2.75, Q3 = 6.25, fence 11.5 -> {1}
  const degrees r{{12, 1, 2, 3, 4, 5, 6, 20}, {1, 30, 2, 3, 4, 5, 6, 7}};
  CHECK(fp::pivotal_tokens(degrees{r[0]}) == tokens{7});
  CHECK(fp::pivotal_tokens(degrees{r[1]}) == tokens{1});
  CHECK(fp::pivotal_tokens(r) == tokens{1, 7});

  // End to end (map T): layer 0 gives {1}, layer 1 gives {5}.
  const maps m = map_t();
  CHECK(fp::select(m.view()).pivotal == tokens{1, 5});
}

TEST_CASE("step 2: fixed top-k, ties by smaller index, k > M", "[spec][step2]") {
  const degrees r{{3, 5, 5, 1, 5, 2}};
  fp::options o;
  o.pivots_per_layer = 1;  // the 5s at 1, 2, 4 -> 1
  CHECK(fp::pivotal_tokens(r, o) == tokens{1});
  o.pivots_per_layer = 2;  // 1, 2
  CHECK(fp::pivotal_tokens(r, o) == tokens{1, 2});
  o.pivots_per_layer = 4;  // 1, 2, 4, then 3 at token 0
  CHECK(fp::pivotal_tokens(r, o) == tokens{0, 1, 2, 4});
  o.pivots_per_layer = 10;  // k > M = 6: every candidate
  CHECK(fp::pivotal_tokens(r, o) == tokens{0, 1, 2, 3, 4, 5});
  o.prefix_tokens = 2;  // C = {2..5}, k > M = 4
  CHECK(fp::pivotal_tokens(r, o) == tokens{2, 3, 4, 5});
  o.pivots_per_layer = 1;  // C values {5,1,5,2} -> 2
  CHECK(fp::pivotal_tokens(r, o) == tokens{2});

  // Fixed ignores the fence: all-equal values still give k pivots.
  fp::options f;
  f.pivots_per_layer = 2;
  CHECK(fp::pivotal_tokens(degrees{{1, 1, 1, 1}}, f) == tokens{0, 1});
  // Union over layers: layer 0 top-1 = 1 (tie 1,2,4), layer 1 top-1 = 5.
  f.pivots_per_layer = 1;
  CHECK(fp::pivotal_tokens(degrees{{3, 5, 5, 1, 5, 2}, {0, 0, 0, 0, 0, 9}}, f) == tokens{1, 5});

  // End to end (map T), k = 2: layer 0 r0 = [.25,5,.25,.25,.125,.125] -> 1, then 0 (tie 0,2,3);
  // layer 1 r1 = [.1875,.125,.3125,1,.25,4.125] -> 5, 3.
  fp::options k2;
  k2.pivots_per_layer = 2;
  // every v_p's only outlier is another pivot (v_0 -> 5, v_1 -> 3, v_3 -> 5, v_5 -> 3): Q = {}
  CHECK_SELECTION(fp::select(map_t().view(), fp::budget::adaptive(), k2), {0, 1, 3, 5}, {0, 1, 3, 5}, {});
}

TEST_CASE("step 2: no outlier in any layer -> top-1 of each pivot layer", "[spec][step2]") {
  // {2,4,4,1}: Q1 = q(.75) = 1.75, Q3 = q(2.25) = 4, fence 7.375 -> none; top-1 = 1 (tie 1, 2)
  // {3,3,0,0}: Q1 = 0, Q3 = 3, fence 7.5 -> none; top-1 = 0 (tie 0, 1)
  CHECK(fp::pivotal_tokens(degrees{{2, 4, 4, 1}, {3, 3, 0, 0}}) == tokens{0, 1});
  CHECK(fp::pivotal_tokens(degrees{{2, 4, 4, 1}}) == tokens{1});
  // prefix 1: C = {1,2,3} values {1,2,2}; three values never have an outlier; top-1 = 2 (tie 2, 3)
  fp::options o;
  o.prefix_tokens = 1;
  CHECK(fp::pivotal_tokens(degrees{{9, 1, 2, 2}}, o) == tokens{2});
}

TEST_CASE("step 2: pivot_layers restricts which layers pick pivots", "[spec][step2]") {
  const maps m = map_t();
  fp::options o;
  o.pivot_layers = {0};  // P = {1}; v_1 from layer 1 -> {3}
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {1, 3}, {1}, {3});
  o.pivot_layers = {1};  // P = {5}; v_5 -> {3}
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {3, 5}, {5}, {3});
  o.pivot_layers = {-1};  // the last layer = 1
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {3, 5}, {5}, {3});
  o.pivot_layers = {0, 1};
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {1, 3, 5}, {1, 5}, {3});
}

TEST_CASE("step 2: prefix and suffix tokens are never pivotal", "[spec][step2]") {
  // Degrees with the largest values on the prefix (0) and suffix (5) tokens.
  // C = {1..4}, values {1,2,3,4}: Q1 = 1.75, Q3 = 3.25, fence 5.5 -> none -> top-1 = 4
  const degrees r{{100, 1, 2, 3, 4, 200}};
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 1;
  CHECK(fp::pivotal_tokens(r, o) == tokens{4});
  o.pivots_per_layer = 1;
  CHECK(fp::pivotal_tokens(r, o) == tokens{4});
  o.pivots_per_layer = 2;
  CHECK(fp::pivotal_tokens(r, o) == tokens{3, 4});

  // The quartiles are over C only. a = b = 2, C = {2..6} with values {1,2,3,4,6}:
  // Q1 = 2, Q3 = 4, fence 7 -> none -> top-1 = 6. (Counting the 3s of the prefix and
  // suffix, {1,2,3,3,3,3,3,4,6} has Q1 = Q3 = 3 and would make 5 and 6 outliers.)
  fp::options ab;
  ab.prefix_tokens = 2;
  ab.suffix_tokens = 2;
  CHECK(fp::pivotal_tokens(degrees{{3, 3, 1, 2, 3, 4, 6, 3, 3}}, ab) == tokens{6});

  // End to end: every row sends .5 to token 0 (CLS prefix) and .25 to token 5 (suffix).
  // r = [6*.5-.5, .125, .125, 5*.25, 0, 6*.25-.25] = [2.5, .125, .125, 1.25, 0, 1.25]
  // over C = {1..4}: sorted {0,.125,.125,1.25}: Q1 = q(.75) = .09375,
  // Q3 = q(2.25) = .125+.25*1.125 = .40625, fence = .40625+1.5*.3125 = .875 -> {3}
  const maps m = make_maps(1, 1, 6,
                           {
                               0.5f, 0, 0, 0.25f, 0, 0.25f,             //
                               0.5f, 0, 0, 0.25f, 0, 0.25f,             //
                               0.5f, 0, 0, 0.25f, 0, 0.25f,             //
                               0.5f, 0.125f, 0.125f, 0, 0, 0.25f,       //
                               0.5f, 0, 0, 0.25f, 0, 0.25f,             //
                               0.5f, 0, 0, 0.25f, 0, 0.25f,             //
                           });
  const auto deg = fp::contribution_degree(m.view(), 0);
  CHECK(deg[0] == exact(2.5));
  CHECK(deg[3] == exact(1.25));
  CHECK(deg[5] == exact(1.25));
  fp::options cls;
  cls.prefix_tokens = 1;
  cls.suffix_tokens = 1;
  // v_3 over {1,2,4} = {.125,.125,0}: three values, no outlier
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), cls), {3}, {3}, {});
  // count(2): rest {1,2,4} by w = v_3 = (.125, .125, 0) -> 1
  CHECK_SELECTION(fp::select(m.view(), fp::budget::count(2), cls), {1, 3}, {3}, {1});
  cls.pivots_per_layer = 1;
  CHECK(fp::select(m.view(), fp::budget::adaptive(), cls).pivotal == tokens{3});
}

// ---------------------------------------------------------------------------
// Step 3 - complementary tokens

TEST_CASE("step 3: row and column complements differ", "[spec][step3]") {
  // r = [1.25, .5, .125, .125, .125, .125]: sorted, Q1 = q(1.25) = .125,
  // Q3 = q(3.75) = .125+.75*.375 = .40625, fence = .40625+1.5*.28125 = .828125 -> P = {0}
  const maps m = make_maps(1, 1, 6,
                           {
                               0, 0.5f, 0.125f, 0.125f, 0.125f, 0.125f,   //
                               0.125f, 0, 0, 0, 0, 0,                     //
                               0.125f, 0, 0, 0, 0, 0,                     //
                               0.75f, 0, 0, 0, 0, 0,                      //
                               0.125f, 0, 0, 0, 0, 0,                     //
                               0.125f, 0, 0, 0, 0, 0,                     //
                           });
  fp::options row, col;
  col.complementary_from = fp::direction::column;
  // row: v_0 = row 0 over j=1..5 = {.5,.125,.125,.125,.125}: Q1 = Q3 = .125 -> {1}
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), row), {0, 1}, {0}, {1});
  // column: v_0 = column 0 over j=1..5 = {.125,.125,.75,.125,.125} -> {3}
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), col), {0, 3}, {0}, {3});
  // count(3): row: P {0}, Q {1}, rest {2..5} all w = .125 -> 2
  CHECK_SELECTION(fp::select(m.view(), fp::budget::count(3), row), {0, 1, 2}, {0}, {1, 2});
  // column: P {0}, Q {3}, rest {1,2,4,5} all w = .125 -> 1
  CHECK_SELECTION(fp::select(m.view(), fp::budget::count(3), col), {0, 1, 3}, {0}, {1, 3});

  // Map T, column: v_1[j] = L1[j][1] over {0,2,3,4,5} = {0,0,0,0,.125}: fence 0 -> 5 (a pivot);
  // v_5[j] = L1[j][5] over {0..4} = {1,.125,1,1,1}: fence 1 -> none. Q = {} (row gives {3}).
  const maps t = map_t();
  CHECK_SELECTION(fp::select(t.view(), fp::budget::adaptive(), col), {1, 5}, {1, 5}, {});
}

TEST_CASE("step 3: v_p excludes j == p from the quartiles", "[spec][step3]") {
  const maps m = map_x();
  // v_0 = row 0 over j=1..4 = {.125,.125,.125,.25}: Q1 = q(.75) = .125,
  // Q3 = q(2.25) = .125+.25*.125 = .15625, fence = .15625+1.5*.03125 = .203125 -> {4}.
  // (Including A[0][0] = .5 would give Q1 = .125, Q3 = .25, fence .4375 -> none.)
  const auto c = fp::complementary_tokens(m.view(), tokens{0});
  CHECK(c.tokens == tokens{4});
  REQUIRE(c.affinity.size() == 5);
  const std::vector<double> w{0, 0.125, 0.125, 0.125, 0.25};  // row 0, zero at the pivot
  for (std::size_t j = 0; j < 5; ++j) CHECK(c.affinity[j] == exact(w[j]));
}

TEST_CASE("step 3: v_p ranges over the candidates only", "[spec][step3]") {
  // N = 7, a = b = 1, C = {1..5}; only rows 1 and 2 are non-zero (sixteenths).
  // row 1 = [3,0,1,2,3,6,3]/16, row 2 = [8,1,0,1,1,4,8]/16
  std::vector<float> data(49, 0.0f);
  const float row1[7] = {0.1875f, 0, 0.0625f, 0.125f, 0.1875f, 0.375f, 0.1875f};
  const float row2[7] = {0.5f, 0.0625f, 0, 0.0625f, 0.0625f, 0.25f, 0.5f};
  for (int j = 0; j < 7; ++j) {
    data[static_cast<std::size_t>(7 + j)] = row1[j];
    data[static_cast<std::size_t>(14 + j)] = row2[j];
  }
  const maps m = make_maps(1, 1, 7, data);
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 1;
  // v_1 over j = 2..5 = {1,2,3,6}/16: Q1 = q(.75) = 1.75, Q3 = q(2.25) = 3.75, fence = 3.75+1.5*2 = 6.75
  // -> none (with the prefix/suffix 3s: {1,2,3,3,3,6}, Q1 = 2.25, Q3 = 3, fence 4.125 -> 5)
  const auto c1 = fp::complementary_tokens(m.view(), tokens{1}, o);
  CHECK(c1.tokens.empty());
  REQUIRE(c1.affinity.size() == 7);
  const std::vector<double> w1{0, 0, 0.0625, 0.125, 0.1875, 0.375, 0};  // row 1 on C minus {1}
  for (std::size_t j = 0; j < 7; ++j) CHECK(c1.affinity[j] == exact(w1[j]));
  // v_2 over j in {1,3,4,5} = {1,1,1,4}/16: Q1 = 1, Q3 = q(2.25) = 1.75, fence = 1.75+1.5*.75 = 2.875
  // -> {5} (with the prefix/suffix 8s: {1,1,1,4,8,8}, Q1 = 1, Q3 = 7, fence 16 -> none)
  CHECK(fp::complementary_tokens(m.view(), tokens{2}, o).tokens == tokens{5});
  CHECK(fp::complementary_tokens(m.view(), tokens{1, 2}, o).tokens == tokens{5});
}

TEST_CASE("step 3: pivots are never complementary", "[spec][step3]") {
  const maps m = map_x();
  // P = {0,4}: v_0's outlier 4 is a pivot, dropped.
  // v_4 = row 4 over j=0..3 = {.125,.125,.125,.5}: Q1 = .125, Q3 = q(2.25) = .125+.25*.375 = .21875,
  // fence = .21875+1.5*.09375 = .359375 -> {3}
  const auto c = fp::complementary_tokens(m.view(), tokens{0, 4});
  CHECK(c.tokens == tokens{3});
  REQUIRE(c.affinity.size() == 5);
  const std::vector<double> w{0, 0.25, 0.25, 0.625, 0};  // v_0 + v_4: (.125+.125, .125+.125, .125+.5)
  for (std::size_t j = 0; j < 5; ++j) CHECK(c.affinity[j] == exact(w[j]));

  // Column: v_0[j] = A[j][0] over j=1..4 = {.25,.25,.25,.125}: Q1 = q(.75) = .21875, Q3 = .25,
  // fence .296875 -> none
  fp::options col;
  col.complementary_from = fp::direction::column;
  const auto cc = fp::complementary_tokens(m.view(), tokens{0}, col);
  CHECK(cc.tokens.empty());
  const std::vector<double> wc{0, 0.25, 0.25, 0.25, 0.125};
  REQUIRE(cc.affinity.size() == 5);
  for (std::size_t j = 0; j < 5; ++j) CHECK(cc.affinity[j] == exact(wc[j]));
}

TEST_CASE("step 3: complementary_layer picks a layer other than the last", "[spec][step3]") {
  // layer 0 = map X; layer 1 = map X with row 0 = [.5,.25,.125,.125,.125]
  const maps x = map_x();
  std::vector<float> data = x.data;
  data.insert(data.end(), x.data.begin(), x.data.end());
  data[25 + 1] = 0.25f;
  data[25 + 4] = 0.125f;
  const maps m = make_maps(2, 1, 5, data);
  fp::options o;
  // default (last = 1): v_0 = {.25,.125,.125,.125}: same fence .203125 -> {1}
  CHECK(fp::complementary_tokens(m.view(), tokens{0}, o).tokens == tokens{1});
  o.complementary_layer = 1;
  CHECK(fp::complementary_tokens(m.view(), tokens{0}, o).tokens == tokens{1});
  o.complementary_layer = 0;  // layer 0 = X -> {4}
  const auto c0 = fp::complementary_tokens(m.view(), tokens{0}, o);
  CHECK(c0.tokens == tokens{4});
  CHECK(c0.affinity[4] == exact(0.25));

  // End to end (map T): complements from layer 0 with P = {1,5}:
  // v_1 = L0 row 1 over {0,2,3,4,5} = {.25,.25,.25,.125,.125}: Q1 = .125, Q3 = .25, fence .4375 -> none
  // v_5 = L0 row 5 over {0..4} = {0,1,0,0,0}: fence 0 -> 1 (a pivot) -> Q = {}
  fp::options t0;
  t0.complementary_layer = 0;
  CHECK_SELECTION(fp::select(map_t().view(), fp::budget::adaptive(), t0), {1, 5}, {1, 5}, {});
}

// ---------------------------------------------------------------------------
// Step 4 - adaptive result

TEST_CASE("step 4: adaptive result is P union Q, ascending", "[spec][step4]") {
  // Map T: P = {1,5}, Q = {3} (see map_t) -> K = {1,3,5}
  const auto s = fp::select(map_t().view());
  CHECK_SELECTION(s, {1, 3, 5}, {1, 5}, {3});
  CHECK(s.size() == 3);
  // Map X with P = {0,4} given: the fit of P and Q = {3} -> {0,3,4}
  const auto c = fp::complementary_tokens(map_x().view(), tokens{0, 4});
  const auto k = fp::fit_budget(degrees{{0, 0, 0, 0, 0}}, tokens{0, 4}, c, fp::budget::adaptive());
  CHECK_SELECTION(k, {0, 3, 4}, {0, 4}, {3});
}

// ---------------------------------------------------------------------------
// Step 5 - fixed budget

TEST_CASE("step 5: count and ratio budgets end to end", "[spec][step5]") {
  // Map T order: P by rank (1: layer-0 rank 0, 5: layer-1 rank 0 -> tie -> 1, 5), Q = {3},
  // rest by w: 2 (.3125), 4 (.25), 0 (.1875). Full order 1, 5, 3, 2, 4, 0.
  const maps m = map_t();
  const auto v = m.view();
  CHECK_SELECTION(fp::select(v, fp::budget::count(1)), {1}, {1}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(2)), {1, 5}, {1, 5}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(3)), {1, 3, 5}, {1, 5}, {3});
  CHECK_SELECTION(fp::select(v, fp::budget::count(4)), {1, 2, 3, 5}, {1, 5}, {2, 3});
  CHECK_SELECTION(fp::select(v, fp::budget::count(5)), {1, 2, 3, 4, 5}, {1, 5}, {2, 3, 4});
  CHECK_SELECTION(fp::select(v, fp::budget::count(6)), {0, 1, 2, 3, 4, 5}, {1, 5}, {0, 2, 3, 4});
  // m = min(7, M = 6)
  CHECK_SELECTION(fp::select(v, fp::budget::count(7)), {0, 1, 2, 3, 4, 5}, {1, 5}, {0, 2, 3, 4});
  CHECK_SELECTION(fp::select(v, fp::budget::count(1000)), {0, 1, 2, 3, 4, 5}, {1, 5}, {0, 2, 3, 4});

  // ratio: m = max(1, floor(x*6 + .5))
  CHECK_SELECTION(fp::select(v, fp::budget::ratio(0.75)), {1, 2, 3, 4, 5}, {1, 5}, {2, 3, 4});  // 4.5 -> 5
  CHECK(fp::select(v, fp::budget::ratio(0.25)).indices == tokens{1, 5});     // 1.5 -> 2
  CHECK(fp::select(v, fp::budget::ratio(0.5)).indices == tokens{1, 3, 5});   // 3.5 -> 3
  CHECK(fp::select(v, fp::budget::ratio(0.4)).indices == tokens{1, 5});      // 2.9 -> 2
  CHECK(fp::select(v, fp::budget::ratio(0.001)).indices == tokens{1});       // floor(.506) = 0 -> 1
  CHECK(fp::select(v, fp::budget::ratio(1.0)).indices == tokens{0, 1, 2, 3, 4, 5});

  // k = 2: P = {0,1,3,5}. ranks: 1 -> 0 (L0), 5 -> 0 (L1), 0 -> min(1 (L0), 4 (L1)) = 1,
  // 3 -> min(3 (L0: 1 greater, 0 and 2 equal and smaller), 1 (L1)) = 1.
  // Order (0,1), (0,5), (1,0), (1,3) -> 1, 5, 0, 3. Rest {2,4}: w2 = 0+.125+0+.1875 = .3125,
  // w4 = 0+.125+0+.125 = .25.
  fp::options k2;
  k2.pivots_per_layer = 2;
  CHECK_SELECTION(fp::select(v, fp::budget::count(1), k2), {1}, {1}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(2), k2), {1, 5}, {1, 5}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(3), k2), {0, 1, 5}, {0, 1, 5}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(5), k2), {0, 1, 2, 3, 5}, {0, 1, 3, 5}, {2});
}

TEST_CASE("step 5: P cut by (min over pivot layers of rank, index)", "[spec][step5]") {
  // r0 = [5,1,3,0,4,2]: ranks 0:0, 4:1, 2:2, 5:3, 1:4, 3:5
  // r1 = [0,1,6,2,3,4]: ranks 2:0, 5:1, 4:2, 3:3, 1:4, 0:5
  // P = {1,3,4}: best ranks 1 -> 4, 3 -> 3, 4 -> 1; order 4, 3, 1.
  // (By index: 1, 3; by summed degree: 4 (7), then 1 and 3 (2 each) -> 1.)
  const degrees r{{5, 1, 3, 0, 4, 2}, {0, 1, 6, 2, 3, 4}};
  const std::vector<double> w(6, 0.0);
  CHECK_SELECTION(fit(r, {1, 3, 4}, {}, w, fp::budget::count(1)), {4}, {4}, {});
  CHECK_SELECTION(fit(r, {1, 3, 4}, {}, w, fp::budget::count(2)), {3, 4}, {3, 4}, {});
  CHECK_SELECTION(fit(r, {1, 3, 4}, {}, w, fp::budget::count(3)), {1, 3, 4}, {1, 3, 4}, {});

  // Equal degrees rank by index: r0 = [4,0,4,0] -> rank(0) = 0, rank(2) = 1, rank(1) = 2;
  // r1 = [0,5,0,9] -> rank(3) = 0, rank(1) = 1, rank(2) = 3.
  // P = {1,2}: 1 -> min(2,1) = 1, 2 -> min(1,3) = 1 -> tie -> 1.
  // (A shared rank for equal degrees would give 2 rank 0 and keep 2.)
  const degrees tied{{4, 0, 4, 0}, {0, 5, 0, 9}};
  CHECK_SELECTION(fit(tied, {1, 2}, {}, std::vector<double>(4, 0.0), fp::budget::count(1)), {1}, {1}, {});
}

TEST_CASE("step 5: Q by affinity, then the rest by affinity; rest reported complementary", "[spec][step5]") {
  // P = {0}, Q = {2,3,5}, rest {1,4}; w = [0, 1, .25, .5, 2, .5].
  // Order: 0 | 3 (.5), 5 (.5, tie -> larger index second), 2 (.25) | 4 (2), 1 (1).
  const degrees r{{6, 5, 4, 3, 2, 1}};
  const tokens p{0}, q{2, 3, 5};
  const std::vector<double> w{0, 1, 0.25, 0.5, 2, 0.5};
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(1)), {0}, {0}, {});
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(2)), {0, 3}, {0}, {3});
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(3)), {0, 3, 5}, {0}, {3, 5});
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(4)), {0, 2, 3, 5}, {0}, {2, 3, 5});
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(5)), {0, 2, 3, 4, 5}, {0}, {2, 3, 4, 5});
  CHECK_SELECTION(fit(r, p, q, w, fp::budget::count(6)), {0, 1, 2, 3, 4, 5}, {0}, {1, 2, 3, 4, 5});
  // ratio on M = 6: m = max(1, floor(x*6 + .5))
  CHECK(fit(r, p, q, w, fp::budget::ratio(0.75)).indices == tokens{0, 2, 3, 4, 5});  // 4.5+.5 = 5
  CHECK(fit(r, p, q, w, fp::budget::ratio(0.25)).indices == tokens{0, 3});  // 1.5+.5 = 2
  CHECK(fit(r, p, q, w, fp::budget::ratio(0.125)).indices == tokens{0});    // .75+.5 = 1.25 -> 1
}

TEST_CASE("step 5: kept_tokens and the ratio rounding", "[spec][step5]") {
  // M = N - a - b
  CHECK(kept(fp::budget::count(4), 6) == 4);
  CHECK(kept(fp::budget::count(7), 6) == 6);           // min(7, 6)
  CHECK(kept(fp::budget::ratio(0.75), 6) == 5);        // 4.5+.5 = 5
  CHECK(kept(fp::budget::ratio(0.25), 6) == 2);        // 1.5+.5 = 2
  CHECK(kept(fp::budget::ratio(0.5), 5) == 3);         // 2.5+.5 = 3
  CHECK(kept(fp::budget::ratio(0.375), 4) == 2);       // 1.5+.5 = 2
  CHECK(kept(fp::budget::ratio(0.125), 4) == 1);       // .5+.5 = 1
  CHECK(kept(fp::budget::ratio(0.1), 4) == 1);         // floor(.9) = 0 -> 1
  CHECK(kept(fp::budget::ratio(1e-9), 1000) == 1);     // tiny x -> 1
  CHECK(kept(fp::budget::ratio(1.0), 6) == 6);
  CHECK_FALSE(fp::kept_tokens(fp::budget::adaptive(), 6).has_value());
  CHECK(kept(fp::budget::adaptive(), 6) == -1);
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 1;  // M = 8 - 2 = 6
  CHECK(kept(fp::budget::ratio(0.75), 8, o) == 5);
  CHECK(kept(fp::budget::count(100), 8, o) == 6);
  CHECK(kept(fp::budget::count(1), 1) == 1);
}

// ---------------------------------------------------------------------------
// Edges

TEST_CASE("edge: N = 1", "[spec][edge]") {
  const maps m = make_maps(1, 1, 1, {1.0f});
  const auto r = fp::contribution_degree(m.view(), 0);
  REQUIRE(r.size() == 1);
  CHECK(r[0] == exact(0.0));  // 1 - 1
  // M = 1: no outlier (fence = 0) -> top-1 = 0; v_0 has M - 1 = 0 entries -> Q = {}
  CHECK_SELECTION(fp::select(m.view()), {0}, {0}, {});
  CHECK_SELECTION(fp::select(m.view(), fp::budget::count(5)), {0}, {0}, {});
  CHECK_SELECTION(fp::select(m.view(), fp::budget::ratio(0.01)), {0}, {0}, {});
  CHECK(kept(fp::budget::count(5), 1) == 1);
}

TEST_CASE("edge: M = 1 with a prefix", "[spec][edge]") {
  // Token 0 has the largest degree (1 + 1 - 0 = 2, vs .5 and .5), but C = {2}.
  const maps m = make_maps(1, 1, 3,
                           {
                               0, 0.5f, 0.5f,  //
                               1, 0, 0,        //
                               1, 0, 0,        //
                           });
  fp::options o;
  o.prefix_tokens = 2;
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {2}, {2}, {});
  CHECK_SELECTION(fp::select(m.view(), fp::budget::count(3), o), {2}, {2}, {});
  CHECK_SELECTION(fp::select(m.view(), fp::budget::ratio(0.01), o), {2}, {2}, {});
  o.pivots_per_layer = 5;
  CHECK_SELECTION(fp::select(m.view(), fp::budget::adaptive(), o), {2}, {2}, {});
  CHECK(kept(fp::budget::count(3), 3, o) == 1);
}

TEST_CASE("edge: all-equal maps resolve every tie to the smallest indices", "[spec][edge]") {
  // L = 2, H = 2, N = 8, every entry .125: r = 7*.125 = .875 everywhere.
  const maps m = make_maps(2, 2, 8, std::vector<float>(2 * 2 * 8 * 8, 0.125f));
  const auto r = fp::contribution_degree(m.view(), 1);
  for (double x : r) CHECK(x == exact(0.875));
  const auto v = m.view();
  // fence = .875 (IQR 0), strict -> no outlier -> top-1 of each layer = 0. v_0 all .125 -> Q = {}.
  CHECK_SELECTION(fp::select(v), {0}, {0}, {});
  // count(3): P {0}, Q {}, rest by w (all .125) -> 1, 2
  CHECK_SELECTION(fp::select(v, fp::budget::count(3)), {0, 1, 2}, {0}, {1, 2});
  CHECK_SELECTION(fp::select(v, fp::budget::ratio(0.5)), {0, 1, 2, 3}, {0}, {1, 2, 3});  // 4
  fp::options col;
  col.complementary_from = fp::direction::column;
  CHECK_SELECTION(fp::select(v, fp::budget::count(3), col), {0, 1, 2}, {0}, {1, 2});
  fp::options k3;
  k3.pivots_per_layer = 3;  // top-3 = 0, 1, 2 in both layers
  CHECK_SELECTION(fp::select(v, fp::budget::adaptive(), k3), {0, 1, 2}, {0, 1, 2}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(2), k3), {0, 1}, {0, 1}, {});  // rank(i) = i
  fp::options pre;
  pre.prefix_tokens = 2;
  pre.suffix_tokens = 1;  // C = {2..6}
  CHECK_SELECTION(fp::select(v, fp::budget::adaptive(), pre), {2}, {2}, {});
  CHECK_SELECTION(fp::select(v, fp::budget::count(3), pre), {2, 3, 4}, {2}, {3, 4});
  CHECK_SELECTION(fp::select(v, fp::budget::count(50), pre), {2, 3, 4, 5, 6}, {2}, {3, 4, 5, 6});
  // Deterministic: the same call twice gives the same answer.
  CHECK(fp::select(v, fp::budget::count(3), pre) == fp::select(v, fp::budget::count(3), pre));
}

TEST_CASE("edge: kept_tokens agrees with the size select returns", "[spec][edge]") {
  const maps t = map_t();
  const maps e = make_maps(1, 1, 8, std::vector<float>(64, 0.125f));
  fp::options pre;
  pre.prefix_tokens = 1;
  pre.suffix_tokens = 1;
  const fp::budget budgets[] = {fp::budget::count(1),   fp::budget::count(3),   fp::budget::count(6),
                                fp::budget::count(99),  fp::budget::ratio(0.1), fp::budget::ratio(0.25),
                                fp::budget::ratio(0.5), fp::budget::ratio(0.75), fp::budget::ratio(1.0)};
  // expected sizes for M = 6 (map T; map e with a = b = 1):
  // 1, 3, 6, 6, floor(1.1) = 1, floor(2) = 2, floor(3.5) = 3, floor(5) = 5, 6
  const index_t expected[] = {1, 3, 6, 6, 1, 2, 3, 5, 6};
  for (std::size_t k = 0; k < 9; ++k) {
    INFO("budget #" << k);
    const auto kt = fp::kept_tokens(budgets[k], 6);
    REQUIRE(kt.has_value());
    CHECK(*kt == expected[k]);
    CHECK(fp::select(t.view(), budgets[k]).size() == static_cast<std::size_t>(expected[k]));
    const auto ke = fp::kept_tokens(budgets[k], 8, pre);
    REQUIRE(ke.has_value());
    CHECK(*ke == expected[k]);
    CHECK(fp::select(e.view(), budgets[k], pre).size() == static_cast<std::size_t>(expected[k]));
  }
}

// The CPU backend's building blocks: the quickselect behind the quartiles,
// and the SIMD paths of the column-sum pass, which must agree to the bit.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <freepruner/freepruner.hpp>

#include "common.hpp"

namespace {

using freepruner::index_t;
namespace cpu = freepruner::detail::cpu;

// Restores the automatic SIMD choice when a test ends, even on failure.
struct simd_cap_guard {
  ~simd_cap_guard() { cpu::simd_cap().store(-1); }
};

std::vector<double> pattern(int kind, std::size_t n) {
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (kind) {
      case 0: x[i] = fptest::uniform(-1, 1); break;                            // distinct
      case 1: x[i] = static_cast<double>(fptest::uniform_int(0, 3)); break;    // few values, many ties
      case 2: x[i] = 0.25; break;                                              // all equal
      case 3: x[i] = static_cast<double>(i); break;                            // sorted
      case 4: x[i] = static_cast<double>(n - i); break;                        // reversed
      case 5: x[i] = static_cast<double>(std::min(i, n - 1 - i)); break;       // organ pipe
      default: x[i] = i % 2 ? 1e-300 : -1e300; break;                          // extreme, alternating
    }
  }
  return x;
}

}  // namespace

TEST_CASE("select_kth finds every order statistic, ties and adversarial orders included", "[kernels]") {
  simd_cap_guard guard;
  const cpu::fast_loops fast;
  for (int kind = 0; kind < 7; ++kind)
    for (std::size_t n : {1u, 2u, 3u, 7u, 8u, 9u, 16u, 17u, 18u, 19u, 100u, 577u, 2000u})
      for (int way = 0; way <= 1 + static_cast<int>(cpu::detected_simd()); ++way) {
        // way 0: the scalar partition; 1 + level: the backend's at that SIMD level
        const auto original = pattern(kind, n);
        auto sorted = original;
        std::sort(sorted.begin(), sorted.end());
        for (std::size_t k : {std::size_t{0}, n / 4, n / 2, 3 * n / 4, n - 1}) {
          auto x = original;
          if (way == 0) {
            freepruner::detail::select_kth(x.data(), n, k);
          } else {
            cpu::simd_cap().store(way - 1);
            freepruner::detail::select_kth(x.data(), n, k, fast);
          }
          INFO("pattern " << kind << " n " << n << " k " << k << " partition " << way);
          REQUIRE(x[k] == sorted[k]);
          REQUIRE(std::all_of(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(k), [&](double v) { return v <= x[k]; }));
          REQUIRE(std::all_of(x.begin() + static_cast<std::ptrdiff_t>(k), x.end(), [&](double v) { return v >= x[k]; }));
          auto permuted = x;
          std::sort(permuted.begin(), permuted.end());
          REQUIRE(permuted == sorted);  // a permutation of the input
        }
      }
}

TEST_CASE("upper_fence equals numpy's linear quartiles on sorted copies", "[kernels]") {
  for (int t = 0; t < 300; ++t) {
    const std::size_t n = static_cast<std::size_t>(fptest::uniform_int(1, t % 3 ? 300 : 3000));
    const auto x = pattern(fptest::uniform_int(0, 6), n);
    auto sorted = x;
    std::sort(sorted.begin(), sorted.end());
    auto q = [&](double p) {  // numpy "linear", literally
      const double pos = p * static_cast<double>(n - 1);
      const auto lo = static_cast<std::size_t>(pos);
      const double g = pos - static_cast<double>(lo);
      const double a = sorted[lo], b = sorted[std::min(lo + 1, n - 1)];
      return g == 0 ? a : (g >= 0.5 ? b - (b - a) * (1 - g) : a + (b - a) * g);
    };
    const double f = fptest::uniform(0, 3);
    auto work = x;
    const double got = freepruner::detail::upper_fence(work.data(), n, f);
    work = x;
    const double fast = freepruner::detail::upper_fence(work.data(), n, f, cpu::fast_loops{});
    const double want = q(0.75) + f * (q(0.75) - q(0.25));
    INFO("n " << n);
    REQUIRE(got == want);
    REQUIRE(fast == want);
  }
}

template <class E>
static void check_paths_agree() {
  simd_cap_guard guard;
  for (int t = 0; t < 40; ++t) {
    const int layers = fptest::uniform_int(1, 2), heads = fptest::uniform_int(1, 6), n = fptest::uniform_int(1, 70);
    const auto maps = fptest::convert<E>(fptest::random_maps(layers, heads, n));
    const freepruner::attention_view<const E> v(maps.data(), layers, heads, n);
    freepruner::options o;
    o.prefix_tokens = n > 1 ? 1 : 0;
    std::vector<std::vector<double>> degrees;
    std::vector<freepruner::selection> selections;
    for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
      cpu::simd_cap().store(level);
      degrees.push_back(freepruner::contribution_degree(v, -1));
      selections.push_back(freepruner::select(v, freepruner::budget::ratio(0.5), o));
    }
    for (std::size_t k = 1; k < degrees.size(); ++k) {
      INFO("simd level " << k << " against scalar, N = " << n);
      REQUIRE(std::memcmp(degrees[k].data(), degrees[0].data(), degrees[0].size() * sizeof(double)) == 0);
      REQUIRE(selections[k] == selections[0]);
    }
  }
}

// Rows of cpu::long_row elements or more take the pass's other stream count
// and its far prefetch: the sums must stay those of the reference, at every
// SIMD level, and the tokens those of fpref::select.
template <class E>
static void check_long_rows() {
  simd_cap_guard guard;
  for (index_t n : {cpu::long_row - 1, cpu::long_row, cpu::long_row + 7}) {
    const int heads = fptest::uniform_int(1, 2);
    const auto wide = fptest::widen(fptest::convert<E>(fptest::random_maps(1, heads, static_cast<int>(n))));
    const auto maps = fptest::convert<E>(wide);
    const freepruner::attention_view<const E> v(maps.data(), 1, heads, n);
    const auto N = static_cast<std::size_t>(n);
    std::vector<double> want(N, 0.0);
    for (int h = 0; h < heads; ++h)
      for (std::size_t j = 0; j < N; ++j)
        for (std::size_t i = 0; i < N; ++i) want[i] += wide[(static_cast<std::size_t>(h) * N + j) * N + i];
    for (std::size_t i = 0; i < N; ++i) {
      for (int h = 0; h < heads; ++h) want[i] -= wide[(static_cast<std::size_t>(h) * N + i) * N + i];
      want[i] /= heads;
    }
    std::vector<std::vector<double>> degrees;
    for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
      cpu::simd_cap().store(level);
      degrees.push_back(freepruner::contribution_degree(v, 0));
    }
    INFO("N " << n << ", H " << heads);
    for (std::size_t i = 0; i < N; ++i) {
      INFO("token " << i);
      REQUIRE(degrees[0][i] == Approx(want[i]).epsilon(1e-12));
    }
    for (std::size_t k = 1; k < degrees.size(); ++k) {
      INFO("simd level " << k << " against scalar");
      REQUIRE(std::memcmp(degrees[k].data(), degrees[0].data(), N * sizeof(double)) == 0);
    }
    fpref::config c;
    c.heads = heads;
    c.tokens = static_cast<int>(n);
    c.prefix = 1;
    c.kind = fpref::budget_kind::ratio;
    c.budget_value = 0.5;
    const auto ref = fpref::select(wide, c);
    const auto got = freepruner::select(v, fptest::budget_of(c), fptest::options_of(c));
    REQUIRE(got.indices == fptest::tokens_of(ref.indices));
    REQUIRE(got.pivotal == fptest::tokens_of(ref.pivotal));
  }
}

TEST_CASE("the degree pass sums long rows as the reference does, at every SIMD level", "[kernels][determinism]") {
  check_long_rows<float>();
  check_long_rows<double>();
  check_long_rows<Eigen::half>();
}

TEST_CASE("check_spread finds the extremes wherever they lie", "[kernels][errors]") {
  // Every position of the minimum and the maximum, in ranges that start
  // past 0 as the candidates do.
  for (index_t first : {index_t(0), index_t(3)})
    for (index_t m = 1; m <= 13; ++m)
      for (index_t a = first; a < first + m; ++a)
        for (index_t b = first; b < first + m; ++b) {
          std::vector<double> x(static_cast<std::size_t>(first + m + 2), 9e307);  // outside: never read
          for (index_t i = first; i < first + m; ++i) x[static_cast<std::size_t>(i)] = fptest::uniform(-1, 1);
          const double lo = a == b ? 1e308 : -1e308;
          x[static_cast<std::size_t>(a)] = lo;
          x[static_cast<std::size_t>(b)] = 1e308;
          const auto s = freepruner::detail::check_spread(x.data(), first, first + m, "v");
          INFO("first " << first << ", M " << m << ", min at " << a << ", max at " << b << ": " << s.message());
          if (a == b) {
            CHECK(s.ok());  // one extreme alone: a finite spread
          } else {
            REQUIRE(!s.ok());
            CHECK(s.code() == freepruner::errc::non_finite);
            CHECK(s.message().find("v spans -1e+308 to 1e+308") != std::string::npos);
          }
        }
}

TEST_CASE("scalar, SSE2 and AVX2 column sums agree to the bit", "[kernels][determinism]") {
  INFO("detected SIMD level: " << static_cast<int>(cpu::detected_simd()));
  check_paths_agree<float>();
  check_paths_agree<double>();
  check_paths_agree<Eigen::half>();
  check_paths_agree<Eigen::bfloat16>();
}

TEST_CASE("fp16 rows summed in float where that is exact give the double sums' bits", "[kernels][determinism]") {
  // Sums below 1, reaching 1 (an attention sink), just below 1 and at 1,
  // subnormals, negatives, -0, NaN and infinities, in 32-column blocks and
  // their tails; every level against the double sums in row order.
  simd_cap_guard guard;
  using half = Eigen::half;
  // A subnormal: its last bit is 2^-24, lost in a float sum at or above 1.
  auto tiny = [] { return half(std::ldexp(static_cast<float>(fptest::uniform_int(1, 1023)), -24)); };
  for (int t = 0; t < 600; ++t) {
    const int count = fptest::uniform_int(1, 8), kind = t % 8;
    const index_t n = fptest::uniform_int(1, 100);
    const auto N = static_cast<std::size_t>(n);
    std::vector<std::vector<half>> data(static_cast<std::size_t>(count), std::vector<half>(N));
    for (auto& row : data)
      for (auto& x : row) {
        switch (kind) {
          case 0: x = half(static_cast<float>(fptest::uniform(0, 1.0 / 8))); break;        // below 1: float
          case 1: x = fptest::uniform_int(0, 1) ? half(static_cast<float>(fptest::uniform(0.3, 0.9))) : tiny(); break;  // >= 1
          case 2: x = tiny(); break;
          case 3: x = fptest::uniform_int(0, 1) ? half(static_cast<float>(fptest::uniform(-0.9, 0.9))) : tiny(); break;  // < 0
          default: x = half(static_cast<float>(fptest::uniform(0, 1.0 / 16))); break;
        }
      }
    // One column whose block sums to 1 - 2^-(10 + rows) (kind 4), to 1, or
    // to 1 + 2^-24, which a float sum rounds to 1 (kind 5), or holds -0, a NaN
    // or an infinity.
    const auto col = static_cast<std::size_t>(fptest::uniform_int(0, static_cast<int>(n) - 1));
    const auto row = static_cast<std::size_t>(fptest::uniform_int(0, count - 1));
    if (kind == 4 || kind == 5) {
      data[0][col] = half(count == 1 && kind == 5 ? 1.0f : 1.0f - std::ldexp(1.0f, -11));
      for (int r = 1; r < count; ++r)
        data[static_cast<std::size_t>(r)][col] = half(kind == 4 ? std::ldexp(1.0f, -11 - r) : 0.0f);
      if (kind == 5 && count > 1) data[1][col] = half(std::ldexp(1.0f, -11));
      if (kind == 5 && count > 2) data.back()[col] = half(std::ldexp(1.0f, -24));
    }
    if (kind == 6) data[row][col] = half(-0.0f);
    if (kind == 7) {
      const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity()};
      data[row][col] = half(special[fptest::uniform_int(0, 2)]);
    }
    std::vector<const half*> rows;
    for (auto& r : data) rows.push_back(r.data());
    std::vector<double> init(N);
    for (auto& a : init) a = fptest::uniform_int(0, 1) ? fptest::uniform(0, 4) : 0.0;
    std::vector<double> want = init;
    for (std::size_t j = 0; j < N; ++j) {
      double sum = 0;
      for (const auto& r : data) sum += static_cast<double>(static_cast<float>(r[j]));
      want[j] += sum;
    }
    for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
      cpu::simd_cap().store(level);
      std::vector<double> acc = init;
      cpu::add_rows(rows.data(), count, n, 1, acc.data());
      INFO("trial " << t << ", kind " << kind << ", rows " << count << ", N " << n << ", level " << level);
      for (std::size_t j = 0; j < N; ++j) {
        INFO("column " << j << ": " << acc[j] << " against " << want[j]);
        if (std::isnan(want[j]))
          REQUIRE(std::isnan(acc[j]));
        else
          REQUIRE(std::memcmp(&acc[j], &want[j], sizeof(double)) == 0);
      }
    }
  }
}

TEST_CASE("the builder's loops give their scalar results at every SIMD level", "[kernels][determinism]") {
  simd_cap_guard guard;
  for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
    cpu::simd_cap().store(level);
    for (int t = 0; t < 400; ++t) {
      const index_t n = fptest::uniform_int(0, 45), from = fptest::uniform_int(0, n), to = fptest::uniform_int(from, n);
      const auto x = pattern(fptest::uniform_int(0, 5), static_cast<std::size_t>(n));
      INFO("level " << level << ", n " << n << ", from " << from << ", to " << to);
      // scan: extremes, affinity and copy of x[from..to)
      std::vector<double> affinity(x.size()), want_affinity(x.size()), copy(x.size(), -7.0), want_copy(x.size(), -7.0);
      for (auto& w : affinity) w = want_affinity[static_cast<std::size_t>(&w - affinity.data())] = fptest::uniform(-1, 1);
      double lo = 0.5, hi = 0.5, want_lo = 0.5, want_hi = 0.5;
      for (index_t j = from; j < to; ++j) {
        const double v = x[static_cast<std::size_t>(j)];
        want_lo = std::min(want_lo, v);
        want_hi = std::max(want_hi, v);
        want_affinity[static_cast<std::size_t>(j)] += v;
        want_copy[static_cast<std::size_t>(j - from)] = v;
      }
      cpu::fast_loops::scan(x.data(), from, to, affinity.data(), copy.data(), lo, hi);
      REQUIRE(lo == want_lo);
      REQUIRE(hi == want_hi);
      REQUIRE(affinity == want_affinity);
      REQUIRE(copy == want_copy);
      // mark_above: a strict comparison, OR-ed into the marks
      const double fence = n > 0 && t % 2 ? x[static_cast<std::size_t>(fptest::uniform_int(0, n - 1))] : 0.3;
      std::vector<unsigned char> marks(x.size()), want_marks(x.size());
      for (std::size_t j = 0; j < x.size(); ++j) marks[j] = want_marks[j] = static_cast<unsigned char>(fptest::uniform_int(0, 1));
      for (index_t j = from; j < to; ++j)
        want_marks[static_cast<std::size_t>(j)] |= static_cast<unsigned char>(x[static_cast<std::size_t>(j)] > fence);
      cpu::fast_loops::mark_above(x.data(), from, to, fence, marks.data());
      REQUIRE(marks == want_marks);
      // divide_finite: exact division by the head count, and any nan or
      // infinity found wherever it lies
      static const index_t head_counts[] = {1, 2, 3, 7, 8, 16, 25, 64};
      const index_t heads = head_counts[fptest::uniform_int(0, 7)];
      auto y = x;
      const bool bad = n > 0 && t % 3 == 0;
      if (bad) {
        static const double faults[] = {fptest::nan_v, fptest::inf_v, -fptest::inf_v};
        y[static_cast<std::size_t>(fptest::uniform_int(0, n - 1))] = faults[fptest::uniform_int(0, 2)];
      }
      auto want = y;
      for (double& v : want) v /= static_cast<double>(heads);
      INFO("heads " << heads << (bad ? ", one non-finite" : ""));
      REQUIRE(cpu::divide_finite(y.data(), n, heads) == !bad);
      REQUIRE((y.empty() || std::memcmp(y.data(), want.data(), y.size() * sizeof(double)) == 0));
    }
  }
}

TEST_CASE("complement_builder's spread check finds the extremes wherever they lie, around the pivot",
          "[kernels][errors]") {
  // The builder scans C in two parts, either side of the pivot, in lanes:
  // the minimum and the maximum at every position, the pivot's own included.
  simd_cap_guard guard;
  for (int level = 0; level <= static_cast<int>(cpu::detected_simd()); ++level) {
    cpu::simd_cap().store(level);
    for (index_t first : {index_t(0), index_t(2)})
      for (index_t m = 2; m <= 11; ++m)
        for (index_t pivot = first; pivot < first + m; ++pivot)
          for (index_t a = first; a < first + m; ++a)
            for (index_t b = first; b < first + m; ++b) {
              freepruner::options o;
              o.prefix_tokens = static_cast<int>(first);
              o.suffix_tokens = 1;
              freepruner::detail::plan p;
              REQUIRE(freepruner::detail::make_plan({1, 1, first + m + 1, first + m + 1}, o, p));
              std::vector<double> v(static_cast<std::size_t>(first + m + 1), 9e307);  // outside C: never read
              for (index_t i = first; i < first + m; ++i) v[static_cast<std::size_t>(i)] = fptest::uniform(0, 1);
              v[static_cast<std::size_t>(a)] = a == b ? 1e308 : -1e308;
              v[static_cast<std::size_t>(b)] = 1e308;
              freepruner::detail::complement_builder<double, cpu::fast_loops> builder({static_cast<freepruner::token_t>(pivot)}, p, 1.5);
              const auto s = builder.add(v.data(), static_cast<freepruner::token_t>(pivot));
              INFO("level " << level << ", first " << first << ", M " << m << ", pivot " << pivot << ", min at " << a
                            << ", max at " << b << ": " << s.message());
              if (a == b) {
                CHECK(s.ok());
              } else {
                REQUIRE(!s.ok());
                CHECK(s.code() == freepruner::errc::non_finite);
                CHECK(s.message().find("the complementary scores v_p spans -1e+308 to 1e+308") != std::string::npos);
              }
            }
  }
}

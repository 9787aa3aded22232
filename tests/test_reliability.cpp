// Reliability (an engine calls select on every image it serves; it must
// never crash, hang, leak or answer differently twice):
// - the fuzz seed corpus and random mutations of it, through the fuzz
//   target's oracle (fuzz/fuzz_select.hpp), in every build of the suite;
// - bit-identical answers across 1000 repeats, buffer alignments, threads
//   and thread counts (select from several threads on shared read-only maps);
// - extreme sizes: N = 1, one layer and one head, N = 4096 (with every
//   candidate a pivot), a budget of one token, all-equal maps (every tie);
//   time that grows with the N^2 read and no faster; bounded extra memory.
// The N = 4096 cases use dyadic maps, whose sums are exact in double, so the
// expected answers are exact too.

#include <freepruner/freepruner.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../fuzz/fuzz_select.hpp"
#include "common.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define FREEPRUNER_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FREEPRUNER_TEST_SANITIZED 1
#endif
#ifndef FREEPRUNER_TEST_SANITIZED
#define FREEPRUNER_TEST_SANITIZED 0
#endif

// Heap accounting for the memory test: operator new counted, glibc only,
// and not under sanitizers (they keep their own operator new, which checks
// new/delete pairing for the whole suite).
#if !FREEPRUNER_TEST_SANITIZED && defined(__GLIBC__)
#define FREEPRUNER_TEST_COUNTS_HEAP 1
#include <malloc.h>
#else
#define FREEPRUNER_TEST_COUNTS_HEAP 0
#endif

namespace fp = freepruner;
using fp::errc;
using fp::index_t;
using fp::token_t;

#if FREEPRUNER_TEST_COUNTS_HEAP
namespace {
std::atomic<long long> heap_in_use{0}, heap_peak{0};

void note_allocation(void* p) noexcept {
  if (p == nullptr) return;
  const auto n = static_cast<long long>(malloc_usable_size(p));
  const long long now = heap_in_use.fetch_add(n, std::memory_order_relaxed) + n;
  long long peak = heap_peak.load(std::memory_order_relaxed);
  while (now > peak && !heap_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Out of line: inlined next to operator new, GCC's -Wmismatched-new-delete
// would see free() on memory from new (which is malloc here).
[[gnu::noinline]] void counted_release(void* p) noexcept {
  if (p != nullptr) heap_in_use.fetch_sub(static_cast<long long>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}

void* counted_allocation(std::size_t n) noexcept {
  void* p = std::malloc(n == 0 ? 1 : n);
  note_allocation(p);
  return p;
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted_allocation(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_allocation(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_allocation(n); }
void operator delete(void* p) noexcept { counted_release(p); }
void operator delete[](void* p) noexcept { ::operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { ::operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { ::operator delete(p); }
#endif

namespace {

// ---------------------------------------------------------------------------
// Inputs.

// Dyadic maps: k * 2^-20 with k < 16, plus sink keys (k += 64..191) per
// layer-head that make pivots, plus two keys per row (k += 24..39) that
// make complementary tokens. Every value is below 2^-12 with its lowest bit
// at 2^-20, so every sum over up to 2^12 tokens and 2^4 heads is exact in
// double, in any order, and library and reference agree exactly. Rows do
// not sum to 1 (the algorithm does not need it).
std::vector<float> dyadic_maps(index_t layers, index_t heads, index_t tokens, std::uint64_t seed) {
  std::vector<float> maps(static_cast<std::size_t>(layers * heads * tokens * tokens));
  std::mt19937_64 gen(seed);
  std::vector<unsigned> bonus(static_cast<std::size_t>(tokens));
  const auto n = static_cast<std::uint64_t>(tokens);
  for (index_t lh = 0; lh < layers * heads; ++lh) {
    for (auto& b : bonus) b = gen() % 16 == 0 ? 64 + static_cast<unsigned>(gen() % 128) : 0;
    float* m = &maps[static_cast<std::size_t>(lh * tokens * tokens)];
    for (index_t i = 0; i < tokens; ++i) {
      float* row = m + i * tokens;
      for (index_t j = 0; j < tokens; ++j)
        row[j] = static_cast<float>(gen() % 16 + bonus[static_cast<std::size_t>(j)]) * 0x1p-20f;
      for (int focus = 0; focus < 2; ++focus) row[gen() % n] += static_cast<float>(24 + gen() % 16) * 0x1p-20f;
    }
  }
  return maps;
}

std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

fpref::result reference(const std::vector<float>& maps, fpref::config c) { return fpref::select(to_double(maps), c); }

fp::selection selection_of(const fpref::result& r) {
  fp::selection s;
  s.indices = fptest::tokens_of(r.indices);
  s.pivotal = fptest::tokens_of(r.pivotal);
  s.complementary = fptest::tokens_of(r.complementary);
  return s;
}

std::vector<token_t> range(index_t from, index_t to) {  // from..to-1
  std::vector<token_t> v;
  for (index_t t = from; t < to; ++t) v.push_back(static_cast<token_t>(t));
  return v;
}

bool bitwise_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

// A well-formed selection (the fuzz oracle's structural check).
void require_well_formed(const fp::selection& s, index_t first, index_t last, index_t m) {
  const fpfuzz::context cx("test_reliability");
  REQUIRE_NOTHROW(fpfuzz::check_structure(cx, s, first, last, m, "select"));
}

std::vector<std::filesystem::path> corpus_files() {
  const auto dir = std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus";
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(dir))
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::uint8_t> read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string hex(const std::vector<std::uint8_t>& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (std::uint8_t b : bytes) s += std::string("\\x") + digits[b >> 4] + digits[b & 15];
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// The fuzz target's oracle, in every build of the suite.

TEST_CASE("the fuzz seed corpus passes the fuzz oracle", "[reliability][fuzz]") {
  const auto files = corpus_files();
  REQUIRE(files.size() >= 10);
  for (const auto& file : files) {
    const auto bytes = read_bytes(file);
    INFO(file.filename().string());
    try {
      fpfuzz::run_one(bytes.data(), bytes.size());
    } catch (const fpfuzz::check_failed& e) {
      FAIL_CHECK(e.what());
    }
  }
}

TEST_CASE("random mutations of the seed corpus pass the fuzz oracle", "[reliability][fuzz]") {
  const auto files = corpus_files();
  REQUIRE(!files.empty());
  std::vector<std::vector<std::uint8_t>> seeds;
  for (const auto& file : files) seeds.push_back(read_bytes(file));
  auto& gen = fptest::rng();
  for (int run = 0; run < 400; ++run) {
    auto bytes = seeds[gen() % seeds.size()];
    const int mutations = 1 + static_cast<int>(gen() % 8);
    for (int k = 0; k < mutations; ++k) {
      const auto pos = bytes.empty() ? 0 : static_cast<std::size_t>(gen() % bytes.size());
      switch (gen() % 5) {
        case 0: if (!bytes.empty()) bytes[pos] = static_cast<std::uint8_t>(bytes[pos] ^ (1u << (gen() % 8))); break;
        case 1: if (!bytes.empty()) bytes[pos] = static_cast<std::uint8_t>(gen()); break;
        case 2: if (!bytes.empty()) bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(pos)); break;
        case 3: bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<std::uint8_t>(gen())); break;
        default:  // a patch: position, code, argument
          for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<std::uint8_t>(gen()));
          break;
      }
    }
    try {
      fpfuzz::run_one(bytes.data(), bytes.size());
    } catch (const fpfuzz::check_failed& e) {
      FAIL_CHECK(std::string(e.what()) + "\n  input: \"" + hex(bytes) + "\"");
    }
  }
}

// ---------------------------------------------------------------------------
// Determinism.

namespace {

struct repeat_case {
  const char* name;
  index_t layers, heads, tokens;
  fp::budget b;
  fp::options o;
};

std::vector<repeat_case> repeat_cases() {
  std::vector<repeat_case> cases;
  fp::options cls;
  cls.prefix_tokens = 1;
  cases.push_back({"CLS + 8x8, adaptive", 2, 4, 65, fp::budget::adaptive(), cls});
  cases.push_back({"CLS + 8x8, ratio 0.5", 2, 4, 65, fp::budget::ratio(0.5), cls});
  fp::options column = cls;
  column.complementary_from = fp::direction::column;
  cases.push_back({"column, count 9", 2, 4, 65, fp::budget::count(9), column});
  fp::options topk;
  topk.pivots_per_layer = 3;
  topk.pivot_layers = {0};
  topk.complementary_layer = 0;
  topk.suffix_tokens = 1;
  cases.push_back({"top-3 of layer 0, complements from layer 0", 2, 3, 50, fp::budget::count(12), topk});
  return cases;
}

}  // namespace

TEST_CASE("the same input gives bit-identical answers across 1000 repeats", "[reliability][determinism]") {
  for (const auto& rc : repeat_cases()) {
    INFO(rc.name);
    const auto maps = fptest::convert<float>(fptest::random_maps(static_cast<int>(rc.layers), static_cast<int>(rc.heads),
                                                                 static_cast<int>(rc.tokens)));
    const fp::attention_view<const float> v(maps.data(), rc.layers, rc.heads, rc.tokens);
    const fp::selection first = fp::select(v, rc.b, rc.o);
    int differing = 0;
    for (int r = 0; r < 1000; ++r)
      if (fp::select(v, rc.b, rc.o) != first) ++differing;
    REQUIRE(differing == 0);

    // The stages' numbers, bit for bit (degrees, affinities).
    const auto degrees = fp::contribution_degree(v, 0);
    const auto comps = fp::complementary_tokens(v, first.pivotal, rc.o);
    for (int r = 0; r < 100; ++r) {
      REQUIRE(bitwise_equal(fp::contribution_degree(v, 0), degrees));
      const auto again = fp::complementary_tokens(v, first.pivotal, rc.o);
      REQUIRE(again.tokens == comps.tokens);
      REQUIRE(bitwise_equal(again.affinity, comps.affinity));
    }
  }
}

TEST_CASE("the answer does not depend on where the maps lie in memory", "[reliability][determinism]") {
  const index_t L = 2, H = 4, N = 65;
  const auto maps = fptest::convert<float>(fptest::random_maps(2, 4, 65));
  fp::options o;
  o.prefix_tokens = 1;
  const fp::selection want = fp::select(fp::attention_view<const float>(maps.data(), L, H, N), fp::budget::ratio(0.5), o);
  const auto want_degrees = fp::contribution_degree(fp::attention_view<const float>(maps.data(), L, H, N), 1);
  for (std::size_t offset = 0; offset < 16; ++offset) {  // every alignment of a 64-byte line, and past it
    std::vector<float> moved(maps.size() + offset);
    std::copy(maps.begin(), maps.end(), moved.begin() + static_cast<std::ptrdiff_t>(offset));
    const fp::attention_view<const float> v(moved.data() + offset, L, H, N);
    INFO("offset " << offset << " floats");
    REQUIRE(fp::select(v, fp::budget::ratio(0.5), o) == want);
    REQUIRE(bitwise_equal(fp::contribution_degree(v, 1), want_degrees));
  }
}

// ---------------------------------------------------------------------------
// Threads: select from several threads at once on shared read-only maps.

namespace {

// One call's whole answer, compared bit for bit.
struct answer {
  bool ok = true;
  errc code = errc::ok;
  std::string message;
  std::vector<fp::selection> selections;
  std::vector<double> numbers;  // degrees, affinities

  bool operator==(const answer& other) const {
    return ok == other.ok && code == other.code && message == other.message && selections == other.selections &&
           bitwise_equal(numbers, other.numbers);
  }
};

answer from_status(const fp::status& s, std::vector<fp::selection> selections) {
  answer a;
  a.ok = s.ok();
  a.code = s.code();
  a.message = s.message();
  a.selections = std::move(selections);
  return a;
}

// Maps shared by every thread; nothing writes them once the jobs are built.
struct shared_maps {
  std::vector<float> clip;  // CLS + 24x24 patches, 2 layers, 4 heads
  std::vector<float> small_f;
  std::vector<double> small_d;
  std::vector<Eigen::half> small_h;
  std::vector<Eigen::bfloat16> small_b;
  std::vector<float> transposed;  // small_f with every map stored transposed
  std::vector<float> batch;       // 3 items
  std::vector<float> with_nan;
};

constexpr index_t job_l = 2, job_h = 2, job_n = 40;  // the small maps' shape

shared_maps make_shared_maps() {
  shared_maps m;
  m.clip = fptest::convert<float>(fptest::random_maps(2, 4, 577));
  const auto base = fptest::random_maps(job_l, job_h, job_n);
  m.small_f = fptest::convert<float>(base);
  m.small_d = base;
  m.small_h = fptest::convert<Eigen::half>(base);
  m.small_b = fptest::convert<Eigen::bfloat16>(base);
  m.transposed.resize(m.small_f.size());
  for (index_t lh = 0; lh < job_l * job_h; ++lh)
    for (index_t i = 0; i < job_n; ++i)
      for (index_t j = 0; j < job_n; ++j)
        m.transposed[static_cast<std::size_t>((lh * job_n + j) * job_n + i)] =
            m.small_f[static_cast<std::size_t>((lh * job_n + i) * job_n + j)];
  m.batch = fptest::convert<float>(fptest::random_maps(3 * job_l, job_h, job_n));
  m.with_nan = m.small_f;
  m.with_nan[m.with_nan.size() / 3] = std::numeric_limits<float>::quiet_NaN();
  return m;
}

std::vector<std::function<answer()>> make_jobs(const shared_maps& m) {
  std::vector<std::function<answer()>> jobs;
  fp::options cls;
  cls.prefix_tokens = 1;
  fp::options column;
  column.complementary_from = fp::direction::column;
  column.suffix_tokens = 2;
  fp::options topk;
  topk.pivots_per_layer = 4;
  topk.pivot_layers = {1};
  const std::vector<std::pair<fp::budget, fp::options>> settings = {
      {fp::budget::adaptive(), {}}, {fp::budget::ratio(0.5), cls}, {fp::budget::count(7), column}, {fp::budget::count(11), topk}};
  auto one = [](fp::selection s) {
    answer a;
    a.selections.push_back(std::move(s));
    return a;
  };
  jobs.push_back([&m, one] {
    fp::options o;
    o.prefix_tokens = 1;
    return one(fp::select(fp::attention_view<const float>(m.clip.data(), 2, 4, 577), fp::budget::ratio(0.5), o));
  });
  for (const auto& [b, o] : settings) {
    jobs.push_back([&m, one, b = b, o = o] { return one(fp::select(fp::attention_view<const float>(m.small_f.data(), job_l, job_h, job_n), b, o)); });
    jobs.push_back([&m, one, b = b, o = o] { return one(fp::select(fp::attention_view<const double>(m.small_d.data(), job_l, job_h, job_n), b, o)); });
    jobs.push_back([&m, one, b = b, o = o] {
      return one(fp::select(fp::attention_view<const Eigen::half>(m.small_h.data(), job_l, job_h, job_n), b, o));
    });
    jobs.push_back([&m, one, b = b, o = o] {
      return one(fp::select(fp::attention_view<const Eigen::bfloat16>(m.small_b.data(), job_l, job_h, job_n), b, o));
    });
    jobs.push_back([&m, one, b = b, o = o] {  // keys strided: the maps stored transposed
      const fp::attention_view<const float> v(m.transposed.data(), {job_l, job_h, job_n, job_n}, {job_h * job_n * job_n, job_n * job_n, 1, job_n});
      return one(fp::select(v, b, o));
    });
    jobs.push_back([&m, b = b, o = o] {
      std::vector<fp::selection> out;
      const fp::status s = fp::try_select(fp::batched_attention_view<const float>(m.batch.data(), 3, job_l, job_h, job_n), b, o, out);
      return from_status(s, std::move(out));
    });
    jobs.push_back([&m, b = b, o = o] {  // the stages, with their numbers
      const fp::attention_view<const float> v(m.small_f.data(), job_l, job_h, job_n);
      std::vector<std::vector<double>> degrees;
      for (index_t l = 0; l < job_l; ++l) degrees.push_back(fp::contribution_degree(v, l));
      fp::options all = o;
      all.pivot_layers.clear();
      const auto pivots = fp::pivotal_tokens(degrees, all);
      const auto comps = fp::complementary_tokens(v, pivots, all);
      answer a;
      a.selections.push_back(fp::fit_budget(degrees, pivots, comps, b, all));
      for (const auto& d : degrees) a.numbers.insert(a.numbers.end(), d.begin(), d.end());
      a.numbers.insert(a.numbers.end(), comps.affinity.begin(), comps.affinity.end());
      return a;
    });
  }
  jobs.push_back([&m] {  // a NaN that is read: an error, with its message
    fp::selection out;
    return from_status(fp::try_select(fp::attention_view<const float>(m.with_nan.data(), job_l, job_h, job_n), fp::budget::adaptive(), {}, out), {out});
  });
  jobs.push_back([&m] {  // bad options: an error thrown
    fp::options o;
    o.fence_factor = -1;
    answer a;
    try {
      (void)fp::select(fp::attention_view<const float>(m.small_f.data(), job_l, job_h, job_n), fp::budget::adaptive(), o);
    } catch (const fp::error& e) {
      a.ok = false;
      a.code = e.code();
      a.message = e.what();
    }
    return a;
  });
  jobs.push_back([] {
    answer a;
    a.numbers.push_back(static_cast<double>(*fp::kept_tokens(fp::budget::ratio(0.3), 577, {})));
    return a;
  });
  return jobs;
}

}  // namespace

TEST_CASE("select from several threads on shared read-only maps equals serial calls, at every thread count",
          "[reliability][threads]") {
  const shared_maps maps = make_shared_maps();
  const auto jobs = make_jobs(maps);
  std::vector<answer> serial;
  for (const auto& job : jobs) serial.push_back(job());
  REQUIRE(!serial.back().numbers.empty());
  REQUIRE(serial[serial.size() - 3].code == errc::non_finite);
  REQUIRE(serial[serial.size() - 2].code == errc::invalid_option);

  for (unsigned threads : {1u, 2u, 4u, 8u}) {
    INFO(threads << " threads");
    const int rounds = 3;
    // results[t][round * jobs + j]; each thread starts at a different job, so
    // every job runs on several threads at the same moment.
    std::vector<std::vector<answer>> results(threads);
    std::atomic<unsigned> ready{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        auto& mine = results[t];
        mine.resize(rounds * jobs.size());
        ready.fetch_add(1);
        while (ready.load() < threads) std::this_thread::yield();  // start together
        for (int r = 0; r < rounds; ++r)
          for (std::size_t k = 0; k < jobs.size(); ++k) {
            const std::size_t j = (k + t * 7 + static_cast<std::size_t>(r)) % jobs.size();
            mine[static_cast<std::size_t>(r) * jobs.size() + j] = jobs[j]();
          }
      });
    for (auto& th : pool) th.join();
    int differing = 0;
    for (unsigned t = 0; t < threads; ++t)
      for (std::size_t k = 0; k < results[t].size(); ++k)
        if (!(results[t][k] == serial[k % jobs.size()])) ++differing;
    REQUIRE(differing == 0);
  }

  // The same work split across threads (each job once), at every thread count.
  for (unsigned threads : {2u, 3u, 8u}) {
    std::vector<answer> split(jobs.size());
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (std::size_t j = t; j < jobs.size(); j += threads) split[j] = jobs[j]();
      });
    for (auto& th : pool) th.join();
    for (std::size_t j = 0; j < jobs.size(); ++j) REQUIRE(split[j] == serial[j]);
  }
}

// ---------------------------------------------------------------------------
// Extreme sizes.

TEST_CASE("N = 1: every budget and option keeps the one token", "[reliability][extreme]") {
  for (float value : {0.0f, 1.0f, -3.5f, 1e30f, 1e-45f}) {
    const std::vector<float> maps{value};
    const fp::attention_view<const float> v(maps.data(), 1, 1, 1);
    for (const fp::budget& b : {fp::budget::adaptive(), fp::budget::count(1), fp::budget::count(std::numeric_limits<index_t>::max()),
                                fp::budget::ratio(1.0), fp::budget::ratio(5e-324)})
      for (index_t k : {index_t(0), index_t(1), std::numeric_limits<index_t>::max()})
        for (double f : {0.0, 1.5, 1e300})
          for (auto dir : {fp::direction::row, fp::direction::column}) {
            fp::options o;
            o.pivots_per_layer = k;
            o.fence_factor = f;
            o.complementary_from = dir;
            const auto s = fp::select(v, b, o);
            REQUIRE(s.indices == std::vector<token_t>{0});
            REQUIRE(s.pivotal == std::vector<token_t>{0});
            REQUIRE(s.complementary.empty());
          }
  }
  // Several layers and heads of one token; and one candidate among prefix/suffix.
  const std::vector<float> ones(3 * 4, 0.5f);
  REQUIRE(fp::select(fp::attention_view<const float>(ones.data(), 3, 4, 1)).indices == std::vector<token_t>{0});
  const std::vector<float> three(9, 1.0f / 3);
  fp::options o;
  o.prefix_tokens = 1;
  o.suffix_tokens = 1;
  REQUIRE(fp::select(fp::attention_view<const float>(three.data(), 1, 1, 3), fp::budget::count(5), o).indices ==
          std::vector<token_t>{1});
}

TEST_CASE("one layer, one head, small N: exactly the reference, every option", "[reliability][extreme]") {
  for (int n = 1; n <= 12; ++n)
    for (int trial = 0; trial < 20; ++trial) {
      fpref::config c = fptest::random_config();
      c.layers = c.heads = 1;
      c.tokens = n;
      c.prefix = fptest::uniform_int(0, std::min(2, n - 1));
      c.suffix = fptest::uniform_int(0, n - 1 - c.prefix) > 0 ? 1 : 0;
      c.complementary_layer = -1;
      c.pivot_layers.clear();
      const int m = n - c.prefix - c.suffix;
      if (c.kind == fpref::budget_kind::count) c.budget_value = fptest::uniform_int(1, m + 2);
      const auto maps = dyadic_maps(1, 1, n, fptest::rng()());
      const fp::attention_view<const float> v(maps.data(), 1, 1, n);
      INFO(fptest::describe(c));
      REQUIRE(fp::select(v, fptest::budget_of(c), fptest::options_of(c)) == selection_of(reference(maps, c)));
    }
}

TEST_CASE("all-equal maps at N = 4096: every tie goes to the smallest index", "[reliability][extreme][n4096]") {
  const index_t N = 4096;
  const std::vector<float> maps(static_cast<std::size_t>(N * N), 1.0f / static_cast<float>(N));
  const fp::attention_view<const float> v(maps.data(), 1, 1, N);
  for (auto dir : {fp::direction::row, fp::direction::column}) {
    fp::options o;
    o.complementary_from = dir;
    // No outlier anywhere: P is the top-1, the smallest candidate; Q is empty.
    auto s = fp::select(v, fp::budget::adaptive(), o);
    REQUIRE(s.indices == std::vector<token_t>{0});
    REQUIRE(s.pivotal == std::vector<token_t>{0});
    s = fp::select(v, fp::budget::count(1), o);
    REQUIRE(s.indices == std::vector<token_t>{0});
    s = fp::select(v, fp::budget::ratio(0.5), o);  // P, then every other token by affinity, ties by index
    REQUIRE(s.indices == range(0, 2048));
    REQUIRE(s.pivotal == std::vector<token_t>{0});
    REQUIRE(s.complementary == range(1, 2048));
    o.prefix_tokens = 1;
    o.suffix_tokens = 1;
    s = fp::select(v, fp::budget::count(3), o);
    REQUIRE(s.indices == range(1, 4));
    s = fp::select(v, fp::budget::ratio(1.0), o);
    REQUIRE(s.indices == range(1, N - 1));
  }
  // Every candidate a pivot: all of them adaptive; a fixed budget by rank, ties by index.
  fp::options every;
  every.pivots_per_layer = N;
  auto s = fp::select(v, fp::budget::adaptive(), every);
  REQUIRE(s.indices == range(0, N));
  REQUIRE(s.pivotal == range(0, N));
  REQUIRE(s.complementary.empty());
  every.complementary_from = fp::direction::column;
  s = fp::select(v, fp::budget::count(100), every);
  REQUIRE(s.indices == range(0, 100));
  REQUIRE(s.pivotal == range(0, 100));
}

TEST_CASE("N = 4096, one layer, one head: the reference's answer, and a budget of one token",
          "[reliability][extreme][n4096]") {
  const index_t N = 4096;
  const auto maps = dyadic_maps(1, 1, N, 4096);
  const fp::attention_view<const float> v(maps.data(), 1, 1, N);
  fpref::config c;
  c.tokens = static_cast<int>(N);
  c.prefix = 1;
  fp::options o;
  o.prefix_tokens = 1;
  const fp::selection adaptive = fp::select(v, fp::budget::adaptive(), o);
  REQUIRE(adaptive == selection_of(reference(maps, c)));
  REQUIRE(adaptive.pivotal.size() > 100);  // the sinks
  REQUIRE(!adaptive.complementary.empty());
  require_well_formed(adaptive, 1, N, -1);

  // A fixed budget is the first m of one order: P by rank, then Q, then the rest.
  const auto np = static_cast<index_t>(adaptive.pivotal.size());
  const auto nq = static_cast<index_t>(adaptive.complementary.size());
  REQUIRE(fp::select(v, fp::budget::count(np + nq), o) == adaptive);
  fp::selection previous;
  for (index_t m : {index_t(1), np / 2, np, np + 1, np + nq + 1, N / 2, N - 1, std::numeric_limits<index_t>::max()}) {
    const auto s = fp::select(v, fp::budget::count(m), o);
    require_well_formed(s, 1, N, std::min(m, N - 1));
    REQUIRE(std::includes(s.indices.begin(), s.indices.end(), previous.indices.begin(), previous.indices.end()));
    previous = s;
  }
  // One token: the candidate with the largest contribution degree.
  const auto r = fp::contribution_degree(v, 0);
  const auto best = std::max_element(r.begin() + 1, r.end()) - r.begin();
  for (const fp::budget& b : {fp::budget::count(1), fp::budget::ratio(1e-9), fp::budget::ratio(5e-324)}) {
    const auto s = fp::select(v, b, o);
    REQUIRE(s.indices == std::vector<token_t>{static_cast<token_t>(best)});
    REQUIRE(s.pivotal == s.indices);
  }
  // A huge budget keeps every candidate.
  REQUIRE(fp::select(v, fp::budget::count(std::numeric_limits<index_t>::max()), o).indices == range(1, N));
}

TEST_CASE("N = 4096 with pivots_per_layer = 4096: every candidate a pivot, fixed budgets by rank",
          "[reliability][extreme][n4096]") {
  const index_t N = 4096;
  const auto maps = dyadic_maps(1, 1, N, 77);
  const fp::attention_view<const float> v(maps.data(), 1, 1, N);
  // r by the definition (exact: dyadic), and the candidates ordered by it.
  std::vector<double> r(static_cast<std::size_t>(N), 0.0);
  for (index_t j = 0; j < N; ++j)
    for (index_t i = 0; i < N; ++i)
      if (i != j) r[static_cast<std::size_t>(i)] += static_cast<double>(maps[static_cast<std::size_t>(j * N + i)]);
  REQUIRE(bitwise_equal(fp::contribution_degree(v, 0), r));
  std::vector<token_t> order = range(0, N);
  std::stable_sort(order.begin(), order.end(), [&r](token_t a, token_t b) {
    return r[static_cast<std::size_t>(a)] > r[static_cast<std::size_t>(b)];
  });
  for (auto dir : {fp::direction::row, fp::direction::column}) {
    fp::options o;
    o.pivots_per_layer = N;
    o.complementary_from = dir;
    const auto all = fp::select(v, fp::budget::adaptive(), o);
    REQUIRE(all.pivotal == range(0, N));
    REQUIRE(all.complementary.empty());
    const auto half = fp::select(v, fp::budget::count(N / 2), o);
    std::vector<token_t> want(order.begin(), order.begin() + N / 2);
    std::sort(want.begin(), want.end());
    REQUIRE(half.indices == want);
    REQUIRE(half.pivotal == want);
  }
}

TEST_CASE("extra memory at N = 4096 does not grow with the number of pivots", "[reliability][extreme][n4096][memory]") {
#if FREEPRUNER_TEST_COUNTS_HEAP
  // Peak bytes allocated through operator new during one select (every
  // standard container; Eigen's own heap arrays use malloc and are not
  // counted). With every candidate a pivot, the complementary step must
  // work in chunks of pivots, O(chunk x N), not hold one score row per
  // pivot (4096 x 4096 doubles = 128 MB): the bound is half the bytes of
  // the float maps read (32 MB).
  const index_t N = 4096;
  const auto maps = dyadic_maps(1, 1, N, 5);
  const fp::attention_view<const float> v(maps.data(), 1, 1, N);
  const long long bound = N * N * static_cast<long long>(sizeof(float)) / 2;
  for (index_t k : {index_t(0), index_t(64), N})
    for (auto dir : {fp::direction::row, fp::direction::column}) {
      fp::options o;
      o.pivots_per_layer = k;
      o.complementary_from = dir;
      const long long before = heap_in_use.load();
      heap_peak.store(before);
      const auto s = fp::select(v, fp::budget::ratio(0.5), o);
      const long long extra = heap_peak.load() - before;
      INFO("pivots_per_layer = " << k << (dir == fp::direction::row ? ", row" : ", column") << ": peak extra heap "
                                 << extra / 1024 << " KiB (bound " << bound / 1024 << " KiB)");
      CHECK(extra < bound);
      REQUIRE(s.size() == 2048);
    }
#else
  WARN("heap accounting is off in this build (sanitizers or not glibc); memory check skipped");
#endif
}

// ---------------------------------------------------------------------------
// Finite maps whose sums leave the double range (only double maps can).

TEST_CASE("finite double maps whose sums overflow: an error or the true answer, never an infinity's",
          "[reliability][overflow]") {
  SECTION("an affinity that overflows on the way to a representable sum") {
    // L = 2, H = 1, N = 5. Layer 0 makes 0, 1 and 4 the top 3 (pivots_per_layer
    // = 3); layer 1 holds their complementary scores. The affinities are
    // w(2) = 1e308 + 1e308 - 1.5e308 = 0.5e308 and w(3) = 0.6e308 + 0.6e308 -
    // 0.6e308 = 0.6e308: both representable, w(3) the larger, so count(4)
    // keeps 3, as it does with layer 1 scaled by 1/4. Summed in pivot order,
    // w(2) passes through 2e308 = inf.
    std::vector<double> m(2 * 5 * 5, 0.0);
    auto at = [&m](int l, int i, int j) -> double& { return m[static_cast<std::size_t>((l * 5 + i) * 5 + j)]; };
    for (int i = 0; i < 5; ++i) {
      at(0, i, 0) = at(0, i, 1) = at(0, i, 4) = 0.3;
      at(0, i, 2) = at(0, i, 3) = 0.05;
    }
    at(1, 0, 2) = 1e308, at(1, 1, 2) = 1e308, at(1, 4, 2) = -1.5e308;
    at(1, 0, 3) = 0.6e308, at(1, 1, 3) = 0.6e308, at(1, 4, 3) = -0.6e308;
    fp::options o;
    o.pivots_per_layer = 3;
    o.pivot_layers = {0};
    o.complementary_layer = 1;
    const fp::attention_view<const double> v(m.data(), 2, 1, 5);
    std::vector<double> quarter = m;
    for (std::size_t e = 25; e < 50; ++e) quarter[e] /= 4;
    const auto want = fp::select(fp::attention_view<const double>(quarter.data(), 2, 1, 5), fp::budget::count(4), o);
    REQUIRE(want.indices == std::vector<token_t>{0, 1, 3, 4});
    fp::selection got;
    const fp::status s = fp::try_select(v, fp::budget::count(4), o, got);
    INFO(s.message() << " kept " << fpfuzz::list(got.indices) << ", the true answer " << fpfuzz::list(want.indices));
    CHECK((s.code() == errc::non_finite || got == want));
  }
  SECTION("a contribution degree that overflows") {
    // Column 0 sums to -1.5e308 + 1.5e308 + 1.5e308 = 1.5e308, finite; the
    // degree r[0] = 1.5e308 - (-1.5e308) is not. select accepts the maps,
    // so the stages must accept contribution_degree's answer for them.
    const double big = 1.5e308;
    const std::vector<double> m = {-big, 0, 0, big, 0, 0, big, 0, 0};
    const fp::attention_view<const double> v(m.data(), 1, 1, 3);
    fp::selection got;
    const fp::status s = fp::try_select(v, fp::budget::adaptive(), {}, got);
    if (s.ok()) {
      std::vector<std::vector<double>> degrees;
      REQUIRE_NOTHROW(degrees.push_back(fp::contribution_degree(v, 0)));
      INFO("r = " << degrees[0][0] << " " << degrees[0][1] << " " << degrees[0][2]);
      CHECK_NOTHROW(fp::pivotal_tokens(degrees));
    } else {
      CHECK(s.code() == errc::non_finite);
    }
  }
}

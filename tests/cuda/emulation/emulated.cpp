// The CUDA kernels, run on the CPU by device.hpp (no CUDA needed), against
// the CPU backend: the conformance vectors, all-equal maps, random maps of
// every element type, layout, option and budget, and a NaN reported as
// count -1. The launch sequence is select.cuh's; the workspace starts as
// garbage, so a read of something never written shows.
//
//   freepruner_cuda_emulated [conformance_dir] [--configs N] [--big] [--seed N]

#include "device.hpp"  // first: the kernels' CUDA vocabulary

#include <freepruner/backend/cuda/api.hpp>
#include <freepruner/backend/cuda/kernels.cuh>
#include <freepruner/freepruner.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "../../conformance_cases.hpp"
#include "../../softmax_maps.hpp"
#include "../cases.hpp"

namespace {

namespace fp = freepruner;
namespace impl = freepruner::detail::cuda;
using fp::index_t;
using fp::token_t;

std::mt19937_64 rng;
int passed = 0, failed = 0;

// select.cuh's three launches on a typed view of host memory.
template <class T>
fp::status emulated_select(const fp::batched_attention_view<const T, fp::device_memory>& v, const fp::budget& b,
                           const fp::options& o, std::vector<fp::selection>& out) {
  out.clear();
  impl::layout l;
  if (auto s = impl::make_layout(v.extents(), b, o, sizeof(T), l); !s) return s;
  index_t capacity = 0;
  if (auto s = fp::cuda::capacity(b, v.extent(3), o, capacity); !s) return s;
  std::vector<unsigned char> workspace(l.bytes + 256, 0xcd);
  void* base = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(workspace.data()) + 255) / 256 * 256);
  const auto items = static_cast<std::size_t>(v.batch()), slots = items * static_cast<std::size_t>(capacity);
  std::vector<token_t> kept(slots, -7);
  std::vector<index_t> counts(items, -9);
  std::vector<std::uint8_t> pivotal(slots, 9);
  const impl::scratch w = impl::scratch_in(l, base);
  const impl::problem q = impl::problem_of(l, v, o);
  if (v.stride(4) == 1)
    emulation::launch(l.degree_blocks, [&] { impl::degree_partials<T, true>(q, l.t, w); }, rng);
  else
    emulation::launch(l.degree_blocks, [&] { impl::degree_partials<T, false>(q, l.t, w); }, rng);
  emulation::launch(l.reduce_blocks, [&] { impl::reduce_degrees<>(q, l.t, w); }, rng);
  emulation::launch(
      l.complement_blocks,
      [&] { impl::complement_pass<T>(q, l.t, w, kept.data(), counts.data(), pivotal.data(), capacity); }, rng);
  out.resize(items);
  for (std::size_t item = 0; item < items; ++item) {
    if (counts[item] < 0 || counts[item] > capacity) {
      out.clear();
      return fp::detail::fail(fp::errc::non_finite, "item ", static_cast<long long>(item), ": count ",
                              static_cast<long long>(counts[item]));
    }
    for (std::size_t k = item * static_cast<std::size_t>(capacity); k < item * static_cast<std::size_t>(capacity) + static_cast<std::size_t>(counts[item]); ++k) {
      if (pivotal[k] > 1) return fp::detail::fail(fp::errc::device_error, "an unwritten pivotal flag");
      out[item].indices.push_back(kept[k]);
      (pivotal[k] != 0 ? out[item].pivotal : out[item].complementary).push_back(kept[k]);
    }
  }
  return {};
}

std::string show(const std::vector<token_t>& v) {
  std::string s;
  for (token_t t : v) {  // two appends: GCC 12's -Wrestrict misfires on " " + std::string
    s += ' ';
    s += std::to_string(t);
  }
  return s;
}

using fptest::layout_kind;
using fptest::narrow;

// Logical maps [B][L][H][N][N] of host type E laid out (tests/cuda/cases.hpp)
// in a buffer of exactly the size the layout needs, read as device type D.
template <class D, class E>
struct placed {
  fptest::laid_out<E> laid;
  fp::batched_attention_view<const D, fp::device_memory> view;
};

template <class D, class E>
placed<D, E> place(const std::vector<E>& logical, index_t B, index_t L, index_t H, index_t N, layout_kind kind) {
  placed<D, E> p;
  p.laid = fptest::lay_out(logical, B, L, H, N, kind, E(std::numeric_limits<float>::quiet_NaN()));  // padding: never read
  p.view = fp::batched_attention_view<const D, fp::device_memory>(
      reinterpret_cast<const D*>(p.laid.memory.data()) + p.laid.offset, {B, L, H, N, N}, p.laid.strides);
  return p;
}

template <class D, class E>
void compare(const std::vector<E>& logical, index_t B, index_t L, index_t H, index_t N, const fp::budget& b,
             const fp::options& o, layout_kind kind, const std::string& what) {
  static_assert(sizeof(D) == sizeof(E), "the same bits");
  const placed<D, E> p = place<D>(logical, B, L, H, N, kind);
  std::vector<fp::selection> got;
  const fp::status s = emulated_select(p.view, b, o, got);
  bool ok = s.ok();
  if (!ok) std::printf("FAILED %s: %s\n", what.c_str(), s.message().c_str());
  for (index_t item = 0; ok && item < B; ++item) {
    const auto want = fp::select(fp::attention_view<const E>(logical.data() + item * L * H * N * N, L, H, N), b, o);
    const auto& g = got[static_cast<std::size_t>(item)];
    if (want == g) continue;
    ok = false;
    std::printf("FAILED %s, item %lld\n  cpu |%s |%s |%s\n  emu |%s |%s |%s\n", what.c_str(), static_cast<long long>(item),
                show(want.indices).c_str(), show(want.pivotal).c_str(), show(want.complementary).c_str(),
                show(g.indices).c_str(), show(g.pivotal).c_str(), show(g.complementary).c_str());
  }
  ok ? ++passed : ++failed;
}

int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

void conformance(const std::string& dir) {
  std::ifstream cases(dir + "/cases.txt");
  if (!cases) {
    std::printf("FAILED conformance: cannot read %s/cases.txt\n", dir.c_str());
    ++failed;
    return;
  }
  std::string line, batched_file;
  while (std::getline(cases, line)) {
    fptest::conformance_case c;
    if (!fptest::parse_case(line, c)) continue;
    std::vector<float> maps;
    if (!fptest::read_case_maps(dir, c, maps)) {
      std::printf("FAILED conformance %s: %s has the wrong size\n", c.name.c_str(), c.file.c_str());
      ++failed;
      continue;
    }
    const placed<float, float> one = place<float>(maps, 1, c.L, c.H, c.N, layout_kind::contiguous);
    std::vector<fp::selection> got;
    const fp::status s = emulated_select(one.view, c.budget(), c.options(), got);
    const bool ok = s.ok() && got.front() == c.expected();
    if (!ok) std::printf("FAILED conformance %s %s\n", c.name.c_str(), s.message().c_str());
    ok ? ++passed : ++failed;
    // A batch of two once per maps file: emulation is slow (under TSan most
    // of all), and the random configurations cover batches too.
    if (c.file == batched_file) continue;
    batched_file = c.file;
    std::vector<float> twice(maps);
    twice.insert(twice.end(), maps.begin(), maps.end());
    compare<float>(twice, 2, c.L, c.H, c.N, c.budget(), c.options(), layout_kind::padded_rows, "conformance x2 " + c.name);
  }
}

template <class D, class E>
void random_config(int c) {
  static const int sizes[] = {1, 2, 3, 4, 5, 8, 17, 26, 40, 65, 130};
  const int L = uniform_int(1, 3), H = uniform_int(1, 5), N = sizes[uniform_int(0, 10)], B = uniform_int(1, 3);
  fp::budget b = fp::budget::adaptive();
  const fp::options o = fptest::random_options(rng, L, N, b);
  std::vector<double> maps;
  for (int item = 0; item < B; ++item) {
    const auto one = fptest::softmax_maps(rng, L, H, N, uniform_int(0, 9) == 0);
    maps.insert(maps.end(), one.begin(), one.end());
  }
  const auto kind = static_cast<layout_kind>(uniform_int(0, fptest::layout_count - 1));
  compare<D>(narrow<E>(maps), B, L, H, N, b, o, kind,
             "random #" + std::to_string(c) + " (" + std::to_string(sizeof(E)) + "-byte elements, " +
                 fptest::name_of(kind) + ", " + fptest::describe(B, L, H, N, b, o) + ")");
}

void big() {  // CLIP-336 shapes, every candidate a pivot, rows of several tiles, vectors beyond shared memory
  fp::options cls;
  cls.prefix_tokens = 1;
  const auto clip = narrow<float>(fptest::softmax_maps(rng, 2, 16, 577));
  compare<float>(clip, 1, 2, 16, 577, fp::budget::ratio(0.5), cls, layout_kind::contiguous, "CLIP-336 ratio(0.5)");
  compare<float>(clip, 1, 2, 16, 577, fp::budget::adaptive(), cls, layout_kind::padded_rows, "CLIP-336 adaptive");
  fp::options topk = cls;
  topk.pivots_per_layer = 8;
  topk.complementary_from = fp::direction::column;
  compare<float>(clip, 1, 2, 16, 577, fp::budget::ratio(0.3), topk, layout_kind::keys_major, "CLIP-336 top-8, column");
  fp::options every = cls;
  every.pivots_per_layer = 577;
  compare<float>(clip, 1, 2, 16, 577, fp::budget::count(100), every, layout_kind::contiguous, "CLIP-336 all pivots");
  const auto wide = narrow<Eigen::half>(fptest::softmax_maps(rng, 4, 2, 2100));
  fp::options suffix;
  suffix.suffix_tokens = 1;
  compare<__half>(wide, 2, 2, 2, 2100, fp::budget::ratio(0.5), suffix, layout_kind::padded_rows, "fp16 rows of 3 tiles");
  const auto huge = narrow<float>(fptest::softmax_maps(rng, 2, 1, impl::cached_tokens + 100));
  compare<float>(huge, 1, 2, 1, impl::cached_tokens + 100, fp::budget::ratio(0.5), cls, layout_kind::contiguous,
                 "more tokens than shared memory holds");
}

void non_finite() {  // a NaN read: count -1 for that item
  auto maps = narrow<float>(fptest::softmax_maps(rng, 3 * 2, 2, 20));
  maps[static_cast<std::size_t>(1 * 2 * 2 * 400 + 57)] = std::numeric_limits<float>::quiet_NaN();
  const placed<float, float> p = place<float>(maps, 3, 2, 2, 20, layout_kind::contiguous);
  std::vector<fp::selection> got;
  const fp::status s = emulated_select(p.view, fp::budget::ratio(0.5), fp::options{}, got);
  const bool ok = s.code() == fp::errc::non_finite && s.message() == "freepruner: item 1: count -1";
  if (!ok) std::printf("FAILED NaN in item 1: %s\n", s.message().c_str());
  ok ? ++passed : ++failed;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "tests/data/conformance";
  int configs = 30;
  bool large = false;
  auto seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--configs" && a + 1 < argc)
      configs = std::atoi(argv[++a]);
    else if (arg == "--seed" && a + 1 < argc)
      seed = std::stoull(argv[++a]);
    else if (arg == "--big")
      large = true;
    else
      dir = arg;
  }
  rng.seed(seed);
  std::printf("the CUDA kernels, emulated on the CPU; seed %llu (replay: --seed %llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  conformance(dir);
  for (const fp::budget b : {fp::budget::adaptive(), fp::budget::count(5), fp::budget::ratio(1.0)}) {
    fp::options o;
    o.prefix_tokens = 1;
    compare<float>(std::vector<float>(2 * 3 * 33 * 33, 1.0f / 33), 1, 2, 3, 33, b, o, layout_kind::contiguous,
                   "all-equal maps");
  }
  for (int c = 0; c < configs; ++c) {
    switch (c % 3) {
      case 0: random_config<float, float>(c); break;
      case 1: random_config<__half, Eigen::half>(c); break;
      default: random_config<__nv_bfloat16, Eigen::bfloat16>(c); break;
    }
  }
  non_finite();
  if (large) big();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

// The CUDA backend against the CPU backend: the SPEC conformance vectors,
// random maps of every element type, layout, option and budget, CLIP-sized
// batches, every bad input, the low-level API (workspace query, streams,
// outputs, the type-erased calls) and determinism. A plain program: it
// prints one closing line "N passed, M failed", and exits 77 (CTest:
// skipped) on a machine without a CUDA device.
//
//   freepruner_cuda_tests [conformance_dir] [--seed N] [--quick]
//
// --quick: fewer and smaller cases, for the runs under compute-sanitizer.

#include <freepruner/cuda.cuh>
#include <cuda/std/mdspan>
#include <freepruner/adapters/mdspan.hpp>

// The CPU backend, the reference here. Its headers are host code: nvcc's
// front end reports Eigen's defaulted host-device members (#20012) and a
// variable the CPUID probe sets for the asm's sake (#550), and the GCC
// target pragmas of the Q/K kernels (#1675).
#pragma nv_diagnostic push
#pragma nv_diag_suppress 20012
#pragma nv_diag_suppress 550
#pragma nv_diag_suppress 1675
#include <freepruner/freepruner.hpp>
#pragma nv_diagnostic pop

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../conformance_cases.hpp"
#include "cases.hpp"
#include "cuda_test.hpp"

namespace {

namespace fp = freepruner;
using fp::index_t;
using fp::token_t;

fpcuda::checker check;
bool quick = false;

std::string show(const std::vector<token_t>& v) {
  std::string s;
  for (token_t t : v) {  // two appends: GCC 12's -Wrestrict misfires on " " + std::string
    s += ' ';
    s += std::to_string(t);
  }
  return s;
}
std::string show(const fp::selection& s) {
  return "|" + show(s.indices) + " |" + show(s.pivotal) + " |" + show(s.complementary);
}
bool same(const fp::selection& want, const fp::selection& got, const std::string& what) {
  return check.expect(want == got, what + "\n    cpu " + show(want) + "\n    gpu " + show(got));
}
bool same_status(const fp::status& want, const fp::status& got, const std::string& what) {
  return check.expect(want.code() == got.code() && want.message() == got.message(),
                      what + "\n    cpu [" + fp::to_string(want.code()) + "] " + want.message() + "\n    gpu [" +
                          fp::to_string(got.code()) + "] " + got.message());
}

// Element types: the CPU reads E, the device D, with the same bits.
struct f32 {
  using host = float;
  using device = float;
  static constexpr const char* name = "float";
};
struct f16 {
  using host = Eigen::half;
  using device = __half;
  static constexpr const char* name = "__half";
};
struct bf16 {
  using host = Eigen::bfloat16;
  using device = __nv_bfloat16;
  static constexpr const char* name = "__nv_bfloat16";
};

using fptest::layout_kind;
using fptest::name_of;
using fptest::narrow;

// Logical maps [B][L][H][N][N] laid out in device memory (tests/cuda/cases.hpp).
template <class D>
struct placed {
  std::unique_ptr<fpcuda::device_array<D>> memory;
  fp::batched_attention_view<const D, fp::device_memory> view;
};

template <class D, class E>
placed<D> place(const std::vector<E>& logical, index_t B, index_t L, index_t H, index_t N, layout_kind kind) {
  const fptest::laid_out<E> laid = fptest::lay_out(logical, B, L, H, N, kind, E(0.0f));
  placed<D> out;
  out.memory = std::make_unique<fpcuda::device_array<D>>(fpcuda::same_bits<D>(laid.memory));
  out.view = fp::batched_attention_view<const D, fp::device_memory>(out.memory->get() + laid.offset, {B, L, H, N, N},
                                                                    laid.strides);
  return out;
}

// Device (batched view, one launch) against the CPU backend, item by item.
template <class Ty>
bool compare(const std::vector<typename Ty::host>& logical, index_t B, index_t L, index_t H, index_t N,
             const fp::budget& b, const fp::options& o, layout_kind kind, const std::string& label) {
  using E = typename Ty::host;
  using D = typename Ty::device;
  const placed<D> maps = place<D>(logical, B, L, H, N, kind);
  const std::string what = label + " " + Ty::name + " " + name_of(kind) + " " + fptest::describe(B, L, H, N, b, o);
  std::vector<fp::selection> gpu;
  const fp::status s = fp::try_select(maps.view, b, o, gpu);
  if (!check.expect(s.ok() && gpu.size() == static_cast<std::size_t>(B), what + ": " + s.message())) return false;
  bool ok = true;
  for (index_t item = 0; item < B; ++item) {
    const fp::attention_view<const E> v(logical.data() + item * L * H * N * N, L, H, N);
    ok &= same(fp::select(v, b, o), gpu[static_cast<std::size_t>(item)], what + " item " + std::to_string(item));
  }
  return ok;
}

// ---------------------------------------------------------------------------

void conformance(const std::string& dir) {
  std::ifstream cases(dir + "/cases.txt");
  if (!check.expect(static_cast<bool>(cases), "conformance vectors: cannot read " + dir + "/cases.txt")) return;
  std::string line;
  while (std::getline(cases, line)) {
    fptest::conformance_case c;
    if (!fptest::parse_case(line, c)) continue;
    std::vector<float> maps;
    if (!check.expect(fptest::read_case_maps(dir, c, maps), c.name + ": " + c.file + " has the wrong size")) continue;
    const fp::options o = c.options();
    const fp::budget b = c.budget();
    const fp::selection want = c.expected();
    // One item through the single view; two items in three layouts, batched.
    const placed<float> one = place<float>(maps, 1, c.L, c.H, c.N, layout_kind::contiguous);
    const fp::attention_view<const float, fp::device_memory> single(one.view.data(), c.L, c.H, c.N);
    fp::selection got;
    const fp::status s = fp::try_select(single, b, o, got);
    check.expect(s.ok(), c.name + ": " + s.message());
    same(want, got, "conformance " + c.name + " (device view)");
    std::vector<float> twice(maps);
    twice.insert(twice.end(), maps.begin(), maps.end());
    for (const layout_kind kind : {layout_kind::contiguous, layout_kind::keys_major, layout_kind::padded_rows}) {
      const placed<float> two = place<float>(twice, 2, c.L, c.H, c.N, kind);
      const auto batch = fp::select(two.view, b, o);
      for (std::size_t item = 0; item < 2; ++item)
        same(want, batch.at(item), "conformance " + c.name + " (batched, " + name_of(kind) + ", item " + std::to_string(item) + ")");
    }
  }
}

// ---------------------------------------------------------------------------

template <class Ty>
void random_configs(int count) {
  static const int sizes[] = {1, 2, 3, 4, 5, 8, 17, 26, 40, 65, 130};
  for (int c = 0; c < count; ++c) {
    const int L = fpcuda::uniform_int(1, 3), H = fpcuda::uniform_int(1, 5), N = sizes[fpcuda::uniform_int(0, 10)];
    const int B = fpcuda::uniform_int(1, 3);
    fp::budget b = fp::budget::adaptive();
    const fp::options o = fptest::random_options(fpcuda::rng(), L, N, b);
    std::vector<double> maps;
    for (int item = 0; item < B; ++item) {
      const auto one = fpcuda::random_maps(L, H, N, fpcuda::uniform_int(0, 9) == 0);
      maps.insert(maps.end(), one.begin(), one.end());
    }
    const auto kind = static_cast<layout_kind>(fpcuda::uniform_int(0, fptest::layout_count - 1));
    compare<Ty>(narrow<typename Ty::host>(maps), B, L, H, N, b, o, kind, "random #" + std::to_string(c));
  }
}

template <class Ty>
void clip_sized() {
  const int B = quick ? 1 : 3, L = 2, H = 16, N = 577;
  std::vector<double> maps;
  for (int item = 0; item < B; ++item) {
    const auto one = fpcuda::random_maps(L, H, N);
    maps.insert(maps.end(), one.begin(), one.end());
  }
  const auto x = narrow<typename Ty::host>(maps);
  fp::options cls;
  cls.prefix_tokens = 1;
  compare<Ty>(x, B, L, H, N, fp::budget::adaptive(), cls, layout_kind::contiguous, "CLIP-336");
  compare<Ty>(x, B, L, H, N, fp::budget::ratio(0.5), cls, layout_kind::padded_rows, "CLIP-336");
  if (quick) return;  // under compute-sanitizer: the two above
  compare<Ty>(x, B, L, H, N, fp::budget::count(64), cls, layout_kind::layers_outer, "CLIP-336");
  fp::options topk = cls;
  topk.pivots_per_layer = 8;
  topk.complementary_from = fp::direction::column;
  compare<Ty>(x, B, L, H, N, fp::budget::ratio(0.3), topk, layout_kind::contiguous, "CLIP-336");
  fp::options first = cls;
  first.pivot_layers = {0};
  first.complementary_layer = 0;
  compare<Ty>(x, B, L, H, N, fp::budget::count(288), first, layout_kind::keys_major, "CLIP-336");
  fp::options every = cls;  // every candidate a pivot, fewer kept: the rank order decides
  every.pivots_per_layer = N;
  compare<Ty>(x, B, L, H, N, fp::budget::count(100), every, layout_kind::contiguous, "CLIP-336");
}

template <class Ty>
void wide_rows() {  // several column tiles per row
  const int B = quick ? 1 : 2, L = 2, H = quick ? 1 : 2, N = quick ? 1100 : 1500;
  std::vector<double> maps;
  for (int item = 0; item < B; ++item) {
    const auto one = fpcuda::random_maps(L, H, N);
    maps.insert(maps.end(), one.begin(), one.end());
  }
  const auto x = narrow<typename Ty::host>(maps);
  fp::options o;
  o.suffix_tokens = 1;
  compare<Ty>(x, B, L, H, N, fp::budget::ratio(0.5), o, layout_kind::padded_rows, "wide rows");
  compare<Ty>(x, B, L, H, N, fp::budget::adaptive(), o, layout_kind::keys_major, "wide rows");
}

void flat_maps() {  // all equal: no outlier anywhere, the top-1 fallback, ties by index
  const int L = 2, H = 3, N = 33;
  const std::vector<float> maps(static_cast<std::size_t>(L * H * N * N), 1.0f / N);
  fp::options o;
  o.prefix_tokens = 1;
  for (const fp::budget b : {fp::budget::adaptive(), fp::budget::count(5), fp::budget::ratio(1.0)})
    compare<f32>(maps, 1, L, H, N, b, o, layout_kind::contiguous, "all-equal maps");
}

// An mdspan over device memory, marked by its accessor (adapters/mdspan.hpp).
void device_mdspan() {
  const index_t L = 2, H = 3, N = 33;
  const std::vector<float> host = narrow<float>(fpcuda::random_maps(2, 3, 33));
  fp::options o;
  o.prefix_tokens = 1;
  const fp::budget b = fp::budget::ratio(0.5);
  const fp::selection want = fp::select(fp::attention_view<const float>(host.data(), L, H, N), b, o);
  using device_floats = fp::device_accessor<cuda::std::default_accessor<const float>>;
  using ext = cuda::std::dextents<index_t, 4>;
  const fpcuda::device_array<float> device(host);
  const cuda::std::mdspan<const float, ext, cuda::std::layout_right, device_floats> right(device.get(), L, H, N, N);
  same(want, fp::select(right, b, o), "device mdspan, layout_right");
  // layout_stride takes positive strides only: every layout but reversed heads.
  for (const layout_kind kind : {layout_kind::contiguous, layout_kind::keys_major, layout_kind::padded_rows,
                                 layout_kind::layers_outer}) {
    const placed<float> one = place<float>(host, 1, L, H, N, kind);
    const auto& st = one.view.strides();
    const cuda::std::array<index_t, 4> strides{st[1], st[2], st[3], st[4]};
    const cuda::std::layout_stride::mapping<ext> mapping(ext(L, H, N, N), strides);
    const cuda::std::mdspan<const float, ext, cuda::std::layout_stride, device_floats> strided(one.view.data(),
                                                                                               mapping);
    same(want, fp::select(strided, b, o), std::string("device mdspan, layout_stride, ") + name_of(kind));
  }
  // Host memory behind a device accessor: a status, not a read.
  const cuda::std::mdspan<const float, ext, cuda::std::layout_right, device_floats> wrong(host.data(), L, H, N, N);
  fp::selection out;
  const fp::status s = fp::try_select(wrong, b, o, out);
  check.expect(s.code() == fp::errc::wrong_memory_space, "host maps behind device_accessor: " + s.message());
}

// ---------------------------------------------------------------------------
// Bad input: the same status as the CPU, plus what only a device has.

template <class D>
fp::status device_status(const fp::attention_view<const D, fp::device_memory>& v, const fp::budget& b,
                         const fp::options& o) {
  fp::selection out;
  return fp::try_select(v, b, o, out);
}

void bad_input() {
  const index_t L = 2, H = 2, N = 9;
  const auto logical = fpcuda::random_maps(static_cast<int>(L), static_cast<int>(H), static_cast<int>(N));
  std::vector<float> host = narrow<float>(logical);
  const fpcuda::device_array<float> device(host);
  const fp::attention_view<const float> cpu(host.data(), L, H, N);
  const fp::attention_view<const float, fp::device_memory> gpu(device.get(), L, H, N);
  auto both = [&](const fp::budget& b, const fp::options& o, const std::string& what) {
    fp::selection out;
    const fp::status want = fp::try_select(cpu, b, o, out);
    check.expect(!want.ok(), what + ": the CPU accepts it");
    same_status(want, device_status(gpu, b, o), what);
  };
  fp::options o;
  auto with = [&](auto change) {
    fp::options x;
    change(x);
    return x;
  };
  both(fp::budget::count(0), o, "count(0)");
  both(fp::budget::ratio(0.0), o, "ratio(0)");
  both(fp::budget::ratio(1.5), o, "ratio(1.5)");
  both(fp::budget::ratio(std::numeric_limits<double>::quiet_NaN()), o, "ratio(nan)");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.prefix_tokens = 5; x.suffix_tokens = 4; }), "a + b = N");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.prefix_tokens = -1; }), "negative prefix");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.complementary_layer = 2; }), "complementary layer L");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.pivot_layers = {0, -3}; }), "pivot layer -3");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.pivot_layers = {1, 1}; }), "pivot layer twice");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.fence_factor = -1; }), "negative fence");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.fence_factor = std::numeric_limits<double>::infinity(); }),
       "infinite fence");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.pivots_per_layer = -2; }), "negative k");
  both(fp::budget::adaptive(), with([](fp::options& x) { x.complementary_from = static_cast<fp::direction>(7); }),
       "bad direction");

  // Shapes (checked before the pointer is).
  for (const std::array<index_t, 4>& e : {std::array<index_t, 4>{0, 1, 3, 3}, std::array<index_t, 4>{1, 0, 3, 3},
                                          std::array<index_t, 4>{1, 1, 0, 0}, std::array<index_t, 4>{1, 1, 3, 4}}) {
    const std::array<index_t, 4> st{e[1] * e[2] * e[3], e[2] * e[3], e[3], 1};
    fp::selection out;
    same_status(fp::try_select(fp::attention_view<const float>(nullptr, e, st), fp::budget::adaptive(), o, out),
                device_status(fp::attention_view<const float, fp::device_memory>(nullptr, e, st), fp::budget::adaptive(), o),
                "shape " + std::to_string(e[0]) + "x" + std::to_string(e[1]) + "x" + std::to_string(e[2]) + "x" +
                    std::to_string(e[3]));
  }
  {
    fp::selection out;
    same_status(fp::try_select(fp::attention_view<const float>(nullptr, L, H, N), fp::budget::adaptive(), o, out),
                device_status(fp::attention_view<const float, fp::device_memory>(nullptr, L, H, N), fp::budget::adaptive(), o),
                "null data");
  }

  // Host memory where device memory is expected: pageable and pinned.
  {
    const fp::status s = device_status(fp::attention_view<const float, fp::device_memory>(host.data(), L, H, N),
                                       fp::budget::adaptive(), o);
    check.expect(s.code() == fp::errc::wrong_memory_space && s.message().find("host memory") != std::string::npos,
                 "pageable host maps: " + s.message());
    float* pinned = nullptr;
    if (cudaMallocHost(reinterpret_cast<void**>(&pinned), host.size() * sizeof(float)) == cudaSuccess) {
      const fp::status p = device_status(fp::attention_view<const float, fp::device_memory>(pinned, L, H, N),
                                         fp::budget::adaptive(), o);
      check.expect(p.code() == fp::errc::wrong_memory_space && p.message().find("pinned") != std::string::npos,
                   "pinned host maps: " + p.message());
      (void)cudaFreeHost(pinned);
    }
  }

  // NaN and infinity: where the CPU finds them, in the same words.
  auto poisoned = [&](index_t l, index_t h, index_t i, index_t j, float x, const fp::options& opt, const std::string& what) {
    std::vector<float> bad = host;
    bad[static_cast<std::size_t>(((l * H + h) * N + i) * N + j)] = x;
    const fpcuda::device_array<float> d(bad);
    fp::selection out;
    const fp::status want = fp::try_select(fp::attention_view<const float>(bad.data(), L, H, N), fp::budget::ratio(0.5), opt, out);
    const fp::status got =
        device_status(fp::attention_view<const float, fp::device_memory>(d.get(), L, H, N), fp::budget::ratio(0.5), opt);
    if (want.ok()) {  // not read: no error on either side, the same answer
      check.expect(got.ok(), what + ": the CPU accepts it, the GPU says " + got.message());
      return;
    }
    same_status(want, got, what);
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  poisoned(1, 1, 4, 7, nan, o, "NaN in a pivot layer");
  poisoned(0, 0, 3, 3, -inf, o, "-inf on a diagonal");
  poisoned(0, 1, 0, 8, inf, with([](fp::options& x) { x.prefix_tokens = 1; }), "inf in the CLS row");
  const fp::options first_only = with([](fp::options& x) { x.pivot_layers = {0}; x.complementary_layer = 0; });
  poisoned(1, 0, 2, 2, nan, first_only, "NaN in a layer not read");
  {  // in a pivot row (or column) of the complementary layer, which is not a pivot layer
    fp::options comp = with([](fp::options& x) { x.pivot_layers = {0}; });
    const fp::selection clean = fp::select(cpu, fp::budget::ratio(0.5), comp);
    const index_t p = clean.pivotal.front();
    poisoned(1, 1, p, (p + 3) % N, inf, comp, "inf in a pivot row");
    poisoned(1, 1, (p + 3) % N, p, inf, comp, "inf outside the pivot rows");
    comp.complementary_from = fp::direction::column;
    poisoned(1, 0, (p + 2) % N, p, nan, comp, "NaN in a pivot column");
  }
  {  // batched: the item is named
    std::vector<float> two = host;
    two.insert(two.end(), host.begin(), host.end());
    two[host.size() + 5] = nan;
    const fpcuda::device_array<float> d(two);
    std::vector<fp::selection> out;
    const fp::status want = fp::try_select(fp::batched_attention_view<const float>(two.data(), 2, L, H, N), fp::budget::adaptive(), o, out);
    const fp::status got = fp::try_select(fp::batched_attention_view<const float, fp::device_memory>(d.get(), 2, L, H, N),
                                          fp::budget::adaptive(), o, out);
    same_status(want, got, "NaN in batch item 1");
    check.expect(out.empty(), "a failed batch returns no selection");
  }
  {  // finite values whose sums overflow fp32: accepted, as on the CPU
    std::vector<float> big = host;
    for (std::size_t k = 0; k < big.size(); k += 3) big[k] = 3e38f;
    compare<f32>(big, 1, L, H, N, fp::budget::ratio(0.5), o, layout_kind::contiguous, "sums beyond fp32");
  }
  {  // the device's own limit
    fp::options many;
    many.pivot_layers.assign(300, 0);
    for (index_t l = 0; l < 300; ++l) many.pivot_layers[static_cast<std::size_t>(l)] = l;
    const fp::attention_view<const float, fp::device_memory> deep(device.get(), {300, 1, 2, 2}, {4, 4, 2, 1});
    const fp::status s = device_status(deep, fp::budget::adaptive(), many);
    check.expect(s.code() == fp::errc::invalid_layer && s.message().find("at most 256") != std::string::npos,
                 "300 pivot layers: " + s.message());
  }
  {  // empty batch: valid, nothing to do
    std::vector<fp::selection> out(3);
    const fp::status s = fp::try_select(fp::batched_attention_view<const float, fp::device_memory>(device.get(), 0, L, H, N),
                                        fp::budget::adaptive(), o, out);
    check.expect(s.ok() && out.empty(), "empty batch: " + s.message());
  }
}

// ---------------------------------------------------------------------------
// The low-level call: workspace query, a stream, the outputs, the
// type-erased API, errors as statuses, determinism.

void low_level() {
  const index_t B = 3, L = 2, H = 4, N = 40;
  const auto logical = fpcuda::random_maps(static_cast<int>(B * L), static_cast<int>(H), static_cast<int>(N));
  const std::vector<float> host = narrow<float>(logical);
  const fpcuda::device_array<float> maps(host);
  const fp::batched_attention_view<const float, fp::device_memory> view(maps.get(), B, L, H, N);
  fp::options o;
  o.prefix_tokens = 1;
  const fp::budget b = fp::budget::ratio(0.5);
  index_t capacity = 0;
  check.expect(fp::cuda::capacity(b, N, o, capacity).ok() && capacity == 20, "capacity of ratio(0.5) with M = 39");
  index_t adaptive_capacity = 0;
  check.expect(fp::cuda::capacity(fp::budget::adaptive(), N, o, adaptive_capacity).ok() && adaptive_capacity == N - 1,
               "adaptive capacity is M");

  std::size_t bytes = 0, erased_bytes = 0;
  check.expect(fp::cuda::select<float>(nullptr, bytes, view, b, o, nullptr, nullptr).ok() && bytes > 0, "size query");
  const auto erased = fp::cuda::device_maps::contiguous(maps.get(), fp::cuda::dtype::f32, B, L, H, N);
  check.expect(fp::cuda::select(nullptr, erased_bytes, erased, b, o, nullptr, nullptr).ok() && erased_bytes == bytes,
               "the type-erased size query agrees");

  fpcuda::device_array<unsigned char> workspace(bytes);
  fpcuda::device_array<token_t> kept(static_cast<std::size_t>(B * capacity));
  fpcuda::device_array<index_t> counts(static_cast<std::size_t>(B));
  fpcuda::device_array<std::uint8_t> pivotal(static_cast<std::size_t>(B * capacity));
  (void)cudaMemset(counts.get(), 0x7f, static_cast<std::size_t>(B) * sizeof(index_t));
  std::size_t query = 0;
  (void)fp::cuda::select<float>(nullptr, query, view, b, o, kept.get(), counts.get());
  (void)cudaDeviceSynchronize();
  check.expect(counts.to_host()[0] == 0x7f7f7f7f7f7f7f7fLL, "a size query writes nothing");

  cudaStream_t stream = nullptr;
  (void)cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  fp::status s = fp::cuda::select<float>(workspace.get(), bytes, view, b, o, kept.get(), counts.get(), stream, pivotal.get());
  check.expect(s.ok(), "low-level select: " + s.message());
  (void)cudaStreamSynchronize(stream);
  const auto first_kept = kept.to_host();
  const auto first_counts = counts.to_host();
  const auto first_pivotal = pivotal.to_host();
  for (index_t item = 0; item < B; ++item) {
    const fp::selection want = fp::select(fp::attention_view<const float>(host.data() + item * L * H * N * N, L, H, N), b, o);
    fp::selection got;
    check.expect(first_counts[static_cast<std::size_t>(item)] == capacity, "count of a fixed budget");
    for (index_t k = 0; k < first_counts[static_cast<std::size_t>(item)] && k < capacity; ++k) {
      const auto at = static_cast<std::size_t>(item * capacity + k);
      got.indices.push_back(first_kept[at]);
      (first_pivotal[at] != 0 ? got.pivotal : got.complementary).push_back(first_kept[at]);
    }
    same(want, got, "low-level item " + std::to_string(item));
  }

  // Determinism: the same bits on every run, through the type-erased call too.
  for (int run = 0; run < (quick ? 3 : 20); ++run) {
    (void)cudaMemsetAsync(kept.get(), 0, static_cast<std::size_t>(B * capacity) * sizeof(token_t), stream);
    s = fp::cuda::select(workspace.get(), bytes, erased, b, o, kept.get(), counts.get(), stream, pivotal.get());
    (void)cudaStreamSynchronize(stream);
    if (!check.expect(s.ok() && kept.to_host() == first_kept && counts.to_host() == first_counts &&
                          pivotal.to_host() == first_pivotal,
                      "run " + std::to_string(run) + " repeats the first bit for bit"))
      break;
  }

  // Errors as statuses.
  std::size_t small = bytes - 1;
  s = fp::cuda::select<float>(workspace.get(), small, view, b, o, kept.get(), counts.get(), stream);
  check.expect(s.code() == fp::errc::invalid_workspace, "a short workspace: " + s.message());
  std::vector<token_t> host_kept(static_cast<std::size_t>(B * capacity));
  s = fp::cuda::select<float>(workspace.get(), bytes, view, b, o, host_kept.data(), counts.get(), stream);
  check.expect(s.code() == fp::errc::wrong_memory_space && s.message().find("d_kept") != std::string::npos,
               "host d_kept: " + s.message());
  s = fp::cuda::select<float>(workspace.get(), bytes, view, b, o, kept.get(), nullptr, stream);
  check.expect(s.code() == fp::errc::null_data && s.message().find("d_counts") != std::string::npos,
               "null d_counts: " + s.message());
  std::vector<unsigned char> host_workspace(bytes);
  s = fp::cuda::select<float>(host_workspace.data(), bytes, view, b, o, kept.get(), counts.get(), stream);
  check.expect(s.code() == fp::errc::wrong_memory_space, "host workspace: " + s.message());
  auto bad_type = erased;
  bad_type.type = static_cast<fp::cuda::dtype>(9);
  s = fp::cuda::select(workspace.get(), bytes, bad_type, b, o, kept.get(), counts.get(), stream);
  check.expect(s.code() == fp::errc::invalid_option && s.message().find("maps.type = 9") != std::string::npos,
               "unknown dtype: " + s.message());

  // A NaN shows as count -1; diagnose names it; the other items are answered.
  std::vector<float> bad = host;
  bad[static_cast<std::size_t>(1 * L * H * N * N + ((1 * H + 2) * N + 5) * N + 6)] = std::numeric_limits<float>::quiet_NaN();
  const fpcuda::device_array<float> bad_maps(bad);
  const fp::batched_attention_view<const float, fp::device_memory> bad_view(bad_maps.get(), B, L, H, N);
  s = fp::cuda::select<float>(workspace.get(), bytes, bad_view, b, o, kept.get(), counts.get(), stream);
  (void)cudaStreamSynchronize(stream);
  const auto bad_counts = counts.to_host();
  check.expect(s.ok() && bad_counts[0] == capacity && bad_counts[1] == -1 && bad_counts[2] == capacity,
               "count -1 for the item with a NaN only");
  const fp::status named = fp::cuda::diagnose<float>(workspace.get(), bytes, bad_view, b, o, 1, stream);
  check.expect(named.code() == fp::errc::non_finite &&
                   named.message() == "freepruner: attention maps[layer 1][head 2][query 5][key 6] = nan (every value read must be finite)",
               "diagnose: " + named.message());
  check.expect(fp::cuda::diagnose<float>(workspace.get(), bytes, bad_view, b, o, 0, stream).ok(),
               "diagnose of a clean item");
  (void)cudaStreamDestroy(stream);
}

}  // namespace

int main(int argc, char** argv) {
  fpcuda::skip_without_device("freepruner CUDA tests");
  std::string dir = "tests/data/conformance";
  auto seed = static_cast<std::uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--quick")
      quick = true;
    else if (arg == "--seed" && a + 1 < argc)
      seed = std::stoull(argv[++a]);
    else
      dir = arg;
  }
  fpcuda::rng().seed(seed);
  cudaDeviceProp prop{};
  int device = 0;
  (void)cudaGetDevice(&device);
  (void)cudaGetDeviceProperties(&prop, device);
  std::printf("freepruner CUDA tests on %s; seed %llu (replay: --seed %llu)\n", prop.name,
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));

  conformance(dir);
  const int configs = quick ? 40 : 300;
  random_configs<f32>(configs);
  random_configs<f16>(configs);
  random_configs<bf16>(configs);
  clip_sized<f32>();
  clip_sized<f16>();
  clip_sized<bf16>();
  wide_rows<f32>();
  wide_rows<f16>();
  flat_maps();
  device_mdspan();
  bad_input();
  low_level();

  std::printf("%d passed, %d failed\n", check.passed, check.failed);
  return check.failed == 0 ? 0 : 1;
}

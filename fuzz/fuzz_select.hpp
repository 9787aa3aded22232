#pragma once
// The fuzz oracle for freepruner::select, shared by the libFuzzer target
// (fuzz_select.cpp) and the seed-corpus replay in tests/test_reliability.cpp.
//
// One input (bytes) becomes a shape, a layout, an element type, options, a
// budget and map values (fuzz/README.md gives the byte format). `run_one`
// then calls the library and checks, for every call:
//
// - it returns a well-formed selection (ascending, unique, in the candidate
//   range, pivotal and complementary disjoint and covering the result, the
//   exact size for count/ratio budgets, never empty) or throws
//   freepruner::error (try_select: returns a status), and nothing else;
// - it throws exactly when this file's own validation says the input is bad
//   (bad shape, options, budget, null data, or a NaN/infinity in the maps
//   that are read: every pivot layer, plus the complementary layer's pivot
//   rows, or with `column` its pivot columns over the candidate rows), with
//   one of the expected codes;
// - when the values read are dyadic and their sums are exact in double
//   (and the head count is a power of two), so that no decision can rest on
//   rounding, its answer equals tests/reference.hpp's, and so do the same
//   maps as contiguous doubles and the four stages composed by hand;
// - on any valid input: select and try_select agree, a second call gives
//   the same answer, every SIMD level gives it too, layers scaled by powers
//   of two give it too (away from subnormals and overflow), a fixed budget
//   is a prefix of one order (nested budgets, count(|P|+|Q|) == adaptive),
//   kept_tokens predicts the size, and a batch gives each item's own answer.
//
// A failed check throws fpfuzz::check_failed with a description of the case.

#include <freepruner/freepruner.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "../tests/reference.hpp"

// The CPU backend picks scalar, SSE2 or AVX2 column sums at run time; an
// engine must get the same answer on every machine, so the oracle compares
// the levels when the backend exposes its cap.
#include <freepruner/backend/cpu/simd.hpp>

namespace fpfuzz {

namespace fp = freepruner;
using fp::errc;
using fp::index_t;
using fp::token_t;

/// A violated property of the library (not a bad input).
struct check_failed : std::logic_error {
  using std::logic_error::logic_error;
};

/// What the inputs exercised (for tuning the generators and the seed corpus).
struct statistics {
  long inputs = 0, rejected = 0, non_finite = 0, accepted = 0, exact = 0, batched = 0;
};
inline statistics& stats() {
  static statistics s;
  return s;
}

// Limits that keep one execution short, so the fuzzer tries many inputs in
// its time budget (the oracle runs the scalar reference and several routes).
constexpr index_t max_layers = 4, max_heads = 4, max_tokens = 64, max_batch = 3;

// ---------------------------------------------------------------------------
// Bytes -> numbers. Reads past the end give zeros, so every input decodes.

class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16); }
  std::size_t left() const { return pos_ < size_ ? size_ - pos_ : 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// splitmix64: bulk map values from a seed in the input.
class prng {
 public:
  explicit prng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  double unit() { return static_cast<double>(next() >> 11) * 0x1p-53; }  // [0, 1)

 private:
  std::uint64_t state_;
};

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();
constexpr double dbl_max = std::numeric_limits<double>::max();
constexpr double flt_max = static_cast<double>(std::numeric_limits<float>::max());
constexpr index_t i64_max = std::numeric_limits<index_t>::max();
constexpr index_t i64_min = std::numeric_limits<index_t>::min();

// ---------------------------------------------------------------------------
// The decoded case.

enum class element { f32, f64, f16, bf16 };
enum class anomaly { none, no_layers, no_heads, no_tokens, not_square, negative_layers, tokens_2_31, tokens_2_40, null_data };

struct fuzz_case {
  element type = element::f32;
  bool batched = false;
  index_t batch = 1;         // items in a batched view (may be 0 or -1)
  bool try_first = false;    // call try_select before select
  int layout = 0;            // see make_layout
  anomaly shape = anomaly::none;
  index_t layers = 1, heads = 1, queries = 1, keys = 1;
  fp::options o;
  int budget_kind = 0;  // 0 adaptive, 1 count, 2 ratio
  index_t count = 0;
  double ratio = 0;
  int pattern = 0;
  std::uint8_t param = 0;
  std::uint32_t seed = 0;
  struct patch {
    std::uint32_t position;
    std::uint8_t code, arg;
  };
  std::vector<patch> patches;

  fp::budget budget() const {
    if (budget_kind == 1) return fp::budget::count(count);
    if (budget_kind == 2) return fp::budget::ratio(ratio);
    return fp::budget::adaptive();
  }
  std::size_t elements() const {  // logical elements of one item (valid shapes only)
    return static_cast<std::size_t>(layers * heads * queries * keys);
  }
};

inline const char* element_name(element e) {
  switch (e) {
    case element::f32: return "float";
    case element::f64: return "double";
    case element::f16: return "half";
    case element::bf16: return "bfloat16";
  }
  return "?";
}

inline std::string num(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

inline std::string describe(const fuzz_case& c) {
  std::string s = element_name(c.type);
  auto add = [&s](const char* label, const std::string& value) {
    s += label;
    s += value;
  };
  using std::to_string;
  if (c.batched) add(" batch=", to_string(c.batch));
  add(" L=", to_string(c.layers));
  add(" H=", to_string(c.heads));
  add(" N=", to_string(c.queries));
  if (c.keys != c.queries) add("x", to_string(c.keys));
  add(" layout=", to_string(c.layout));
  add(" anomaly=", to_string(static_cast<int>(c.shape)));
  add(" prefix=", to_string(c.o.prefix_tokens));
  add(" suffix=", to_string(c.o.suffix_tokens));
  add(" k=", to_string(c.o.pivots_per_layer));
  add(" f=", num(c.o.fence_factor));
  add(" dir=", to_string(static_cast<int>(c.o.complementary_from)));
  add(" c=", to_string(c.o.complementary_layer));
  s += " pivot_layers={";
  for (index_t l : c.o.pivot_layers) add(to_string(l).c_str(), ",");
  s += "} budget=";
  if (c.budget_kind == 0) s += "adaptive";
  if (c.budget_kind == 1) add("count(", to_string(c.count) + ")");
  if (c.budget_kind == 2) add("ratio(", num(c.ratio) + ")");
  add(" pattern=", to_string(c.pattern));
  add(" param=", to_string(c.param));
  add(" seed=", to_string(c.seed));
  add(" patches=", to_string(c.patches.size()));
  return s;
}

// Prefix/suffix: mostly small, sometimes out of range.
inline index_t decode_edge(std::uint8_t b, index_t n) {
  if (b < 0xF0) return b % 4;
  switch (b & 7) {
    case 0: return -1;
    case 1: return n;
    case 2: return n - 1;
    case 3: return i64_max;
    case 4: return i64_min;
    case 5: return 1000;
    case 6: return n / 2;
    default: return i64_max / 2;
  }
}

inline double decode_fence(std::uint8_t b) {
  static const double common[16] = {1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 0.0, 0.5, 1.0, 2.0, 3.0, 0.25, 0.1, 1.0 / 3.0};
  static const double special[32] = {7.25, 100.0, 1e300, dbl_max, 5e-324, -0.0, 1e-300, 0.75, -1.0, -5e-324, nan_v, inf_v,
                                     -inf_v, -1e300, 1e-9, 1e9, 0.5, 0.0, 1.5, 2.5, 1.0 + 0x1p-52, 1.5 - 0x1p-52, 4.0, 6.0,
                                     8.0, 0.125, 0.375, 0.625, 10.0, 0.01, 1e-100, 1e100};
  return b < 0xE0 ? common[b % 16] : special[b - 0xE0];
}

inline double decode_ratio(std::uint8_t b) {
  if (b < 0xF0) return static_cast<double>(b + 1) / 240.0;  // (0, 1]
  static const double table[16] = {0.0, -0.0, 1.0, std::nextafter(1.0, 2.0), 5e-324, 2.2250738585072014e-308,
                                   1e-300, -0.5, nan_v, inf_v, -inf_v, 1e-9, std::nextafter(0.5, 0.0), 2.0,
                                   std::nextafter(1.0, 0.0), 0.5};
  return table[b & 15];
}

inline index_t decode_count(std::uint8_t b) {
  if (b < 0xF0) return 1 + b % 70;
  static const index_t table[16] = {0, -1, i64_max, i64_min, index_t(1) << 31, index_t(1) << 32, 64, 65,
                                    1, 2, 63, -64, i64_max - 1, 1000000, 3, 0};
  return table[b & 15];
}

inline fuzz_case decode(const std::uint8_t* data, std::size_t size) {
  reader in(data, size);
  fuzz_case c;
  const std::uint8_t mode = in.u8();
  c.type = static_cast<element>(mode & 3);
  c.batched = (mode & 4) != 0;
  c.try_first = (mode & 8) != 0;
  c.layout = mode >> 4;  // 0..15
  const std::uint8_t bl = in.u8(), bh = in.u8(), bn = in.u8();
  c.layers = 1 + (bl & 3);
  c.heads = 1 + (bh & 3);
  c.queries = c.keys = 1 + bn % max_tokens;
  if (c.batched) c.batch = (bh >> 2) % 5 == 4 ? ((bh >> 5) == 7 ? -1 : 0) : 1 + (bh >> 2) % 5 % max_batch;
  if (bl & 0x80) {  // a bad or degenerate shape
    c.shape = static_cast<anomaly>(1 + ((bl >> 4) & 7));
    switch (c.shape) {
      case anomaly::no_layers: c.layers = 0; break;
      case anomaly::no_heads: c.heads = 0; break;
      case anomaly::no_tokens: c.queries = c.keys = 0; break;
      case anomaly::not_square: c.keys = (bl & 0x40) ? c.queries - 1 : c.queries + 1 + (bl & 0x0C) / 4; break;
      case anomaly::negative_layers: c.layers = -1 - (bl & 3); break;
      case anomaly::tokens_2_31: c.queries = c.keys = index_t(1) << 31; break;
      case anomaly::tokens_2_40: c.queries = c.keys = index_t(1) << 40; break;
      default: break;
    }
  }
  const std::uint8_t ba = in.u8(), bz = in.u8();
  c.o.prefix_tokens = decode_edge(ba, c.queries);
  c.o.suffix_tokens = decode_edge(bz, c.queries);
  if (ba < 0xF0 && bz < 0xF0 && c.queries >= 1 && c.o.prefix_tokens + c.o.suffix_tokens >= c.queries) {
    c.o.suffix_tokens = 0;  // small values leave a candidate; the specials test the rejection
    c.o.prefix_tokens = std::min(c.o.prefix_tokens, c.queries - 1);
  }
  const std::uint8_t bb = in.u8(), bv = in.u8();
  c.budget_kind = bb % 3;
  if (c.budget_kind == 1) c.count = decode_count(bv);
  if (c.budget_kind == 2) c.ratio = decode_ratio(bv);
  const std::uint8_t bk = in.u8();
  if (bk < 0xA0) {
    c.o.pivots_per_layer = 0;
  } else if (bk < 0xF0) {
    c.o.pivots_per_layer = 1 + (bk - 0xA0) % 8;
  } else {
    static const index_t table[8] = {-1, i64_min, i64_max, 64, 65, 1000, 0, index_t(1) << 31};
    c.o.pivots_per_layer = table[bk & 7];
  }
  c.o.fence_factor = decode_fence(in.u8());
  const std::uint8_t bd = in.u8();
  const int code = bd >> 3;  // 0..31
  c.o.complementary_from = (bd & 1) ? fp::direction::column : fp::direction::row;
  if ((bd & 6) == 6 && code >= 28) c.o.complementary_from = static_cast<fp::direction>((bd & 1) ? 2 : -1);
  const index_t some_layers = std::max<index_t>(c.layers, 1);
  if (code < 20)
    c.o.complementary_layer = -1;  // the default, the last layer
  else if (code < 24)
    c.o.complementary_layer = (code - 20) % some_layers;
  else if (code < 28) {
    static const index_t table[4] = {-2, 0, i64_min, i64_max};
    c.o.complementary_layer = code == 25 ? c.layers : table[code - 24];
  } else {
    c.o.complementary_layer = code - 28;  // 0..3, out of range when >= L
  }
  const std::uint8_t bp = in.u8();
  int entries = (bp & 7) < 5 ? 0 : (bp & 7) - 4;
  if (bp & 0x80) entries += 2;
  for (int k = 0; k < entries; ++k) {  // mostly valid (-1..L-1); duplicates happen
    const std::uint8_t e = in.u8();
    static const index_t bad[4] = {-2, i64_min, i64_max, max_layers};
    c.o.pivot_layers.push_back(e < 0xF0 ? static_cast<index_t>(e % (some_layers + 1)) - 1
                                        : (e & 4 ? c.layers : bad[e & 3]));
  }
  c.pattern = in.u8() % 12;
  c.param = in.u8();
  c.seed = in.u32();
  while (in.left() >= 4) {
    fuzz_case::patch p;
    p.position = in.u16();
    p.code = in.u8();
    p.arg = in.u8();
    p.position |= static_cast<std::uint32_t>(p.code >> 5) << 16;
    c.patches.push_back(p);
  }
  if (c.shape == anomaly::null_data && c.batched && c.batch < 0) c.batch = 1;
  return c;
}

// ---------------------------------------------------------------------------
// Map values (logical, as doubles), before rounding to the element type.

inline double quantum(int bits) { return std::ldexp(1.0, -bits); }

inline void fill_item(const fuzz_case& c, std::uint64_t item, std::vector<double>& x) {
  const index_t L = c.layers, H = c.heads, N = c.queries;
  x.assign(c.elements(), 0.0);
  prng g(c.seed * 0x100000001B3ull + item * 0x9E3779B97F4A7C15ull + 1);
  const int p = c.param;
  auto at = [&](index_t l, index_t h, index_t i, index_t j) -> double& {
    return x[static_cast<std::size_t>(((l * H + h) * N + i) * N + j)];
  };
  std::vector<double> bonus(static_cast<std::size_t>(N));
  switch (c.pattern) {
    case 0: {  // dyadic uniform: k * 2^-s, k < 2^q
      const int q = 1 + p % 16, s = q + p / 16;
      for (double& v : x) v = static_cast<double>(g.below(std::uint64_t(1) << q)) * quantum(s);
      break;
    }
    case 1:  // dyadic with sinks: a few keys per layer-head draw attention (outliers)
      for (index_t l = 0; l < L; ++l)
        for (index_t h = 0; h < H; ++h) {
          for (double& b : bonus) b = g.below(8) == 0 ? static_cast<double>(16 + g.below(240)) : 0.0;
          for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j)
              at(l, h, i, j) = (static_cast<double>(g.below(8)) + bonus[static_cast<std::size_t>(j)]) * quantum(p % 24);
        }
      break;
    case 2: {  // all equal: every decision is a tie
      const double v = static_cast<double>(1 + p) * quantum(8);
      std::fill(x.begin(), x.end(), v);
      break;
    }
    case 3:  // one-hot rows
      for (std::size_t r = 0; r < x.size(); r += static_cast<std::size_t>(N))
        x[r + static_cast<std::size_t>(g.below(static_cast<std::uint64_t>(N)))] = 1.0;
      break;
    case 4:  // softmax rows with sinks, at random temperatures (not dyadic)
      for (index_t l = 0; l < L; ++l)
        for (index_t h = 0; h < H; ++h) {
          for (double& b : bonus) b = g.below(8) == 0 ? 1.0 + 3.0 * g.unit() : 0.0;
          const double temperature = 0.3 + 1.7 * g.unit();
          for (index_t i = 0; i < N; ++i) {
            double sum = 0;
            for (index_t j = 0; j < N; ++j)
              sum += (at(l, h, i, j) = std::exp(temperature * (2 * g.unit() - 1) + bonus[static_cast<std::size_t>(j)]));
            for (index_t j = 0; j < N; ++j) at(l, h, i, j) /= sum;
          }
        }
      break;
    case 5:  // raw bits: any float, NaN and infinities included (converted per type later)
      for (double& v : x) {
        const auto bits = static_cast<std::uint32_t>(g.next());
        float f;
        std::memcpy(&f, &bits, sizeof f);
        v = static_cast<double>(f);
      }
      break;
    case 6: {  // float denormals: k * 2^-149
      const int q = 1 + p % 20;
      for (double& v : x) v = static_cast<double>(g.below(std::uint64_t(1) << q)) * 0x1p-149;
      break;
    }
    case 7: {  // signed dyadic
      const int q = 1 + p % 16;
      for (double& v : x)
        v = (static_cast<double>(g.below(std::uint64_t(1) << (q + 1))) - std::ldexp(1.0, q)) * quantum(q);
      break;
    }
    case 8: {  // huge magnitudes (double overflow; infinities in narrower types)
      const int e = 4 * p;  // up to 1020
      for (double& v : x) v = static_cast<double>(g.below(16)) * std::ldexp(1.0, e - 4) * (g.below(4) == 0 ? -1 : 1);
      break;
    }
    case 9:  // uniform [0, 1): rows that do not sum to 1 (not dyadic in general)
      for (double& v : x) v = g.unit();
      break;
    case 10:  // dyadic with many exact ties: 0, 1/4, 1/2
      for (double& v : x) v = static_cast<double>(g.below(3)) * 0.25;
      break;
    default:  // diagonal-heavy dyadic
      for (index_t l = 0; l < L; ++l)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j)
              at(l, h, i, j) = static_cast<double>(i == j ? 64 + g.below(64) : g.below(4)) * quantum(p % 10);
      break;
  }
  // Patches place special values where the fuzzer wants them.
  const std::uint64_t total = x.size() * static_cast<std::uint64_t>(c.batched && c.batch > 0 ? c.batch : 1);
  for (const auto& pt : c.patches) {
    const std::uint64_t pos = pt.position % total;
    if (pos / x.size() != item) continue;
    double& v = x[static_cast<std::size_t>(pos % x.size())];
    switch (pt.code % 24) {
      case 0: v = nan_v; break;
      case 1: v = inf_v; break;
      case 2: v = -inf_v; break;
      case 3: v = 0x1p-149; break;
      case 4: v = -0x1p-149; break;
      case 5: v = flt_max; break;
      case 6: v = -flt_max; break;
      case 7: v = dbl_max; break;
      case 8: v = -dbl_max; break;
      case 9: v = 0.0; break;
      case 10: v = -0.0; break;
      case 11: v = 1.0; break;
      case 12: v = 1e300; break;
      case 13: v = 1e-300; break;
      case 14: v = 5e-324; break;
      case 15: v = -v; break;
      case 16: v = std::ldexp(v, pt.arg % 64 - 32); break;
      case 17: v = 65504.0; break;
      case 18: v = 65520.0; break;
      default: v = static_cast<double>(pt.arg) * quantum(pt.code % 24 - 19 + (c.param % 16)); break;
    }
  }
}

// double -> element type, as an engine would store it (IEEE rounding; out
// of range -> infinity, never an undefined conversion).
template <class E>
E store(double v) {
  if (std::isfinite(v) && std::fabs(v) > flt_max && !std::is_same<E, double>::value) v = std::copysign(inf_v, v);
  if constexpr (std::is_same<E, double>::value)
    return v;
  else if constexpr (std::is_same<E, float>::value)
    return static_cast<float>(v);
  else
    return static_cast<E>(static_cast<float>(v));
}

template <class E>
double widen(E v) {
  if constexpr (std::is_same<E, double>::value)
    return v;
  else
    return static_cast<double>(static_cast<float>(v));
}

// ---------------------------------------------------------------------------
// Physical layouts: any order of the four dimensions, padding, reversed
// (negative) strides, a broadcast head (stride 0). Padding holds NaN, so a
// read outside the view is caught.

struct layout {
  std::array<index_t, 4> strides{};
  index_t base = 0;  // offset of logical (0, 0, 0, 0)
  index_t size = 0;  // elements spanned by one item
};

inline layout make_layout(int code, const std::array<index_t, 4>& ext, std::uint32_t seed) {
  std::array<int, 4> order{0, 1, 2, 3};  // outermost first
  std::array<index_t, 4> pad{0, 0, 0, 0};
  std::array<bool, 4> flip{false, false, false, false};
  bool broadcast_head = false;
  switch (code) {
    case 1: pad = {1, 1, 2, 3}; break;                      // padded rows and planes
    case 2: order = {0, 1, 3, 2}; break;                    // keys strided (maps stored transposed)
    case 3: order = {1, 0, 2, 3}; break;                    // heads outermost
    case 4: flip = {true, true, true, true}; break;         // every stride negative
    case 5: broadcast_head = true; break;                   // one map shared by every head
    case 6: {                                               // any order, padding, some flips
      std::uint32_t s = seed;
      for (std::size_t k = 3; k > 0; --k) {  // Fisher-Yates
        std::swap(order[k], order[s % (k + 1)]);
        s /= 4;
      }
      for (std::size_t d = 0; d < 4; ++d) {
        pad[d] = (s >> d) & 1;
        flip[d] = ((s >> (d + 4)) & 1) != 0;
      }
      break;
    }
    case 7: order = {0, 1, 3, 2}; flip = {false, false, false, true}; pad = {0, 0, 1, 0}; break;
    default: break;  // contiguous
  }
  layout out;
  index_t running = 1;
  for (int k = 3; k >= 0; --k) {
    const auto d = static_cast<std::size_t>(order[static_cast<std::size_t>(k)]);
    if (d == 1 && broadcast_head) continue;  // stride 0
    out.strides[d] = running;
    running *= ext[d] + pad[d];
  }
  out.size = running;
  for (std::size_t d = 0; d < 4; ++d)
    if (flip[d]) {
      out.base += (ext[d] - 1) * out.strides[d];
      out.strides[d] = -out.strides[d];
    }
  return out;
}

// ---------------------------------------------------------------------------
// What the library must answer: this file's own validation.

// What kept_tokens(budget, tokens, options) checks: tokens, options, budget.
inline std::set<errc> expected_kept_errors(const fuzz_case& c) {
  std::set<errc> e;
  const auto& o = c.o;
  if (c.queries < 1) e.insert(errc::invalid_shape);
  if (o.prefix_tokens < 0 || o.suffix_tokens < 0) e.insert(errc::invalid_tokens);
  if (c.queries >= 1 && o.prefix_tokens >= 0 && o.suffix_tokens >= 0 &&
      static_cast<long double>(o.prefix_tokens) + static_cast<long double>(o.suffix_tokens) >=
          static_cast<long double>(c.queries))
    e.insert(errc::invalid_tokens);
  if (o.pivots_per_layer < 0 || !std::isfinite(o.fence_factor) || o.fence_factor < 0 ||
      (o.complementary_from != fp::direction::row && o.complementary_from != fp::direction::column))
    e.insert(errc::invalid_option);
  if (c.budget_kind == 1 && c.count < 1) e.insert(errc::invalid_budget);
  if (c.budget_kind == 2 && !(c.ratio > 0 && c.ratio <= 1)) e.insert(errc::invalid_budget);
  return e;
}

// What select checks: the shape, the layers, null data, and the above.
inline std::set<errc> expected_errors(const fuzz_case& c) {
  const bool shape_ok = c.layers >= 1 && c.heads >= 1 && c.queries >= 1 && c.keys >= 1 && c.queries == c.keys &&
                        c.queries <= std::numeric_limits<token_t>::max() && !(c.batched && c.batch < 0);
  std::set<errc> e = expected_kept_errors(c);
  if (!shape_ok) e.insert(errc::invalid_shape);
  if (c.layers >= 1) {
    auto bad = [&](index_t l) { return l < -1 || l >= c.layers; };
    if (bad(c.o.complementary_layer)) e.insert(errc::invalid_layer);
    std::set<index_t> seen;
    for (index_t l : c.o.pivot_layers)
      if (bad(l) || !seen.insert(l == -1 ? c.layers - 1 : l).second) e.insert(errc::invalid_layer);
  }
  if (e.empty() && c.shape == anomaly::null_data && !(c.batched && c.batch == 0)) e.insert(errc::null_data);
  return e;
}

/// The number of tokens a count/ratio budget keeps, computed here (-1: adaptive).
inline index_t expected_size(const fuzz_case& c, index_t candidates) {
  if (c.budget_kind == 0) return -1;
  if (c.budget_kind == 1) return std::min(c.count, candidates);
  const auto m = static_cast<index_t>(std::floor(c.ratio * static_cast<double>(candidates) + 0.5));
  return std::min(std::max<index_t>(m, 1), candidates);
}

// ---------------------------------------------------------------------------
// Exactness: every read value is a multiple of 2^lo with |value| < 2^hi.
// With H = 2^h and at most (N + 1) H terms per sum, every sum, difference,
// head mean and affinity the library and the reference form is exact when
// hi + log2((N + 1) H) - (lo - h) <= 53, in any order of summation.

struct magnitudes {
  bool finite = true;
  bool any = false;  // a nonzero value
  int hi = std::numeric_limits<int>::min();
  int lo = std::numeric_limits<int>::max();

  void add(double v) {
    if (!std::isfinite(v)) {
      finite = false;
      return;
    }
    if (v == 0) return;
    int e = 0;
    const double m = std::frexp(std::fabs(v), &e);  // |v| = m 2^e, m in [0.5, 1)
    auto bits = static_cast<std::uint64_t>(std::ldexp(m, 53));
    int t = 0;
    while ((bits & 1) == 0) bits >>= 1, ++t;
    any = true;
    hi = std::max(hi, e);
    lo = std::min(lo, e - 53 + t);
  }
};

inline int ceil_log2(index_t x) {
  int k = 0;
  while ((index_t(1) << k) < x) ++k;
  return k;
}

inline bool is_power_of_two(index_t x) { return x > 0 && (x & (x - 1)) == 0; }

inline bool exact_sums(const magnitudes& m, index_t tokens, index_t heads) {
  if (!m.finite || !is_power_of_two(heads)) return false;
  if (!m.any) return true;
  const int h = ceil_log2(heads), terms = ceil_log2((tokens + 1) * heads);
  return m.hi + terms - (m.lo - h) <= 53 && m.lo - h >= -1074 && m.hi + terms + ceil_log2(tokens) < 1000;
}

/// Whether some sum over these values may overflow double.
inline bool may_overflow(const magnitudes& m, index_t tokens, index_t heads) {
  return m.any && m.hi + ceil_log2((tokens + 1) * heads) + ceil_log2(tokens) + 4 >= 1024;
}

// ---------------------------------------------------------------------------
// Checks on results.

// Messages are built only when a check fails: `require` takes the pieces
// (text, numbers, token lists, selections, outcomes) and formats them then.
// (Appending piece by piece also keeps clear of GCC 12's -Wrestrict false
// positive on `"literal" + std::string&&`.)

/// The outcome of one library call.
struct outcome {
  bool ok = false;
  errc code = errc::ok;
  std::string message;
  fp::selection sel;
};

template <class F>
outcome call(F&& f) {
  outcome r;
  try {
    r.sel = f();
    r.ok = true;
  } catch (const fp::error& e) {
    r.code = e.code();
    r.message = e.what();
  }
  return r;
}

inline void put(std::string& out, const char* s) { out += s; }
inline void put(std::string& out, const std::string& s) { out += s; }
inline void put(std::string& out, bool v) { out += v ? "true" : "false"; }
inline void put(std::string& out, int v) { out += std::to_string(v); }
inline void put(std::string& out, unsigned v) { out += std::to_string(v); }
inline void put(std::string& out, long v) { out += std::to_string(v); }
inline void put(std::string& out, long long v) { out += std::to_string(v); }
inline void put(std::string& out, unsigned long v) { out += std::to_string(v); }
inline void put(std::string& out, unsigned long long v) { out += std::to_string(v); }
inline void put(std::string& out, double v) { out += num(v); }
inline void put(std::string& out, const std::vector<token_t>& v) {
  out += '{';
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (k) out += ',';
    out += std::to_string(v[k]);
  }
  out += '}';
}
inline void put(std::string& out, const fp::selection& s) {
  out += "indices=";
  put(out, s.indices);
  out += " pivotal=";
  put(out, s.pivotal);
  out += " complementary=";
  put(out, s.complementary);
}
inline void put(std::string& out, const outcome& r) {
  if (r.ok) {
    out += "ok ";
    put(out, r.sel);
  } else {
    out += "error ";
    out += fp::to_string(r.code);
    out += " (";
    out += r.message;
    out += ')';
  }
}

template <class... Pieces>
std::string text(const Pieces&... pieces) {
  std::string out;
  (put(out, pieces), ...);
  return out;
}

inline std::string list(const std::vector<token_t>& v) { return text(v); }

/// Where a check runs: the case, described only if a check fails.
class context {
 public:
  explicit context(const fuzz_case& c) : case_(&c) {}
  explicit context(std::string what) : what_(std::move(what)) {}

  template <class... Pieces>
  [[noreturn]] void fail(const Pieces&... pieces) const {
    throw check_failed(text(pieces..., "\n  case: ", case_ ? describe(*case_) : what_));
  }
  template <class... Pieces>
  void require(bool ok, const Pieces&... pieces) const {
    if (!ok) fail(pieces...);
  }

 private:
  const fuzz_case* case_ = nullptr;
  std::string what_;
};

inline bool strictly_ascending(const std::vector<token_t>& v) {
  for (std::size_t k = 1; k < v.size(); ++k)
    if (!(v[k - 1] < v[k])) return false;
  return true;
}

/// A well-formed selection: ascending, unique, candidates only, pivotal and
/// complementary disjoint and covering it, never empty, exact size for a
/// fixed budget (m >= 0).
inline void check_structure(const context& cx, const fp::selection& s, index_t first, index_t last, index_t m,
                            const char* what) {
  const std::string w = std::string(what) + ": ";
  cx.require(strictly_ascending(s.indices), w, "indices not strictly ascending: ", s);
  cx.require(strictly_ascending(s.pivotal), w, "pivotal not strictly ascending: ", s);
  cx.require(strictly_ascending(s.complementary), w, "complementary not strictly ascending: ", s);
  for (token_t t : s.indices) cx.require(t >= first && t < last, w, "token ", t, " is not a candidate");
  std::vector<token_t> both;
  std::merge(s.pivotal.begin(), s.pivotal.end(), s.complementary.begin(), s.complementary.end(), std::back_inserter(both));
  cx.require(both == s.indices, w, "pivotal and complementary are not a partition of indices: ", s);
  cx.require(!s.pivotal.empty(), w, "no pivotal token (P is never empty and comes first): ", s);
  if (m >= 0)
    cx.require(static_cast<index_t>(s.size()) == m, w, "size ", s.size(), " != budget ", m, ": ", s);
}

inline bool subset(const std::vector<token_t>& a, const std::vector<token_t>& b) {
  return std::includes(b.begin(), b.end(), a.begin(), a.end());
}

inline bool same(const outcome& a, const outcome& b) {
  return a.ok == b.ok && (a.ok ? a.sel == b.sel : a.code == b.code && a.message == b.message);
}

/// select and try_select on the same input, in the fuzzed order; they must agree.
template <class View>
outcome select_both(const context& cx, const View& v, const fp::budget& b, const fp::options& o, bool try_first) {
  auto via_try = [&] {
    outcome r;
    fp::selection out;
    out.indices.push_back(-7);  // try_select must reset it
    const fp::status s = fp::try_select(v, b, o, out);
    r.ok = s.ok();
    r.code = s.code();
    r.message = s.message();
    if (r.ok) r.sel = out;
    else cx.require(out == fp::selection{}, "try_select failed but left a non-empty selection: ", out);
    cx.require(r.ok == (r.code == errc::ok), "try_select: ok() and code() disagree");
    return r;
  };
  auto via_select = [&] { return call([&] { return fp::select(v, b, o); }); };
  const outcome first = try_first ? via_try() : via_select();
  const outcome second = try_first ? via_select() : via_try();
  cx.require(same(first, second), "select and try_select disagree (or a repeat differs):\n  ", first, "\n  ", second);
  if (!first.ok) {
    cx.require(first.code != errc::ok, "an error with code ok");
    cx.require(first.message.rfind("freepruner: ", 0) == 0, "error message without the 'freepruner: ' prefix: ", first.message);
  }
  return first;
}

// ---------------------------------------------------------------------------
// One item: the oracle for one set of maps.

/// The resolved plan of a valid case.
struct resolved {
  index_t first = 0, last = 0, candidates = 0;
  std::vector<index_t> pivot_layers;  // 0..L-1, as given (deduplicated by validity)
  index_t complementary_layer = 0;
  bool column = false;
};

inline resolved resolve(const fuzz_case& c) {
  resolved r;
  r.first = c.o.prefix_tokens;
  r.last = c.queries - c.o.suffix_tokens;
  r.candidates = r.last - r.first;
  if (c.o.pivot_layers.empty())
    for (index_t l = 0; l < c.layers; ++l) r.pivot_layers.push_back(l);
  for (index_t l : c.o.pivot_layers) r.pivot_layers.push_back(l == -1 ? c.layers - 1 : l);
  r.complementary_layer = c.o.complementary_layer == -1 ? c.layers - 1 : c.o.complementary_layer;
  r.column = c.o.complementary_from == fp::direction::column;
  return r;
}

inline fpref::config reference_config(const fuzz_case& c, const resolved& r, int budget_kind, double budget_value) {
  fpref::config rc;
  rc.layers = static_cast<int>(c.layers);
  rc.heads = static_cast<int>(c.heads);
  rc.tokens = static_cast<int>(c.queries);
  rc.prefix = static_cast<int>(c.o.prefix_tokens);
  rc.suffix = static_cast<int>(c.o.suffix_tokens);
  rc.kind = budget_kind == 0 ? fpref::budget_kind::adaptive : budget_kind == 1 ? fpref::budget_kind::count : fpref::budget_kind::ratio;
  rc.budget_value = budget_value;
  rc.pivots_per_layer = static_cast<int>(std::min<index_t>(c.o.pivots_per_layer, r.candidates));
  rc.column = r.column;
  rc.complementary_layer = static_cast<int>(r.complementary_layer);
  for (index_t l : r.pivot_layers) rc.pivot_layers.push_back(static_cast<int>(l));
  rc.fence_factor = c.o.fence_factor;
  return rc;
}

inline fp::selection from_reference(const fpref::result& r) {
  fp::selection s;
  s.indices.assign(r.indices.begin(), r.indices.end());
  s.pivotal.assign(r.pivotal.begin(), r.pivotal.end());
  s.complementary.assign(r.complementary.begin(), r.complementary.end());
  return s;
}

/// Where the non-finite values are, relative to what select reads.
struct reads {
  magnitudes pivot_layers;  // every value of every pivot layer
  magnitudes region;        // the complementary layer's values read for pivots P
  bool lenient_non_finite = false;  // non-finite in pivot columns' prefix/suffix rows (README: "the pivot columns")
  bool other_non_finite = false;    // non-finite in the complementary layer outside what P reads
};

inline reads classify(const fuzz_case& c, const resolved& r, const std::vector<double>& x, const std::vector<token_t>* pivots) {
  const index_t H = c.heads, N = c.queries;
  auto at = [&](index_t l, index_t h, index_t i, index_t j) {
    return x[static_cast<std::size_t>(((l * H + h) * N + i) * N + j)];
  };
  reads out;
  std::vector<bool> is_pivot_layer(static_cast<std::size_t>(c.layers), false);
  for (index_t l : r.pivot_layers) is_pivot_layer[static_cast<std::size_t>(l)] = true;
  for (index_t l = 0; l < c.layers; ++l)
    if (is_pivot_layer[static_cast<std::size_t>(l)])
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j) out.pivot_layers.add(at(l, h, i, j));
  const index_t cl = r.complementary_layer;
  std::vector<bool> is_pivot(static_cast<std::size_t>(N), false);
  if (pivots)
    for (token_t p : *pivots) is_pivot[static_cast<std::size_t>(p)] = true;
  for (index_t h = 0; h < H; ++h)
    for (index_t i = 0; i < N; ++i)
      for (index_t j = 0; j < N; ++j) {
        const double v = at(cl, h, i, j);
        const bool read = r.column ? is_pivot[static_cast<std::size_t>(j)] && i >= r.first && i < r.last
                                   : is_pivot[static_cast<std::size_t>(i)];
        if (read)
          out.region.add(v);
        else if (!std::isfinite(v))
          (r.column && is_pivot[static_cast<std::size_t>(j)] ? out.lenient_non_finite : out.other_non_finite) = true;
      }
  return out;
}

/// r[i] for every token of layer l, by the definition (exact inputs only).
inline std::vector<double> degrees_by_definition(const fuzz_case& c, const std::vector<double>& x, index_t l) {
  const index_t H = c.heads, N = c.queries;
  std::vector<double> r(static_cast<std::size_t>(N), 0.0);
  for (index_t i = 0; i < N; ++i) {
    double s = 0;
    for (index_t h = 0; h < H; ++h)
      for (index_t j = 0; j < N; ++j)
        if (j != i) s += x[static_cast<std::size_t>(((l * H + h) * N + j) * N + i)];
    r[static_cast<std::size_t>(i)] = s / static_cast<double>(H);
  }
  return r;
}

/// The relations every fixed budget has with the adaptive answer, whatever
/// the rounding: one order (P by rank, then Q, then the rest) cut at m.
template <class View>
void check_budget_relations(const context& cx, const View& v, const fuzz_case& c, const resolved& r,
                            const fp::selection& adaptive) {
  const auto& P = adaptive.pivotal;
  const auto& Q = adaptive.complementary;
  const index_t np = static_cast<index_t>(P.size()), nq = static_cast<index_t>(Q.size());
  if (c.o.pivots_per_layer > 0) {
    const index_t per = std::min(c.o.pivots_per_layer, r.candidates);
    cx.require(np >= per && np <= per * static_cast<index_t>(r.pivot_layers.size()), "top-k: |P| = ", np, " outside [k, k * layers]");
  }
  std::vector<index_t> sizes{1, std::max<index_t>(1, np - 1), np, np + 1, np + nq, r.candidates,
                             1 + static_cast<index_t>(c.seed % static_cast<std::uint32_t>(r.candidates))};
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  fp::selection previous;
  for (index_t m : sizes) {
    if (m < 1 || m > r.candidates) continue;
    const outcome got = call([&] { return fp::select(v, fp::budget::count(m), c.o); });
    const std::string at = text("count(", m, ")");
    cx.require(got.ok, at, " failed where adaptive succeeded: ", got);
    const fp::selection& s = got.sel;
    check_structure(cx, s, r.first, r.last, m, at.c_str());
    cx.require(subset(previous.indices, s.indices), at, " does not contain the smaller budget's tokens: ", previous, " vs ", s);
    if (m <= np) {
      cx.require(s.complementary.empty() && subset(s.indices, P), at, " with m <= |P| must keep pivots only: ", s, " P=", P);
    } else {
      cx.require(s.pivotal == P, at, " with m > |P| must keep all of P: ", s, " P=", P);
      if (m <= np + nq)
        cx.require(subset(s.complementary, Q), at, ": the complementary part must come from Q first: ", s, " Q=", Q);
      else
        cx.require(subset(Q, s.complementary), at, ": all of Q must be kept: ", s, " Q=", Q);
    }
    if (m == np + nq) cx.require(s == adaptive, at, " = |P| + |Q| must equal the adaptive answer: ", s, " vs ", adaptive);
    previous = s;
  }
}

/// The four stages composed by hand must give select's answer (exact inputs).
template <class View>
void check_stages(const context& cx, const View& v, const fuzz_case& c, const resolved& r, const std::vector<double>& x,
                  const fp::selection& want) {
  std::vector<std::vector<double>> degrees;
  for (index_t l : r.pivot_layers) {
    degrees.push_back(fp::contribution_degree(v, l));
    const auto def = degrees_by_definition(c, x, l);
    cx.require(degrees.back() == def, "contribution_degree of layer ", l, " differs from the definition");
  }
  const auto pivots = fp::pivotal_tokens(degrees, c.o);
  const auto comps = fp::complementary_tokens(v, pivots, c.o);
  const auto staged = fp::fit_budget(degrees, pivots, comps, c.budget(), c.o);
  cx.require(staged == want, "the stages composed differ from select: ", staged, " vs ", want);
}

/// complementary_tokens and fit_budget on a pivot set the caller chose (any
/// candidates, sometimes a token that is not one): it reads exactly those
/// pivots' rows (columns), and on exact input gives SPEC step 3's Q and w.
template <class View>
void check_given_pivots(const context& cx, const View& v, const fuzz_case& c, const resolved& r, const std::vector<double>& x,
                        const std::vector<std::vector<double>>& degrees) {
  prng g(c.seed ^ 0xC0FFEEull);
  std::vector<token_t> given;
  const std::uint64_t count = 1 + g.below(static_cast<std::uint64_t>(std::min<index_t>(r.candidates, 6)));
  for (std::uint64_t k = 0; k < count; ++k)
    given.push_back(static_cast<token_t>(r.first + static_cast<index_t>(g.below(static_cast<std::uint64_t>(r.candidates)))));
  bool outside = false;
  if (g.below(8) == 0) {  // a token that is not a candidate
    given.push_back(static_cast<token_t>(g.below(2) ? r.last : r.first - 1));
    outside = true;
  }
  std::vector<token_t> pivots = given;  // as the library takes them: a set
  std::sort(pivots.begin(), pivots.end());
  pivots.erase(std::unique(pivots.begin(), pivots.end()), pivots.end());

  fp::complements got;
  errc code = errc::ok;
  try {
    got = fp::complementary_tokens(v, given, c.o);
  } catch (const fp::error& e) {
    code = e.code();
  }
  const std::string what = text("complementary_tokens(pivots ", given, "): ");
  if (outside) {
    cx.require(code == errc::invalid_tokens, what, "a pivot that is not a candidate must be invalid_tokens, got ", fp::to_string(code));
    return;
  }
  const reads rd = classify(c, r, x, &pivots);
  if (!rd.region.finite) {
    cx.require(code == errc::non_finite, what, "a NaN/infinity in the pivots' rows/columns must be non_finite, got ", fp::to_string(code));
    return;
  }
  const bool overflow = may_overflow(rd.region, c.queries, c.heads);
  if (rd.lenient_non_finite || overflow) {
    if (code != errc::ok) {
      cx.require(code == errc::non_finite, what, "unexpected ", fp::to_string(code));
      return;
    }
  } else {
    cx.require(code == errc::ok, what, "valid finite input rejected: ", fp::to_string(code));
  }
  // Q: ascending candidates, no pivot; w: one value per token, zero outside C \ P.
  cx.require(strictly_ascending(got.tokens), what, "tokens not strictly ascending");
  for (token_t t : got.tokens)
    cx.require(t >= r.first && t < r.last && !std::binary_search(pivots.begin(), pivots.end(), t), what, "token ", t, " is a pivot or not a candidate");
  cx.require(got.affinity.size() == static_cast<std::size_t>(c.queries), what, "affinity has the wrong size");
  for (index_t j = 0; j < c.queries; ++j)
    if (j < r.first || j >= r.last || std::binary_search(pivots.begin(), pivots.end(), static_cast<token_t>(j)))
      cx.require(got.affinity[static_cast<std::size_t>(j)] == 0, what, "affinity nonzero outside C \\ P at ", j);

  if (exact_sums(rd.region, c.queries, c.heads)) {  // SPEC step 3 by the letter
    const index_t H = c.heads, N = c.queries, cl = r.complementary_layer;
    auto vp = [&](token_t p, index_t j) {
      double s = 0;
      for (index_t h = 0; h < H; ++h)
        s += r.column ? x[static_cast<std::size_t>(((cl * H + h) * N + j) * N + p)]
                      : x[static_cast<std::size_t>(((cl * H + h) * N + p) * N + j)];
      return s / static_cast<double>(H);
    };
    std::vector<token_t> q;
    std::vector<double> w(static_cast<std::size_t>(N), 0.0);
    for (token_t p : pivots) {
      std::vector<double> values;
      std::vector<token_t> js;
      for (index_t j = r.first; j < r.last; ++j)
        if (j != p) values.push_back(vp(p, j)), js.push_back(static_cast<token_t>(j));
      for (std::size_t k : fpref::detail::upper_outliers(values, c.o.fence_factor))
        if (!std::binary_search(pivots.begin(), pivots.end(), js[k])) q.push_back(js[k]);
      for (index_t j = r.first; j < r.last; ++j)
        if (!std::binary_search(pivots.begin(), pivots.end(), static_cast<token_t>(j))) w[static_cast<std::size_t>(j)] += vp(p, j);
    }
    std::sort(q.begin(), q.end());
    q.erase(std::unique(q.begin(), q.end()), q.end());
    cx.require(got.tokens == q, what, "Q = ", got.tokens, ", by the definition ", q);
    cx.require(got.affinity == w, what, "the affinities differ from the definition");
  }

  // fit_budget on these stages: one order, P (by rank) first, then Q.
  if (overflow) return;
  const fp::selection s = fp::fit_budget(degrees, given, got, c.budget(), c.o);
  const index_t m = expected_size(c, r.candidates);
  check_structure(cx, s, r.first, r.last, m, "fit_budget");
  const auto np = static_cast<index_t>(pivots.size()), nq = static_cast<index_t>(got.tokens.size());
  cx.require(subset(s.pivotal, pivots), "fit_budget: a pivotal token that is not a given pivot");
  if (m < 0 || m >= np) cx.require(s.pivotal == pivots, "fit_budget: not every given pivot kept");
  if (m < 0) cx.require(s.complementary == got.tokens, "fit_budget adaptive: complementary != Q");
  if (m >= np + nq) cx.require(subset(got.tokens, s.complementary), "fit_budget: not all of Q kept");
}

/// The same call at every SIMD level the machine has: the same outcome.
template <class View>
void check_simd_levels(const context& cx, const View& v, const fuzz_case& c, const outcome& want) {
  namespace cpu = fp::detail::cpu;
  struct restore {
    ~restore() { cpu::simd_cap().store(-1); }
  } guard;
  for (int level = 0; level < static_cast<int>(cpu::detected_simd()); ++level) {
    cpu::simd_cap().store(level);
    const outcome got = call([&] { return fp::select(v, c.budget(), c.o); });
    cx.require(same(got, want), "SIMD level ", level, " differs from the best level:\n  ", got, "\n  ", want);
  }
}

/// Scaling each layer by its own power of two changes no decision: every
/// step is a sum, a head mean, a numpy quartile, a fence or a comparison,
/// and IEEE rounding commutes with 2^k away from subnormals and overflow.
/// So on any finite maps with magnitudes in [2^-900, 2^900] (exact or
/// not), the scaled maps must give the bit-identical answer.
inline void check_scaling(const context& cx, const fuzz_case& c, const std::vector<double>& x) {
  const double f = c.o.fence_factor;
  if (!(f == 0 || (f >= 0x1p-60 && f <= 0x1p60))) return;
  magnitudes all;
  for (double v : x) all.add(v);
  if (!all.finite || (all.any && (all.lo < -900 || all.hi > 900))) return;
  const auto per_layer = static_cast<std::size_t>(c.heads * c.queries * c.queries);
  std::vector<double> scaled = x;
  std::string scales;
  for (index_t l = 0; l < c.layers; ++l) {
    const int k = static_cast<int>((c.seed >> (5 * l)) % 33) - 16;
    scales += std::to_string(k) + " ";
    for (std::size_t e = 0; e < per_layer; ++e) scaled[static_cast<std::size_t>(l) * per_layer + e] *= std::ldexp(1.0, k);
  }
  const fp::attention_view<const double> plain(x.data(), c.layers, c.heads, c.queries);
  const fp::attention_view<const double> twin(scaled.data(), c.layers, c.heads, c.queries);
  const outcome want = call([&] { return fp::select(plain, c.budget(), c.o); });
  const outcome got = call([&] { return fp::select(twin, c.budget(), c.o); });
  cx.require(same(got, want), "layers scaled by 2^{ ", scales, "} change the answer:\n  scaled   ", got, "\n  original ", want);
}

/// Runs every single-item check on view `v` whose logical values are `x`,
/// for a case with valid options; returns select's outcome.
template <class View>
outcome check_item(const context& cx, const View& v, const fuzz_case& c, const std::vector<double>& x) {
  const resolved r = resolve(c);
  const outcome got = select_both(cx, v, c.budget(), c.o, c.try_first);
  check_simd_levels(cx, v, c, got);
  const index_t m = expected_size(c, r.candidates);

  // What this file's own analysis expects.
  const reads before = classify(c, r, x, nullptr);
  if (!before.pivot_layers.finite) {
    cx.require(!got.ok && got.code == errc::non_finite, "a NaN/infinity in a pivot layer must be non_finite: ", got);
    ++stats().non_finite;
    return got;
  }
  const bool pivots_exact = exact_sums(before.pivot_layers, c.queries, c.heads);
  const bool overflow = may_overflow(before.pivot_layers, c.queries, c.heads);
  // The reference's pivots tell which rows/columns of the complementary
  // layer are read (exactly so when pivots_exact). It runs on finite pivot
  // layers whose sums cannot overflow only: its sorts need numbers.
  fpref::result ref_adaptive;
  if (!overflow) ref_adaptive = fpref::select(x, reference_config(c, r, 0, 0));
  const std::vector<token_t> ref_pivots(ref_adaptive.pivotal.begin(), ref_adaptive.pivotal.end());
  const reads rd = classify(c, r, x, &ref_pivots);
  magnitudes all = rd.pivot_layers;
  if (rd.region.any) all.hi = std::max(all.hi, rd.region.hi), all.lo = std::min(all.lo, rd.region.lo), all.any = true;
  all.finite = rd.region.finite;
  const bool exact = pivots_exact && exact_sums(all, c.queries, c.heads);
  const bool overflow_any = overflow || may_overflow(all, c.queries, c.heads);

  if (pivots_exact) {  // P is decided exactly, so the read region is known
    if (!rd.region.finite) {
      cx.require(!got.ok && got.code == errc::non_finite, "a NaN/infinity in the complementary layer's pivot rows/columns must be non_finite: ", got);
      ++stats().non_finite;
      return got;
    }
    if (!rd.lenient_non_finite && !overflow_any)
      cx.require(got.ok, "valid finite input rejected: ", got);
  } else {
    const bool complementary_clean = rd.region.finite && !rd.lenient_non_finite && !rd.other_non_finite;
    if (complementary_clean && !overflow_any) cx.require(got.ok, "valid finite input rejected: ", got);
  }
  if (!got.ok) {  // allowed above; it must be the data's fault
    ++stats().non_finite;
    cx.require(got.code == errc::non_finite, "unexpected error on valid options: ", got);
    cx.require(overflow_any || !rd.region.finite || rd.lenient_non_finite || rd.other_non_finite, "non_finite without a non-finite value read: ", got);
    return got;
  }
  check_structure(cx, got.sel, r.first, r.last, m, "select");
  ++stats().accepted;
  check_scaling(cx, c, x);

  // The adaptive answer and the budget relations around it.
  const outcome adaptive =
      c.budget_kind == 0 ? got : call([&] { return fp::select(v, fp::budget::adaptive(), c.o); });
  cx.require(adaptive.ok, "adaptive failed where ", c.budget_kind == 1 ? "count" : "ratio", " succeeded: ", adaptive);
  check_structure(cx, adaptive.sel, r.first, r.last, -1, "adaptive");
  // Whatever its pivots, the rows/columns it read for them were finite.
  const reads lib = classify(c, r, x, &adaptive.sel.pivotal);
  cx.require(lib.region.finite, "select succeeded although the maps it reads for its pivots hold a NaN/infinity");
  check_budget_relations(cx, v, c, r, adaptive.sel);
  const auto predicted = fp::kept_tokens(c.budget(), c.queries, c.o);
  cx.require(predicted.has_value() == (m >= 0) && (m < 0 || *predicted == m), "kept_tokens disagrees with the budget");
  if (!overflow_any) {  // (sums that overflow: the stages may reject what select tolerates)
    std::vector<std::vector<double>> degrees;
    for (index_t l : r.pivot_layers) degrees.push_back(fp::contribution_degree(v, l));
    check_given_pivots(cx, v, c, r, x, degrees);
  }

  if (exact && !overflow_any) {
    ++stats().exact;
    const double value = c.budget_kind == 1 ? static_cast<double>(std::min(c.count, r.candidates)) : c.ratio;
    const fp::selection want = from_reference(fpref::select(x, reference_config(c, r, c.budget_kind, value)));
    cx.require(got.sel == want, "differs from the reference on exact input:\n  library   ", got.sel, "\n  reference ", want);
    cx.require(adaptive.sel == from_reference(ref_adaptive), "adaptive differs from the reference on exact input");
    // The same values as contiguous doubles: same answer (layout and type do not matter).
    const fp::attention_view<const double> dv(x.data(), c.layers, c.heads, c.queries);
    const outcome twin = call([&] { return fp::select(dv, c.budget(), c.o); });
    cx.require(same(twin, got), "contiguous double maps of the same values differ: ", twin);
    check_stages(cx, v, c, r, x, got.sel);
  }
  return got;
}

// ---------------------------------------------------------------------------
// Driver.

template <class E>
void run_typed(const fuzz_case& c) {
  const context cx(c);
  const std::set<errc> bad = expected_errors(c);
  const bool sane_shape = c.layers >= 1 && c.heads >= 1 && c.queries >= 1 && c.keys >= 1 && c.queries <= max_tokens &&
                          c.keys <= max_tokens + 4;
  const index_t items = c.batched ? std::max<index_t>(c.batch, 0) : 1;

  // The maps: a physical buffer in the fuzzed layout (NaN in its padding),
  // and the logical values as the library will read them.
  const bool square = c.queries == c.keys;
  const std::array<index_t, 4> ext{c.layers, c.heads, c.queries, c.keys};
  const layout lay = sane_shape ? (square ? make_layout(c.layout & 7, ext, c.seed) : make_layout(0, ext, 0)) : layout{};
  const index_t item_stride = sane_shape ? lay.size + (c.layout >= 8 ? 3 : 0) : 0;
  std::vector<E> buffer(static_cast<std::size_t>(std::max<index_t>(1, items * item_stride)), store<E>(nan_v));
  std::vector<std::vector<double>> logical(static_cast<std::size_t>(items));
  if (sane_shape) {
    std::vector<double> x;
    for (index_t b = 0; b < items; ++b) {
      if (square)
        fill_item(c, static_cast<std::uint64_t>(b), x);
      else
        x.assign(c.elements(), 0.25);
      E* item = buffer.data() + b * item_stride + lay.base;
      std::size_t k = 0;
      for (index_t l = 0; l < c.layers; ++l)
        for (index_t h = 0; h < c.heads; ++h)
          for (index_t i = 0; i < c.queries; ++i)
            for (index_t j = 0; j < c.keys; ++j, ++k)
              item[l * lay.strides[0] + h * lay.strides[1] + i * lay.strides[2] + j * lay.strides[3]] = store<E>(x[k]);
      auto& back = logical[static_cast<std::size_t>(b)];  // read back: aliasing (stride 0) and rounding included
      back.resize(x.size());
      k = 0;
      for (index_t l = 0; l < c.layers; ++l)
        for (index_t h = 0; h < c.heads; ++h)
          for (index_t i = 0; i < c.queries; ++i)
            for (index_t j = 0; j < c.keys; ++j, ++k)
              back[k] = widen(item[l * lay.strides[0] + h * lay.strides[1] + i * lay.strides[2] + j * lay.strides[3]]);
    }
  }
  const E* data = c.shape == anomaly::null_data ? nullptr : buffer.data() + lay.base;
  const std::array<index_t, 4> strides = sane_shape ? lay.strides : std::array<index_t, 4>{0, 0, 0, 1};

  auto check_rejected = [&](const outcome& got) {
    cx.require(!got.ok, "accepted an invalid input (expected one of ", bad.size(), " errors, first ", fp::to_string(*bad.begin()), "): ", got);
    cx.require(bad.count(got.code) == 1, "wrong error code ", fp::to_string(got.code), ", expected ", fp::to_string(*bad.begin()), ": ", got.message);
  };

  // kept_tokens validates tokens, options and budget the same way.
  {
    const std::set<errc> kept_bad = expected_kept_errors(c);
    bool threw = false;
    try {
      (void)fp::kept_tokens(c.budget(), c.queries, c.o);
    } catch (const fp::error& e) {
      threw = true;
      cx.require(kept_bad.count(e.code()) == 1, "kept_tokens: unexpected code ", fp::to_string(e.code()));
    }
    cx.require(threw == !kept_bad.empty(), "kept_tokens: threw = ", threw, ", expected ", !kept_bad.empty());
  }
  cx.require(sane_shape || !bad.empty(), "fuzzer: an unchecked shape passes validation");

  if (!c.batched) {
    const fp::attention_view<const E> v(data, ext, strides);
    if (!bad.empty()) {
      check_rejected(select_both(cx, v, c.budget(), c.o, c.try_first));
      ++stats().rejected;
      return;
    }
    check_item(cx, v, c, logical[0]);
    return;
  }

  // A batch: each item on its own thresholds, exactly as if selected alone.
  const std::array<index_t, 5> ext5{c.batch, c.layers, c.heads, c.queries, c.keys};
  const std::array<index_t, 5> strides5{item_stride, strides[0], strides[1], strides[2], strides[3]};
  const fp::batched_attention_view<const E> bv(data, ext5, strides5);
  std::vector<fp::selection> got;
  fp::status st;
  bool threw = false;
  errc thrown = errc::ok;
  try {
    got = fp::select(bv, c.budget(), c.o);
  } catch (const fp::error& e) {
    threw = true;
    thrown = e.code();
  }
  std::vector<fp::selection> got2{fp::selection{}};
  st = fp::try_select(bv, c.budget(), c.o, got2);
  cx.require(threw == !st.ok() && (!threw || thrown == st.code()), "batched select and try_select disagree");
  if (!st.ok()) cx.require(got2.empty(), "batched try_select failed but left selections");
  else cx.require(got2 == got, "batched select and try_select give different selections");
  ++stats().batched;
  if (!bad.empty()) {
    cx.require(!st.ok() && bad.count(st.code()) == 1, "batch: invalid input not rejected with an expected code: ", fp::to_string(st.code()));
    ++stats().rejected;
    return;
  }
  cx.require(static_cast<index_t>(got2.size()) == (st.ok() ? items : 0), "batch: wrong number of selections");
  std::vector<outcome> alone;
  for (index_t b = 0; b < items; ++b) alone.push_back(check_item(cx, bv[b], c, logical[static_cast<std::size_t>(b)]));
  for (index_t b = 0; b < items; ++b) {
    const outcome& one = alone[static_cast<std::size_t>(b)];
    if (!one.ok) {  // the batch fails at its first failing item, naming it
      cx.require(!st.ok() && st.code() == one.code, "batch: item ", b, " fails alone but not in the batch");
      cx.require(st.message().find(text("batch item ", b, ": ")) != std::string::npos, "batch: the error does not name item ", b, ": ", st.message());
      return;
    }
    if (st.ok())
      cx.require(got2[static_cast<std::size_t>(b)] == one.sel, "batch item ", b, " differs from selecting it alone");
  }
  cx.require(st.ok(), "batch failed although every item succeeds alone: ", st.message());
}

/// Decodes and checks one input; throws check_failed on a violated property.
inline void run_one(const std::uint8_t* data, std::size_t size) {
  const fuzz_case c = decode(data, size);
  ++stats().inputs;
  switch (c.type) {
    case element::f32: run_typed<float>(c); break;
    case element::f64: run_typed<double>(c); break;
    case element::f16: run_typed<Eigen::half>(c); break;
    case element::bf16: run_typed<Eigen::bfloat16>(c); break;
  }
}

}  // namespace fpfuzz

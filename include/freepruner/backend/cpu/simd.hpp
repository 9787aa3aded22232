#pragma once
// The CPU backend's inner loop: acc[j] += (((0 + x_0[j]) + x_1[j]) + ...) over a
// block of rows, in double. Scalar, SSE2 (the x86-64 baseline) and AVX2+F16C
// (chosen at run time) paths add in the same order, so they agree to the bit;
// the AVX2 fp16 path sums in float only where that sum is exact, which gives
// the same doubles. The AVX-512 level (AVX-512F) is used by the Q/K kernels
// (qk_kernels.hpp); the loops here run their AVX2 path on it.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../detail/eigen.hpp"

#include "../../config.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FREEPRUNER_NO_SIMD)
#define FREEPRUNER_X86_SIMD 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define FREEPRUNER_X86_SIMD 0
#endif

namespace freepruner {
namespace detail {
namespace cpu {

/// Rows summed in registers before touching the accumulator. The rows of a
/// block must lie far apart: two neighbouring rows read in step stall the
/// hardware prefetcher (worse than one row at a time).
inline constexpr int row_block = 4;

/// Rows of `long_row` elements or more (and fp16 rows) are read 8 at a time
/// in the degree pass, long ones also requested into L2 2 KB ahead, so rows
/// from DRAM read near the speed of a plain read. Shorter float rows keep 4
/// streams (8 contend for the line-fill buffers).
inline constexpr index_t long_row = 1536;
inline constexpr int long_row_block = 8;

template <class E>
inline double to_double(E x) noexcept {
  return static_cast<double>(static_cast<std::conditional_t<std::is_same<E, double>::value, double, float>>(x));
}

/// Instruction sets the kernels can use, best last.
enum class simd_level : int { scalar = 0, sse2 = 1, avx2 = 2, avx512 = 3 };

#if FREEPRUNER_X86_SIMD
// CPUID rather than __builtin_cpu_supports, which knows no "f16c" in clang 14:
// AVX2 and F16C in the CPU, and YMM state saved by the OS (XGETBV).
inline bool cpu_has_avx2_f16c() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  if (!(c & bit_OSXSAVE) || !(c & bit_AVX) || !(c & bit_F16C)) return false;
  unsigned xcr0 = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  if ((xcr0 & 6u) != 6u) return false;  // XMM and YMM registers enabled
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (b & bit_AVX2) != 0;
}

// AVX-512F in the CPU and the opmask and ZMM state saved by the OS.
inline bool cpu_has_avx512f() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned xcr0 = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  if ((xcr0 & 0xe6u) != 0xe6u) return false;  // XMM, YMM, opmask, ZMM 0-15 upper halves, ZMM 16-31
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (b & bit_AVX512F) != 0;
}
#endif

inline simd_level detected_simd() noexcept {
#if FREEPRUNER_X86_SIMD
  static const simd_level level = !cpu_has_avx2_f16c() ? simd_level::sse2
                                  : cpu_has_avx512f()   ? simd_level::avx512
                                                        : simd_level::avx2;
  return level;
#else
  return simd_level::scalar;
#endif
}

/// A cap on the level used (tests compare the paths); -1: no cap.
inline std::atomic<int>& simd_cap() noexcept {
  static std::atomic<int> cap{-1};
  return cap;
}

inline simd_level active_simd() noexcept {
  const int cap = simd_cap().load(std::memory_order_relaxed);
  const simd_level best = detected_simd();
  return cap >= 0 && cap < static_cast<int>(best) ? static_cast<simd_level>(cap) : best;
}

/// Portable path, any key stride.
template <class E>
inline void add_rows_scalar(const E* const* rows, int count, index_t from, index_t to, index_t stride, double* acc) {
  for (index_t j = from; j < to; ++j) {
    double s = 0;
    for (int r = 0; r < count; ++r) s += to_double(rows[r][j * stride]);
    acc[j] += s;
  }
}

#if FREEPRUNER_X86_SIMD

// Rows are read side by side; prefetching each 512 bytes ahead lets the pass
// run at the speed of a plain read (without: 1.1-1.15x). Address arithmetic
// on integers: the target may lie past the row's end (prefetches never fault).
inline void prefetch_ahead(const void* p) noexcept {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) + 512));
}
inline void prefetch_far(const void* p) noexcept {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) + 2048), 0, 2);
}

// Four elements of row r at column j, widened to two pairs of doubles.
inline void load4(const float* p, __m128d& lo, __m128d& hi) noexcept {
  const __m128 x = _mm_loadu_ps(p);
  lo = _mm_cvtps_pd(x);
  hi = _mm_cvtps_pd(_mm_movehl_ps(x, x));
}
inline void load4(const double* p, __m128d& lo, __m128d& hi) noexcept {
  lo = _mm_loadu_pd(p);
  hi = _mm_loadu_pd(p + 2);
}
inline void load4(const Eigen::bfloat16* p, __m128d& lo, __m128d& hi) noexcept {
  // bfloat16 is the top half of a float: widen by a 16-bit shift.
  const __m128i bits = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128 x = _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), bits));
  lo = _mm_cvtps_pd(x);
  hi = _mm_cvtps_pd(_mm_movehl_ps(x, x));
}

template <class E>
inline void add_rows_sse2(const E* const* rows, int count, index_t n, double* acc) {
  index_t j = 0;
  if constexpr (!std::is_same<E, Eigen::half>::value)  // half needs F16C, else the scalar path
    for (; j + 4 <= n; j += 4) {
      __m128d lo = _mm_setzero_pd(), hi = _mm_setzero_pd();
      for (int r = 0; r < count; ++r) {
        __m128d a, b;
        prefetch_ahead(rows[r] + j);
        load4(rows[r] + j, a, b);
        lo = _mm_add_pd(lo, a);
        hi = _mm_add_pd(hi, b);
      }
      _mm_storeu_pd(acc + j, _mm_add_pd(_mm_loadu_pd(acc + j), lo));
      _mm_storeu_pd(acc + j + 2, _mm_add_pd(_mm_loadu_pd(acc + j + 2), hi));
    }
  add_rows_scalar(rows, count, j, n, 1, acc);
}

// Eight elements of a row, widened to two quads of doubles.
[[gnu::target("avx2,f16c")]] inline void load8(const float* p, __m256d& lo, __m256d& hi) noexcept {
  const __m256 x = _mm256_loadu_ps(p);
  lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
  hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
}
[[gnu::target("avx2,f16c")]] inline void load8(const double* p, __m256d& lo, __m256d& hi) noexcept {
  lo = _mm256_loadu_pd(p);
  hi = _mm256_loadu_pd(p + 4);
}
[[gnu::target("avx2,f16c")]] inline void load8(const Eigen::half* p, __m256d& lo, __m256d& hi) noexcept {
  const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
  hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
}
[[gnu::target("avx2,f16c")]] inline void load8(const Eigen::bfloat16* p, __m256d& lo, __m256d& hi) noexcept {
  const __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256 x = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
  hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
}

// Four elements widened to doubles, the load folded into the conversion
// (no 256-bit load and lane extract: the pass is bound by these µops when
// the maps sit in L3).
[[gnu::target("avx2,f16c")]] inline __m256d widen4(const float* p) noexcept { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
[[gnu::target("avx2,f16c")]] inline __m256d widen4(const double* p) noexcept { return _mm256_loadu_pd(p); }

// One 64-byte line of float (two of double) per row and step, so each row
// gets one prefetch per line.
template <bool Far, class E>
[[gnu::target("avx2,f16c")]] inline void add_rows_avx2_wide(const E* const* rows, int count, index_t n, double* acc,
                                                            index_t& at) {
  index_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (int r = 0; r < count; ++r) {
      const E* p = rows[r] + j;
      prefetch_ahead(p);
      if constexpr (sizeof(E) == 8) prefetch_ahead(p + 8);
      if constexpr (Far) {
        prefetch_far(p);
        if constexpr (sizeof(E) == 8) prefetch_far(p + 8);
      }
      s0 = _mm256_add_pd(s0, widen4(p));
      s1 = _mm256_add_pd(s1, widen4(p + 4));
      s2 = _mm256_add_pd(s2, widen4(p + 8));
      s3 = _mm256_add_pd(s3, widen4(p + 12));
    }
    _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), s0));
    _mm256_storeu_pd(acc + j + 4, _mm256_add_pd(_mm256_loadu_pd(acc + j + 4), s1));
    _mm256_storeu_pd(acc + j + 8, _mm256_add_pd(_mm256_loadu_pd(acc + j + 8), s2));
    _mm256_storeu_pd(acc + j + 12, _mm256_add_pd(_mm256_loadu_pd(acc + j + 12), s3));
  }
  at = j;
}

// Columns j..j+7 of the rows, summed in double.
template <class E>
[[gnu::target("avx2,f16c")]] inline void add8(const E* const* rows, int count, index_t j, double* acc) noexcept {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (int r = 0; r < count; ++r) {
    __m256d a, b;
    prefetch_ahead(rows[r] + j);
    load8(rows[r] + j, a, b);
    lo = _mm256_add_pd(lo, a);
    hi = _mm256_add_pd(hi, b);
  }
  _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), lo));
  _mm256_storeu_pd(acc + j + 4, _mm256_add_pd(_mm256_loadu_pd(acc + j + 4), hi));
}

// fp16 values are multiples of 2^-24, so a sum of non-negative ones below 1
// is exact in float: the block of rows is summed in float and widened once,
// the very double the double sum gives. Where a value is negative or not
// finite, or a sum reaches 1 (an attention sink), those 8 columns are summed
// in double. Eight rows by eight columns: 10 conversions instead of 24 (they
// bound fp16).
template <bool Far>
[[gnu::target("avx2,f16c")]] inline void add_rows_avx2_half(const Eigen::half* const* rows, int count, index_t n,
                                                            double* acc, index_t& at) {
  const __m256 one = _mm256_set1_ps(1.0f);
  index_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, sign = s0;
    for (int r = 0; r < count; ++r) {
      const Eigen::half* p = rows[r] + j;
      prefetch_ahead(p);
      if constexpr (Far) prefetch_far(p);
      const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      const __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
      const __m256 x2 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
      const __m256 x3 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 24)));
      s0 = _mm256_add_ps(s0, x0);
      s1 = _mm256_add_ps(s1, x1);
      s2 = _mm256_add_ps(s2, x2);
      s3 = _mm256_add_ps(s3, x3);
      sign = _mm256_or_ps(sign, _mm256_or_ps(_mm256_or_ps(x0, x1), _mm256_or_ps(x2, x3)));
    }
    const bool negative = _mm256_movemask_ps(sign) != 0;
    const __m256 sums[4] = {s0, s1, s2, s3};
    for (int k = 0; k < 4; ++k) {
      double* a = acc + j + 8 * k;
      // Ordered compare: a NaN sum fails it too.
      if (negative || _mm256_movemask_ps(_mm256_cmp_ps(sums[k], one, _CMP_LT_OQ)) != 0xff) {
        add8(rows, count, j + 8 * k, acc);
        continue;
      }
      _mm256_storeu_pd(a, _mm256_add_pd(_mm256_loadu_pd(a), _mm256_cvtps_pd(_mm256_castps256_ps128(sums[k]))));
      _mm256_storeu_pd(a + 4, _mm256_add_pd(_mm256_loadu_pd(a + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(sums[k], 1))));
    }
  }
  at = j;
}

template <class E>
[[gnu::target("avx2,f16c")]] inline void add_rows_avx2(const E* const* rows, int count, index_t n, double* acc) {
  index_t j = 0;
  if constexpr (std::is_same<E, float>::value || std::is_same<E, double>::value) {
    if (n >= long_row)
      add_rows_avx2_wide<true>(rows, count, n, acc, j);
    else
      add_rows_avx2_wide<false>(rows, count, n, acc, j);
  } else if constexpr (std::is_same<E, Eigen::half>::value) {
    if (n >= long_row)
      add_rows_avx2_half<true>(rows, count, n, acc, j);
    else
      add_rows_avx2_half<false>(rows, count, n, acc, j);
  }
  for (; j + 8 <= n; j += 8) add8(rows, count, j, acc);
  add_rows_scalar(rows, count, j, n, 1, acc);
}

// The quickselect's partition (detail::select_kth) for double: per four
// values one compare, and one permutation that puts those below the pivot
// first; the vector is stored twice, at the front cursor and ending at the
// back cursor, into a scratch buffer that is then copied back.
struct lanes_table {
  alignas(32) std::int32_t index[16][8];
};
constexpr lanes_table make_lanes_table() {
  lanes_table t{};
  for (int m = 0; m < 16; ++m) {
    int o = 0;
    for (int pass = 0; pass < 2; ++pass)  // the lanes set in m (below), then the others
      for (int i = 0; i < 4; ++i)
        if (((m >> i) & 1) == (pass == 0 ? 1 : 0)) {
          t.index[m][o++] = 2 * i;
          t.index[m][o++] = 2 * i + 1;
        }
  }
  return t;
}
inline constexpr lanes_table below_first = make_lanes_table();

/// x[lo..hi) split at `pivot`; returns the start of the values >= pivot.
/// `tmp` holds hi - lo values.
[[gnu::target("avx2")]] inline std::size_t partition_avx2(double* x, std::size_t lo, std::size_t hi, double pivot,
                                                          double* tmp) noexcept {
  const __m256d p = _mm256_set1_pd(pivot);
  std::size_t front = 0, back = hi - lo, i = lo;
  for (; i + 8 <= hi; i += 4) {  // with 8 or more left, the two stores never overlap
    const __m256d v = _mm256_loadu_pd(x + i);
    const int below = _mm256_movemask_pd(_mm256_cmp_pd(v, p, _CMP_LT_OQ));
    const __m256i order = _mm256_load_si256(reinterpret_cast<const __m256i*>(below_first.index[below]));
    const __m256d split = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), order));
    const auto count = static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(below)));
    _mm256_storeu_pd(tmp + front, split);
    _mm256_storeu_pd(tmp + back - 4, split);
    front += count;
    back -= 4 - count;
  }
  for (; i < hi; ++i) {
    const double v = x[i];
    if (v < pivot)
      tmp[front++] = v;
    else
      tmp[--back] = v;
  }
  std::memcpy(x + lo, tmp, (hi - lo) * sizeof(double));
  return lo + front;
}

// Step 3's loops over one score vector, once per pivot (each over M
// doubles; in scalar code they took as long as reading the pivot's rows).
// Every one is free of order across j, so all paths agree to the bit.

/// x[j] /= heads for j in 0..n-1; whether every result is finite.
[[gnu::target("avx2")]] inline bool divide_finite_avx2(double* x, index_t n, index_t heads) noexcept {
  // A power of two divides exactly as its reciprocal multiplies (and vdivpd is slow).
  const bool exact = (heads & (heads - 1)) == 0;
  const auto d = static_cast<double>(heads);
  const __m256d by = _mm256_set1_pd(exact ? 1.0 / d : d), zero = _mm256_setzero_pd();
  __m256d bad = zero;
  index_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d v = _mm256_loadu_pd(x + j), q = exact ? _mm256_mul_pd(v, by) : _mm256_div_pd(v, by);
    bad = _mm256_or_pd(bad, _mm256_cmp_pd(_mm256_sub_pd(q, q), zero, _CMP_NEQ_UQ));  // inf - inf, nan: nan
    _mm256_storeu_pd(x + j, q);
  }
  bool finite = _mm256_movemask_pd(bad) == 0;
  for (; j < n; ++j) {
    x[j] /= d;
    finite = finite && std::isfinite(x[j]);
  }
  return finite;
}

/// lo/hi widened to x[from..to); affinity[j] += x[j]; x[from..to) copied to `copy`.
[[gnu::target("avx2")]] inline void scan_scores_avx2(const double* x, index_t from, index_t to, double* affinity,
                                                     double* copy, double& lo, double& hi) noexcept {
  __m256d l = _mm256_set1_pd(lo), h = _mm256_set1_pd(hi);
  index_t j = from;
  for (; j + 4 <= to; j += 4) {
    const __m256d v = _mm256_loadu_pd(x + j);
    l = _mm256_min_pd(l, v);
    h = _mm256_max_pd(h, v);
    _mm256_storeu_pd(affinity + j, _mm256_add_pd(_mm256_loadu_pd(affinity + j), v));
    _mm256_storeu_pd(copy + (j - from), v);
  }
  alignas(32) double ls[4], hs[4];
  _mm256_store_pd(ls, l);
  _mm256_store_pd(hs, h);
  for (int k = 0; k < 4; ++k) {
    lo = ls[k] < lo ? ls[k] : lo;
    hi = hs[k] > hi ? hs[k] : hi;
  }
  for (; j < to; ++j) {
    lo = x[j] < lo ? x[j] : lo;
    hi = x[j] > hi ? x[j] : hi;
    affinity[j] += x[j];
    copy[j - from] = x[j];
  }
}

// Four comparison bits as four bytes of 0 or 1 (little-endian).
struct byte_masks {
  std::uint32_t bytes[16];
};
constexpr byte_masks make_byte_masks() {
  byte_masks t{};
  for (unsigned m = 0; m < 16; ++m)
    for (unsigned i = 0; i < 4; ++i) t.bytes[m] |= ((m >> i) & 1u) << (8 * i);
  return t;
}
inline constexpr byte_masks bits_as_bytes = make_byte_masks();

/// out[j] |= (x[j] > fence) for j in from..to-1.
[[gnu::target("avx2")]] inline void mark_above_avx2(const double* x, index_t from, index_t to, double fence,
                                                    unsigned char* out) noexcept {
  const __m256d f = _mm256_set1_pd(fence);
  index_t j = from;
  for (; j + 4 <= to; j += 4) {
    const int above = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + j), f, _CMP_GT_OQ));
    std::uint32_t bytes;
    std::memcpy(&bytes, out + j, 4);
    bytes |= bits_as_bytes.bytes[above];
    std::memcpy(out + j, &bytes, 4);
  }
  for (; j < to; ++j) out[j] |= static_cast<unsigned char>(x[j] > fence);
}

#endif  // FREEPRUNER_X86_SIMD

/// Hints that `count` elements from `p` will be read soon.
template <class E>
inline void prefetch(const E* p, index_t count) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  const auto* bytes = reinterpret_cast<const char*>(p);
  const auto size = static_cast<std::size_t>(count) * sizeof(E);
  for (std::size_t off = 0; off < size; off += 64) __builtin_prefetch(bytes + off);
#else
  (void)p;
  (void)count;
#endif
}

/// x[j] /= heads for j in 0..n-1; whether every result is finite.
inline bool divide_finite(double* x, index_t n, index_t heads) noexcept {
#if FREEPRUNER_X86_SIMD
  if (active_simd() >= simd_level::avx2) return divide_finite_avx2(x, n, heads);
#endif
  bool finite = true;
  for (index_t j = 0; j < n; ++j) {
    x[j] /= static_cast<double>(heads);
    finite = finite && std::isfinite(x[j]);
  }
  return finite;
}

/// acc[j] += sum over rows[0..count) of row[j * stride], j in 0..n-1.
template <class E>
inline void add_rows(const E* const* rows, int count, index_t n, index_t stride, double* acc) {
#if FREEPRUNER_X86_SIMD
  if (stride == 1) {
    switch (active_simd()) {
      case simd_level::avx512:
      case simd_level::avx2: return add_rows_avx2(rows, count, n, acc);
      case simd_level::sse2: return add_rows_sse2(rows, count, n, acc);
      case simd_level::scalar: break;
    }
  }
#endif
  add_rows_scalar(rows, count, 0, n, stride, acc);
}

}  // namespace cpu
}  // namespace detail
}  // namespace freepruner

#pragma once
// The Q/K path's float kernels (qk.hpp): a block of query rows against all
// keys of a head, as softmax rows. Per group of 8 query rows, the logits
// S = q_scaled . k of every key (in L1 as they are made), then per row the
// max, exp(S - max), their sum and the multiply by 1/sum.
//
// The paths, chosen at run time (simd.hpp's active_simd()): scalar, SSE2,
// AVX2 and AVX-512F. They give the same floats, bit for bit, because each
// performs the same roundings in the same order:
//  - a logit is ((0 + q_0 k_0) + q_1 k_1) + ... in dimension order, each
//    product rounded before its add: no fused multiply-add anywhere
//    (AVX-512F implies FMA, and GCC fuses a multiply and an add it sees
//    together; keep() hides every product from that);
//  - the exponential is one range reduction and polynomial (Cephes' expf)
//    of products and sums in a fixed order, elementwise;
//  - a row's sum has 16 lanes, lane l adding the entries j = l mod 16 in
//    order (SSE2 holds the lanes in four registers, AVX2 in two), reduced
//    by one fixed tree; the row is padded with -inf to a multiple of 16
//    keys, whose exponentials are 0;
//  - the max is exact whatever its order.
// A row's floats therefore depend on its query and the keys only: not on
// the path, the block or where the row sits in it.
//
// Layouts: keys are packed per head as panels of 16 keys, [panel][dim][16]
// (keys past N are zero); the queries of a block are [row][dim], already
// multiplied by the scale, their count padded with zero rows to a multiple
// of 8; the tile's rows are `ld` floats (a multiple of 16) apart, 64-byte
// aligned, as is the key panel buffer.

#include <cstdint>
#include <cstring>
#include <limits>

#include "simd.hpp"

namespace freepruner {
namespace detail {
namespace cpu {
namespace qk {

/// Keys per packed panel, and the lanes of a row's sum.
inline constexpr index_t panel_keys = 16;
/// Query rows per group: a block's rows are padded to a multiple.
inline constexpr index_t group_rows = 8;

// Cephes' expf: x = n ln2 + r (ln2 in two parts), e^r by a degree-7
// polynomial, times 2^n built in the exponent bits. Inputs below `low` give 0.
inline constexpr float exp_log2e = 1.44269504088896341f;
inline constexpr float exp_round = 12582912.0f;  // 1.5 * 2^23: x + it rounds x to an integer
inline constexpr float exp_ln2_hi = 0.693359375f;
inline constexpr float exp_ln2_lo = -2.12194440e-4f;
inline constexpr float exp_low = -87.0f;  // e^-87 ~ 1.6e-38: below it, 0 (not subnormals)
inline constexpr float exp_c[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                   4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

/// Rows of `ld` floats needed to hold n keys.
inline index_t padded_keys(index_t n) noexcept { return (n + panel_keys - 1) / panel_keys * panel_keys; }
/// Query rows a block of `count` rows is computed with.
inline index_t grouped_rows(index_t count) noexcept { return (count + group_rows - 1) / group_rows * group_rows; }

/// Packs keys [n][d] (read through key(j, t)) as panels, kt = ld * d
/// floats; ahead(j) is called before key j is read, ahead_keys keys early
/// (encoders' keys lie a page or more apart: the prefetcher does not follow).
inline constexpr index_t ahead_keys = 32;
template <class Key, class Ahead>
inline void pack_keys(index_t n, index_t d, float* kt, Key key, Ahead ahead) {
  const index_t ld = padded_keys(n);
  for (index_t j = 0; j < ahead_keys && j < n; ++j) ahead(j);
  for (index_t p = 0; p < ld / panel_keys; ++p) {
    float* panel = kt + p * d * panel_keys;
    for (index_t l = 0; l < panel_keys; ++l) {
      const index_t j = p * panel_keys + l;
      if (j + ahead_keys < n) ahead(j + ahead_keys);
      if (j < n)
        for (index_t t = 0; t < d; ++t) panel[t * panel_keys + l] = key(j, t);
      else
        for (index_t t = 0; t < d; ++t) panel[t * panel_keys + l] = 0.0f;
    }
  }
}

#if FREEPRUNER_X86_SIMD
/// pack_keys for float keys whose d values are contiguous (row(j) points at
/// key j's): 4 keys by 4 dimensions at a time, transposed in registers (a
/// copy: the same floats as pack_keys).
template <class Row, class Ahead>
inline void pack_key_rows(index_t n, index_t d, float* kt, Row row, Ahead ahead) {
  const index_t whole = n / 4 * 4, d4 = d / 4 * 4;
  for (index_t j = 0; j < ahead_keys && j < n; ++j) ahead(j);
  for (index_t j = 0; j < whole; j += 4) {
    for (index_t a = j + ahead_keys; a < j + 4 + ahead_keys && a < n; ++a) ahead(a);
    const float *r0 = row(j), *r1 = row(j + 1), *r2 = row(j + 2), *r3 = row(j + 3);
    float* out = kt + (j / panel_keys) * d * panel_keys + j % panel_keys;
    for (index_t t = 0; t < d4; t += 4) {
      __m128 x0 = _mm_loadu_ps(r0 + t), x1 = _mm_loadu_ps(r1 + t), x2 = _mm_loadu_ps(r2 + t), x3 = _mm_loadu_ps(r3 + t);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      _mm_storeu_ps(out + t * panel_keys, x0);
      _mm_storeu_ps(out + (t + 1) * panel_keys, x1);
      _mm_storeu_ps(out + (t + 2) * panel_keys, x2);
      _mm_storeu_ps(out + (t + 3) * panel_keys, x3);
    }
    for (index_t t = d4; t < d; ++t) {
      out[t * panel_keys] = r0[t];
      out[t * panel_keys + 1] = r1[t];
      out[t * panel_keys + 2] = r2[t];
      out[t * panel_keys + 3] = r3[t];
    }
  }
  for (index_t j = whole; j < padded_keys(n); ++j) {
    float* out = kt + (j / panel_keys) * d * panel_keys + j % panel_keys;
    for (index_t t = 0; t < d; ++t) out[t * panel_keys] = j < n ? row(j)[t] : 0.0f;
  }
}
#endif

// ---------------------------------------------------------------- scalar

/// A product kept apart from the add that follows it (no contraction).
inline float keep(float x) noexcept {
#if FREEPRUNER_X86_SIMD
  __asm__("" : "+x"(x));
#endif
  return x;
}

inline float exp_scalar(float x) noexcept {
  const float t = keep(x * exp_log2e) + exp_round;
  const float n = t - exp_round;
  float r = x - keep(n * exp_ln2_hi);
  r = r - keep(n * exp_ln2_lo);
  float p = exp_c[0];
  for (int k = 1; k < 6; ++k) p = keep(p * r) + exp_c[k];
  const float y = (keep(p * keep(r * r)) + r) + 1.0f;
  std::uint32_t tb, rb;
  std::memcpy(&tb, &t, 4);
  std::memcpy(&rb, &exp_round, 4);
  const std::uint32_t bits = (tb - rb + 127u) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, 4);
  return x < exp_low ? 0.0f : keep(y * two_n);
}

// A row's sum: 16 lanes to 8, 4, then ((l0 + l2) + (l1 + l3)).
inline float reduce_lanes(const float* lane16) noexcept {
  float a[8];
  for (int l = 0; l < 8; ++l) a[l] = lane16[l] + lane16[l + 8];
  for (int l = 0; l < 4; ++l) a[l] = a[l] + a[l + 4];
  return (a[0] + a[2]) + (a[1] + a[3]);
}

inline void set_padding(float* row, index_t n, index_t ld) noexcept {
  for (index_t j = n; j < ld; ++j) row[j] = -std::numeric_limits<float>::infinity();
}

/// 8 x ld logits of q's 8 rows against the packed keys.
inline void logits_scalar(const float* q, index_t d, const float* kt, index_t ld, float* tile) {
  for (index_t i = 0; i < group_rows; ++i)
    for (index_t p = 0; p < ld / panel_keys; ++p) {
      const float* panel = kt + p * d * panel_keys;
      float acc[panel_keys] = {};
      for (index_t t = 0; t < d; ++t)
        for (index_t l = 0; l < panel_keys; ++l) acc[l] = acc[l] + keep(q[i * d + t] * panel[t * panel_keys + l]);
      std::memcpy(tile + i * ld + p * panel_keys, acc, sizeof acc);
    }
}

inline float softmax_row_scalar(float* row, index_t n, index_t ld) {
  set_padding(row, n, ld);
  float top = row[0];
  for (index_t j = 1; j < ld; ++j) top = row[j] > top ? row[j] : top;
  float lanes[panel_keys] = {};
  for (index_t j = 0; j < ld; j += panel_keys)
    for (index_t l = 0; l < panel_keys; ++l) {
      const float e = exp_scalar(row[j + l] - top);
      row[j + l] = e;
      lanes[l] = lanes[l] + e;
    }
  const float sum = reduce_lanes(lanes), inv = 1.0f / sum;
  for (index_t j = 0; j < ld; ++j) row[j] = row[j] * inv;
  return sum;
}

#if FREEPRUNER_X86_SIMD

// ---------------------------------------------------------------- SSE2

inline __m128 keep(__m128 x) noexcept {
  __asm__("" : "+x"(x));
  return x;
}

inline __m128 exp_sse2(__m128 x) noexcept {
  const __m128 t = _mm_add_ps(keep(_mm_mul_ps(x, _mm_set1_ps(exp_log2e))), _mm_set1_ps(exp_round));
  const __m128 n = _mm_sub_ps(t, _mm_set1_ps(exp_round));
  __m128 r = _mm_sub_ps(x, keep(_mm_mul_ps(n, _mm_set1_ps(exp_ln2_hi))));
  r = _mm_sub_ps(r, keep(_mm_mul_ps(n, _mm_set1_ps(exp_ln2_lo))));
  __m128 p = _mm_set1_ps(exp_c[0]);
  for (int k = 1; k < 6; ++k) p = _mm_add_ps(keep(_mm_mul_ps(p, r)), _mm_set1_ps(exp_c[k]));
  const __m128 y = _mm_add_ps(_mm_add_ps(keep(_mm_mul_ps(p, keep(_mm_mul_ps(r, r)))), r), _mm_set1_ps(1.0f));
  const __m128i n_bits = _mm_sub_epi32(_mm_castps_si128(t), _mm_castps_si128(_mm_set1_ps(exp_round)));
  const __m128i bits = _mm_slli_epi32(_mm_add_epi32(n_bits, _mm_set1_epi32(127)), 23);
  const __m128 e = keep(_mm_mul_ps(y, _mm_castsi128_ps(bits)));
  return _mm_andnot_ps(_mm_cmplt_ps(x, _mm_set1_ps(exp_low)), e);
}

// q's 8 rows are first broadcast into `wide`, [t][row], 4 copies of each
// value: SSE2 has no broadcast from memory, and a shuffle per value competes
// with the arithmetic. Eight rows by 4 keys per step of t: each product
// loads its row's broadcast into a fresh register and multiplies it by the
// keys in place, so SSE's two-operand multiply needs no register copies
// (which, with the loads, would exceed the 6-wide dispatch).
inline void logits_sse2(const float* q, index_t d, const float* kt, index_t ld, float* tile, float* wide) {
  for (index_t t = 0; t < d; ++t)
    for (index_t r = 0; r < group_rows; ++r) _mm_store_ps(wide + 4 * (t * group_rows + r), _mm_set1_ps(q[r * d + t]));
  for (index_t p = 0; p < ld / panel_keys; ++p) {
    const float* panel = kt + p * d * panel_keys;
    for (index_t c = 0; c < panel_keys; c += 4) {
      __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
#pragma GCC unroll 2
      for (index_t t = 0; t < d; ++t) {
        const __m128 k = _mm_load_ps(panel + t * panel_keys + c);
        const float* w = wide + 4 * group_rows * t;
        a0 = _mm_add_ps(a0, keep(_mm_mul_ps(_mm_load_ps(w), k)));
        a1 = _mm_add_ps(a1, keep(_mm_mul_ps(_mm_load_ps(w + 4), k)));
        a2 = _mm_add_ps(a2, keep(_mm_mul_ps(_mm_load_ps(w + 8), k)));
        a3 = _mm_add_ps(a3, keep(_mm_mul_ps(_mm_load_ps(w + 12), k)));
        a4 = _mm_add_ps(a4, keep(_mm_mul_ps(_mm_load_ps(w + 16), k)));
        a5 = _mm_add_ps(a5, keep(_mm_mul_ps(_mm_load_ps(w + 20), k)));
        a6 = _mm_add_ps(a6, keep(_mm_mul_ps(_mm_load_ps(w + 24), k)));
        a7 = _mm_add_ps(a7, keep(_mm_mul_ps(_mm_load_ps(w + 28), k)));
      }
      float* s = tile + p * panel_keys + c;
      _mm_store_ps(s, a0);
      _mm_store_ps(s + ld, a1);
      _mm_store_ps(s + 2 * ld, a2);
      _mm_store_ps(s + 3 * ld, a3);
      _mm_store_ps(s + 4 * ld, a4);
      _mm_store_ps(s + 5 * ld, a5);
      _mm_store_ps(s + 6 * ld, a6);
      _mm_store_ps(s + 7 * ld, a7);
    }
  }
}

inline float softmax_row_sse2(float* row, index_t n, index_t ld) {
  set_padding(row, n, ld);
  __m128 m = _mm_load_ps(row);
  for (index_t j = 4; j < ld; j += 4) m = _mm_max_ps(m, _mm_load_ps(row + j));
  alignas(16) float lanes[panel_keys];
  _mm_store_ps(lanes, m);
  float top = lanes[0];
  for (int l = 1; l < 4; ++l) top = lanes[l] > top ? lanes[l] : top;
  const __m128 mx = _mm_set1_ps(top);
  __m128 s0 = _mm_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (index_t j = 0; j < ld; j += panel_keys) {
    const __m128 e0 = exp_sse2(_mm_sub_ps(_mm_load_ps(row + j), mx));
    const __m128 e1 = exp_sse2(_mm_sub_ps(_mm_load_ps(row + j + 4), mx));
    const __m128 e2 = exp_sse2(_mm_sub_ps(_mm_load_ps(row + j + 8), mx));
    const __m128 e3 = exp_sse2(_mm_sub_ps(_mm_load_ps(row + j + 12), mx));
    _mm_store_ps(row + j, e0);
    _mm_store_ps(row + j + 4, e1);
    _mm_store_ps(row + j + 8, e2);
    _mm_store_ps(row + j + 12, e3);
    s0 = _mm_add_ps(s0, e0);
    s1 = _mm_add_ps(s1, e1);
    s2 = _mm_add_ps(s2, e2);
    s3 = _mm_add_ps(s3, e3);
  }
  _mm_store_ps(lanes, s0);
  _mm_store_ps(lanes + 4, s1);
  _mm_store_ps(lanes + 8, s2);
  _mm_store_ps(lanes + 12, s3);
  const float sum = reduce_lanes(lanes);
  const __m128 inv = _mm_set1_ps(1.0f / sum);
  for (index_t j = 0; j < ld; j += 4) _mm_store_ps(row + j, _mm_mul_ps(_mm_load_ps(row + j), inv));
  return sum;
}

// ---------------------------------------------------------------- AVX2

[[gnu::target("avx2")]] inline __m256 keep(__m256 x) noexcept {
  __asm__("" : "+x"(x));
  return x;
}

[[gnu::target("avx2")]] inline __m256 exp_avx2(__m256 x) noexcept {
  const __m256 t = _mm256_add_ps(keep(_mm256_mul_ps(x, _mm256_set1_ps(exp_log2e))), _mm256_set1_ps(exp_round));
  const __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(exp_round));
  __m256 r = _mm256_sub_ps(x, keep(_mm256_mul_ps(n, _mm256_set1_ps(exp_ln2_hi))));
  r = _mm256_sub_ps(r, keep(_mm256_mul_ps(n, _mm256_set1_ps(exp_ln2_lo))));
  __m256 p = _mm256_set1_ps(exp_c[0]);
  for (int k = 1; k < 6; ++k) p = _mm256_add_ps(keep(_mm256_mul_ps(p, r)), _mm256_set1_ps(exp_c[k]));
  const __m256 y =
      _mm256_add_ps(_mm256_add_ps(keep(_mm256_mul_ps(p, keep(_mm256_mul_ps(r, r)))), r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(_mm256_set1_ps(exp_round))),
                       _mm256_set1_epi32(127)),
      23);
  const __m256 e = keep(_mm256_mul_ps(y, _mm256_castsi256_ps(bits)));
  return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(exp_low), _CMP_LT_OQ), e);
}

// One step of t for four rows (x[0], x[d], x[2d], x[3d]) by 16 keys k.
[[gnu::target("avx2")]] inline void step_avx2(const float* k, const float* x, index_t d, __m256& a0, __m256& a1,
                                              __m256& b0, __m256& b1, __m256& c0, __m256& c1, __m256& e0,
                                              __m256& e1) noexcept {
  const __m256 k0 = _mm256_load_ps(k), k1 = _mm256_load_ps(k + 8);
  const __m256 x0 = _mm256_broadcast_ss(x), x1 = _mm256_broadcast_ss(x + d);
  const __m256 x2 = _mm256_broadcast_ss(x + 2 * d), x3 = _mm256_broadcast_ss(x + 3 * d);
  a0 = _mm256_add_ps(a0, keep(_mm256_mul_ps(x0, k0)));
  a1 = _mm256_add_ps(a1, keep(_mm256_mul_ps(x0, k1)));
  b0 = _mm256_add_ps(b0, keep(_mm256_mul_ps(x1, k0)));
  b1 = _mm256_add_ps(b1, keep(_mm256_mul_ps(x1, k1)));
  c0 = _mm256_add_ps(c0, keep(_mm256_mul_ps(x2, k0)));
  c1 = _mm256_add_ps(c1, keep(_mm256_mul_ps(x2, k1)));
  e0 = _mm256_add_ps(e0, keep(_mm256_mul_ps(x3, k0)));
  e1 = _mm256_add_ps(e1, keep(_mm256_mul_ps(x3, k1)));
}

// Four rows by 16 keys per step of t, each panel used by the 8 rows in turn.
[[gnu::target("avx2")]] inline void logits_avx2(const float* q, index_t d, const float* kt, index_t ld, float* tile) {
  for (index_t p = 0; p < ld / panel_keys; ++p) {
    const float* panel = kt + p * d * panel_keys;
    for (index_t i = 0; i < group_rows; i += 4) {
      const float* qi = q + i * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
#pragma GCC unroll 2
      for (index_t t = 0; t < d; ++t) step_avx2(panel + t * panel_keys, qi + t, d, a0, a1, b0, b1, c0, c1, e0, e1);
      float* s = tile + i * ld + p * panel_keys;
      _mm256_store_ps(s, a0);
      _mm256_store_ps(s + 8, a1);
      _mm256_store_ps(s + ld, b0);
      _mm256_store_ps(s + ld + 8, b1);
      _mm256_store_ps(s + 2 * ld, c0);
      _mm256_store_ps(s + 2 * ld + 8, c1);
      _mm256_store_ps(s + 3 * ld, e0);
      _mm256_store_ps(s + 3 * ld + 8, e1);
    }
  }
}

[[gnu::target("avx2")]] inline float softmax_row_avx2(float* row, index_t n, index_t ld) {
  set_padding(row, n, ld);
  __m256 m = _mm256_load_ps(row);
  for (index_t j = 8; j < ld; j += 8) m = _mm256_max_ps(m, _mm256_load_ps(row + j));
  alignas(32) float lanes[panel_keys];
  _mm256_store_ps(lanes, m);
  float top = lanes[0];
  for (int l = 1; l < 8; ++l) top = lanes[l] > top ? lanes[l] : top;
  const __m256 mx = _mm256_set1_ps(top);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (index_t j = 0; j < ld; j += panel_keys) {
    const __m256 e0 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(row + j), mx));
    const __m256 e1 = exp_avx2(_mm256_sub_ps(_mm256_load_ps(row + j + 8), mx));
    _mm256_store_ps(row + j, e0);
    _mm256_store_ps(row + j + 8, e1);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
  }
  _mm256_store_ps(lanes, s0);
  _mm256_store_ps(lanes + 8, s1);
  const float sum = reduce_lanes(lanes);
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (index_t j = 0; j < ld; j += 8) _mm256_store_ps(row + j, _mm256_mul_ps(_mm256_load_ps(row + j), inv));
  return sum;
}

// ---------------------------------------------------------------- AVX-512F

// The masked forms with every lane set: the plain max and shift start
// from an undefined vector, which GCC 12 reports as uninitialized wherever
// they are inlined (GCC bug 105593; see detail/eigen.hpp).
inline constexpr __mmask16 all_lanes = 0xffff;

[[gnu::target("avx512f")]] inline __m512 keep(__m512 x) noexcept {
  __asm__("" : "+v"(x));
  return x;
}

[[gnu::target("avx512f")]] inline __m512 exp_avx512(__m512 x) noexcept {
  const __m512 t = _mm512_add_ps(keep(_mm512_mul_ps(x, _mm512_set1_ps(exp_log2e))), _mm512_set1_ps(exp_round));
  const __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(exp_round));
  __m512 r = _mm512_sub_ps(x, keep(_mm512_mul_ps(n, _mm512_set1_ps(exp_ln2_hi))));
  r = _mm512_sub_ps(r, keep(_mm512_mul_ps(n, _mm512_set1_ps(exp_ln2_lo))));
  __m512 p = _mm512_set1_ps(exp_c[0]);
  for (int k = 1; k < 6; ++k) p = _mm512_add_ps(keep(_mm512_mul_ps(p, r)), _mm512_set1_ps(exp_c[k]));
  const __m512 y =
      _mm512_add_ps(_mm512_add_ps(keep(_mm512_mul_ps(p, keep(_mm512_mul_ps(r, r)))), r), _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_maskz_slli_epi32(
      all_lanes,
      _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(_mm512_set1_ps(exp_round))),
                       _mm512_set1_epi32(127)),
      23);
  const __m512 e = keep(_mm512_mul_ps(y, _mm512_castsi512_ps(bits)));
  // The lanes not below `low` keep e (a NaN input is not below it).
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(exp_low), _CMP_NLT_UQ), e);
}

// Eight rows by 16 keys per step of t.
[[gnu::target("avx512f")]] inline void logits_avx512(const float* q, index_t d, const float* kt, index_t ld,
                                                     float* tile) {
  for (index_t p = 0; p < ld / panel_keys; ++p) {
    const float* panel = kt + p * d * panel_keys;
    {
      const float* qi = q;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
      for (index_t t = 0; t < d; ++t) {
        const __m512 k = _mm512_load_ps(panel + t * panel_keys);
        const float* x = qi + t;
        a0 = _mm512_add_ps(a0, keep(_mm512_mul_ps(_mm512_set1_ps(x[0]), k)));
        a1 = _mm512_add_ps(a1, keep(_mm512_mul_ps(_mm512_set1_ps(x[d]), k)));
        a2 = _mm512_add_ps(a2, keep(_mm512_mul_ps(_mm512_set1_ps(x[2 * d]), k)));
        a3 = _mm512_add_ps(a3, keep(_mm512_mul_ps(_mm512_set1_ps(x[3 * d]), k)));
        a4 = _mm512_add_ps(a4, keep(_mm512_mul_ps(_mm512_set1_ps(x[4 * d]), k)));
        a5 = _mm512_add_ps(a5, keep(_mm512_mul_ps(_mm512_set1_ps(x[5 * d]), k)));
        a6 = _mm512_add_ps(a6, keep(_mm512_mul_ps(_mm512_set1_ps(x[6 * d]), k)));
        a7 = _mm512_add_ps(a7, keep(_mm512_mul_ps(_mm512_set1_ps(x[7 * d]), k)));
      }
      float* s = tile + p * panel_keys;
      _mm512_store_ps(s, a0);
      _mm512_store_ps(s + ld, a1);
      _mm512_store_ps(s + 2 * ld, a2);
      _mm512_store_ps(s + 3 * ld, a3);
      _mm512_store_ps(s + 4 * ld, a4);
      _mm512_store_ps(s + 5 * ld, a5);
      _mm512_store_ps(s + 6 * ld, a6);
      _mm512_store_ps(s + 7 * ld, a7);
    }
  }
}

[[gnu::target("avx512f")]] inline float softmax_row_avx512(float* row, index_t n, index_t ld) {
  set_padding(row, n, ld);
  __m512 m = _mm512_load_ps(row);
  for (index_t j = panel_keys; j < ld; j += panel_keys) m = _mm512_maskz_max_ps(all_lanes, m, _mm512_load_ps(row + j));
  alignas(64) float lanes[panel_keys];
  _mm512_store_ps(lanes, m);
  float top = lanes[0];
  for (int l = 1; l < panel_keys; ++l) top = lanes[l] > top ? lanes[l] : top;
  const __m512 mx = _mm512_set1_ps(top);
  __m512 s = _mm512_setzero_ps();
  for (index_t j = 0; j < ld; j += panel_keys) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_load_ps(row + j), mx));
    _mm512_store_ps(row + j, e);
    s = _mm512_add_ps(s, e);
  }
  _mm512_store_ps(lanes, s);
  const float sum = reduce_lanes(lanes);
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (index_t j = 0; j < ld; j += panel_keys) _mm512_store_ps(row + j, _mm512_mul_ps(_mm512_load_ps(row + j), inv));
  return sum;
}

#endif  // FREEPRUNER_X86_SIMD

/// Floats of the work buffer softmax_block needs (16-byte aligned).
inline index_t softmax_work(index_t d) noexcept { return group_rows * d * 4; }

/// Softmax rows of the first `count` queries of q (grouped_rows(count)
/// rows, scaled, zero-padded) against n packed keys, into tile rows
/// 0..count-1 (ld = padded_keys(n) floats each, grouped_rows(count) rows);
/// sums[r] = row r's sum of exp(S - max), not finite when a logit
/// overflowed (the row is then NaN). `work`: softmax_work(d) floats.
inline void softmax_block(const float* q, index_t count, index_t d, const float* kt, index_t n, float* tile,
                          float* sums, float* work) {
  const index_t ld = padded_keys(n);
  const simd_level level = active_simd();
  for (index_t i = 0; i < count; i += group_rows) {
    float* rows = tile + i * ld;
    const float* qi = q + i * d;
    const index_t last = count - i < group_rows ? count - i : group_rows;
#if FREEPRUNER_X86_SIMD
    switch (level) {
      case simd_level::avx512:
        logits_avx512(qi, d, kt, ld, rows);
        for (index_t r = 0; r < last; ++r) sums[i + r] = softmax_row_avx512(rows + r * ld, n, ld);
        continue;
      case simd_level::avx2:
        logits_avx2(qi, d, kt, ld, rows);
        for (index_t r = 0; r < last; ++r) sums[i + r] = softmax_row_avx2(rows + r * ld, n, ld);
        continue;
      case simd_level::sse2:
        logits_sse2(qi, d, kt, ld, rows, work);
        for (index_t r = 0; r < last; ++r) sums[i + r] = softmax_row_sse2(rows + r * ld, n, ld);
        continue;
      case simd_level::scalar: break;
    }
#else
    (void)level;
    (void)work;
#endif
    logits_scalar(qi, d, kt, ld, rows);
    for (index_t r = 0; r < last; ++r) sums[i + r] = softmax_row_scalar(rows + r * ld, n, ld);
  }
}

}  // namespace qk
}  // namespace cpu
}  // namespace detail
}  // namespace freepruner

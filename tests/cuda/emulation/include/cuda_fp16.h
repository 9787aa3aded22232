#pragma once
// Emulation stand-in for CUDA's cuda_fp16.h: the bits and their float value.
#include <cmath>
#include <limits>

struct __half {
  unsigned short x;
};
inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
inline float __half2float(__half h) {
  const unsigned exponent = (h.x >> 10) & 31u, mantissa = h.x & 1023u;
  float v = 0;
  if (exponent == 0)
    v = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31)
    v = mantissa != 0 ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    v = std::ldexp(static_cast<float>(mantissa | 1024u), static_cast<int>(exponent) - 25);
  return (h.x >> 15) != 0 ? -v : v;
}

#pragma once
/// \file detail/eigen.hpp
/// <Eigen/Core>, as every CPU header includes it. GCC 12.1 and 12.2 warn
/// (-Wmaybe-uninitialized) inside their own AVX-512 intrinsics when Eigen's
/// GEMM inlines them under -O3 -march=native (GCC bug 105593, fixed in 12.3);
/// GCC checks the pragma against the inlined lines, which this region holds.

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#pragma once
/// \file config.hpp
/// Compiler switches and the library's integer types.

#include <cstdint>

#include "version.hpp"

// A real `concept` under C++20, a constexpr bool under C++17.
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
#define FREEPRUNER_HAS_CONCEPTS 1
#else
#define FREEPRUNER_HAS_CONCEPTS 0
#endif

// Decision helpers shared with device code are host-device under nvcc and
// plain inline functions otherwise.
#if defined(__CUDACC__)
#define FREEPRUNER_HOST_DEVICE __host__ __device__
#else
#define FREEPRUNER_HOST_DEVICE
#endif

// Engines built with -fno-exceptions still get every check: `try_select`
// returns a status, and `select` aborts with the message instead of throwing.
// An engine routes that failure to its own handler by defining, before any
// freepruner include, FREEPRUNER_THROW(e) (e: a freepruner::error), as fmt's
// FMT_THROW; should the handler return, the call aborts.
#ifndef FREEPRUNER_USE_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define FREEPRUNER_USE_EXCEPTIONS 1
#else
#define FREEPRUNER_USE_EXCEPTIONS 0
#endif
#endif

namespace freepruner {

/// Extents, strides and element offsets (signed, as in mdspan's layout_stride).
using index_t = std::int64_t;
/// Token positions in a selection.
using token_t = std::int32_t;

}  // namespace freepruner

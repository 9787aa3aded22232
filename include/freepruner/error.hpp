#pragma once
/// \file error.hpp
/// Status codes, the status object returned by the non-throwing calls, and
/// `freepruner::error`, thrown by the throwing ones.

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "config.hpp"

namespace freepruner {

/// What went wrong; `ok` when nothing did.
enum class errc {
  ok = 0,
  invalid_shape,       ///< an extent is zero or negative, or the maps are not square
  invalid_tokens,      ///< prefix/suffix leave no candidate, or are negative
  invalid_layer,       ///< a pivot or complementary layer outside the given layers
  invalid_option,      ///< pivots_per_layer, fence_factor or direction out of range
  invalid_budget,      ///< count <= 0, ratio outside (0, 1], or an unknown budget kind
  non_finite,          ///< a NaN or an infinity in the maps that are read
  null_data,           ///< a null data pointer with a non-empty shape
  wrong_memory_space,  ///< host memory where device memory is expected, or the reverse
  invalid_workspace,   ///< (CUDA) a workspace smaller than the size query returned
  device_error,        ///< (CUDA) a CUDA runtime call failed; the message names it
};

/// A short name for an error code ("invalid_shape", ...).
inline const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::ok: return "ok";
    case errc::invalid_shape: return "invalid_shape";
    case errc::invalid_tokens: return "invalid_tokens";
    case errc::invalid_layer: return "invalid_layer";
    case errc::invalid_option: return "invalid_option";
    case errc::invalid_budget: return "invalid_budget";
    case errc::non_finite: return "non_finite";
    case errc::null_data: return "null_data";
    case errc::wrong_memory_space: return "wrong_memory_space";
    case errc::invalid_workspace: return "invalid_workspace";
    case errc::device_error: return "device_error";
  }
  return "unknown";
}

/// Outcome of a non-throwing call: a code and a message naming the argument
/// and its value. Converts to `true` on success.
class status {
 public:
  status() = default;
  status(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const noexcept { return code_ == errc::ok; }
  explicit operator bool() const noexcept { return ok(); }
  errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

 private:
  errc code_ = errc::ok;
  std::string message_;
};

/// Thrown by `select` and the stage routines on bad input.
class error : public std::invalid_argument {
 public:
  explicit error(const status& s) : std::invalid_argument(s.message()), code_(s.code()) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

namespace detail {

/// Throws `error`; or, where the engine defines FREEPRUNER_THROW(e), hands it
/// the error (its own abort or exception); without exceptions, prints the
/// message and aborts.
[[noreturn]] inline void raise(const status& s) {
#if defined(FREEPRUNER_THROW)
  FREEPRUNER_THROW(error(s));
  std::abort();  // a handler that returns must not resume the failed call
#elif FREEPRUNER_USE_EXCEPTIONS
  throw error(s);
#else
  std::fprintf(stderr, "%s\n", s.message().c_str());
  std::abort();
#endif
}

inline void check(const status& s) {
  if (!s) raise(s);
}

}  // namespace detail
}  // namespace freepruner

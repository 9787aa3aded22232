#pragma once
// Every error message the library writes: the builder (`fail`) and the
// messages more than one path reports, so each is worded once and every
// backend and path says the same for the same input.

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <type_traits>

#include "../config.hpp"
#include "../error.hpp"

namespace freepruner {
namespace detail {

inline void append(std::string& out, const char* s) { out += s; }
inline void append(std::string& out, const std::string& s) { out += s; }
inline void append(std::string& out, char c) { out += c; }
inline void append(std::string& out, double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out += buf;
}
// One formatter for every integer type (bool and char excluded).
template <class I, std::enable_if_t<std::is_integral<I>::value && !std::is_same<I, bool>::value &&
                                        !std::is_same<I, char>::value, int> = 0>
void append(std::string& out, I v) {
  out += std::to_string(v);
}

// Builds "freepruner: <what>" from pieces; keeps call sites one line long.
template <class... Parts>
std::string message(const Parts&... parts) {
  std::string out = "freepruner: ";
  using expand = int[];
  (void)expand{0, (append(out, parts), 0)...};
  return out;
}

template <class... Parts>
status fail(errc code, const Parts&... parts) {
  return status(code, message(parts...));
}

/// "nan", "inf" or "-inf".
inline const char* kind_name(double x) noexcept { return std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf"); }

// ---- Messages more than one path reports (SPEC "Bad input") ----------------

/// An extent, count or size below 1: "<what> = <value> (must be >= 1)".
template <class... What, class V>
status below_one(errc code, V value, const What&... what) {
  return fail(code, what..., " = ", value, " (must be >= 1)");
}

/// A count or index below 0: "<what> = <value> (must be >= 0)".
template <class... What, class V>
status below_zero(errc code, V value, const What&... what) {
  return fail(code, what..., " = ", value, " (must be >= 0)");
}

/// A batch of fewer than zero items.
inline status negative_batch(index_t batch) { return below_zero(errc::invalid_shape, batch, "attention maps: batch"); }

/// A null pointer to a non-empty tensor: "<what> is null with shape [a, b, ...]".
template <class What, std::size_t Rank>
status null_with_shape(const What& what, const index_t (&shape)[Rank]) {
  std::string dims;
  for (std::size_t d = 0; d < Rank; ++d) {
    if (d) dims += ", ";
    append(dims, shape[d]);
  }
  return fail(errc::null_data, what, " is null with shape [", dims, "]");
}

/// Null maps.
inline status null_maps(index_t layer, index_t layers, index_t heads, index_t tokens) {
  return null_with_shape("attention maps: data of layer " + std::to_string(layer), {layers, heads, tokens, tokens});
}

/// A NaN or an infinity read: "<where> = <value> (every value read must be finite)".
template <class... Where>
status non_finite_value(const std::string& value, const Where&... where) {
  return fail(errc::non_finite, where..., " = ", value, " (every value read must be finite)");
}

/// A NaN or an infinity read in the maps.
inline status non_finite_map(index_t layer, index_t head, index_t query, index_t key, double value) {
  return non_finite_value(kind_name(value), "attention maps[layer ", layer, "][head ", head, "][query ", query,
                          "][key ", key, "]");
}

/// Finite maps whose sum over heads overflows.
inline status heads_overflow(index_t layer) {
  return fail(errc::non_finite, "attention maps of layer ", layer,
              ": a sum over heads overflows (values too large to be attention probabilities)");
}

/// More tokens than a token_t holds: "<what> exceeds the 32-bit token range".
template <class... What>
status token_range(const What&... what) {
  return fail(errc::invalid_shape, what..., " exceeds the 32-bit token range");
}

/// How Q/K messages name layer l of a call: "layers[l]".
inline std::string layer_label(std::size_t l) { return "layers[" + std::to_string(l) + "]"; }

/// A batch item's message: its position first.
inline status in_item(const status& s, index_t item) {
  if (s) return s;
  const std::string prefix = "freepruner: ";
  std::string text = s.message();
  if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
  return fail(s.code(), "batch item ", item, ": ", text);
}

}  // namespace detail
}  // namespace freepruner

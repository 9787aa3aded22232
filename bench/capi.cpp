// A C ABI over freepruner::select for scripts (bench/torch_compare.py loads
// it with ctypes), so Python and C++ select from the very same buffer.

#include <cstdint>
#include <cstring>

#include <freepruner/freepruner.hpp>

extern "C" {

// Contiguous float32 maps [L][H][N][N]; budget kind 0 adaptive, 1 count, 2 ratio.
// Writes the kept tokens to `kept` (room for N) and their number to `count`.
// Returns 0, or the error code with the message copied to `error` (256 bytes).
int freepruner_select_f32(const float* maps, std::int64_t layers, std::int64_t heads, std::int64_t tokens,
                          std::int64_t prefix, std::int64_t suffix, int budget_kind, double budget_value,
                          std::int32_t* kept, std::int64_t* count, char* error) {
  const freepruner::attention_view<const float> v(maps, layers, heads, tokens);
  freepruner::options o;
  o.prefix_tokens = prefix;
  o.suffix_tokens = suffix;
  const auto b = budget_kind == 1   ? freepruner::budget::count(static_cast<std::int64_t>(budget_value))
                 : budget_kind == 2 ? freepruner::budget::ratio(budget_value)
                                    : freepruner::budget::adaptive();
  freepruner::selection s;
  const auto st = freepruner::try_select(v, b, o, s);
  if (!st) {
    std::strncpy(error, st.message().c_str(), 255);
    error[255] = '\0';
    return static_cast<int>(st.code());
  }
  std::memcpy(kept, s.indices.data(), s.indices.size() * sizeof(std::int32_t));
  *count = static_cast<std::int64_t>(s.indices.size());
  return 0;
}

}  // extern "C"

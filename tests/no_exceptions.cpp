// freepruner without exceptions: built with -fno-exceptions, `try_select`
// still reports every bad input as a status (code and message naming the
// argument and its value). A plain program, no test framework: it prints
// one closing line "N passed, M failed" and fails when M > 0.

#include <freepruner/freepruner.hpp>

#include <cstddef>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#if !defined(__cpp_exceptions) && !defined(__EXCEPTIONS) && !defined(_CPPUNWIND)
static_assert(FREEPRUNER_USE_EXCEPTIONS == 0, "freepruner must not throw when exceptions are off");
#endif

namespace fp = freepruner;

namespace {

int passed = 0;
int failed = 0;

void expect(bool condition, const std::string& what) {
  if (condition) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

// Random-looking positive rows, each normalized to sum 1 (a fixed LCG, so
// the program needs nothing but the library).
std::vector<float> make_maps(fp::index_t layers, fp::index_t heads, fp::index_t tokens) {
  std::vector<float> data(static_cast<std::size_t>(layers * heads * tokens * tokens));
  unsigned state = 12345u;
  for (std::size_t row = 0; row < data.size(); row += static_cast<std::size_t>(tokens)) {
    float sum = 0;
    for (fp::index_t j = 0; j < tokens; ++j) {
      state = state * 1664525u + 1013904223u;
      const float x = 0.05f + static_cast<float>(state >> 8) / 16777216.0f;
      data[row + static_cast<std::size_t>(j)] = x;
      sum += x;
    }
    for (fp::index_t j = 0; j < tokens; ++j) data[row + static_cast<std::size_t>(j)] /= sum;
  }
  return data;
}

void expect_ok(const char* name, const fp::attention_view<const float>& v, const fp::budget& b,
               const fp::options& o, std::size_t expected_size = 0) {
  fp::selection out;
  const fp::status s = fp::try_select(v, b, o, out);
  expect(s.ok(), std::string(name) + ": ok (got \"" + s.message() + "\")");
  expect(s.code() == fp::errc::ok, std::string(name) + ": code ok");
  expect(!out.indices.empty(), std::string(name) + ": non-empty selection");
  expect(out.indices.size() == out.pivotal.size() + out.complementary.size(),
         std::string(name) + ": pivotal + complementary cover the selection");
  if (expected_size != 0)
    expect(out.indices.size() == expected_size,
           std::string(name) + ": " + std::to_string(expected_size) + " tokens kept, got " +
               std::to_string(out.indices.size()));
}

void expect_rejected(const char* name, const fp::attention_view<const float>& v, const fp::budget& b,
                     const fp::options& o, fp::errc code, const std::vector<std::string>& parts) {
  fp::selection out{{1, 2}, {1}, {2}};
  const fp::status s = fp::try_select(v, b, o, out);
  const std::string label = std::string(name) + " (\"" + s.message() + "\")";
  expect(!s.ok(), label + ": rejected");
  expect(s.code() == code, label + ": code " + fp::to_string(code) + ", got " + fp::to_string(s.code()));
  for (const auto& part : parts)
    expect(s.message().find(part) != std::string::npos, label + ": message names \"" + part + "\"");
  expect(out.indices.empty() && out.pivotal.empty() && out.complementary.empty(), label + ": output left empty");
}

fp::options prefix_suffix(fp::index_t a, fp::index_t b) {
  fp::options o;
  o.prefix_tokens = a;
  o.suffix_tokens = b;
  return o;
}

}  // namespace

int main() {
  const fp::index_t L = 3, H = 2, N = 8;
  std::vector<float> data = make_maps(L, H, N);
  const fp::attention_view<const float> v(data.data(), L, H, N);
  const fp::options defaults;
  const fp::budget adaptive = fp::budget::adaptive();

  // Valid input.
  expect_ok("adaptive", v, adaptive, defaults);
  expect_ok("count(3)", v, fp::budget::count(3), defaults, 3);
  expect_ok("ratio(0.5)", v, fp::budget::ratio(0.5), defaults, 4);
  expect_ok("prefix 1, suffix 1", v, adaptive, prefix_suffix(1, 1));

  // Shape.
  float dummy[4] = {};
  expect_rejected("N = 0", fp::attention_view<const float>(dummy, 1, 1, 0), adaptive, defaults,
                  fp::errc::invalid_shape, {"queries = 0"});
  expect_rejected("L = 0", fp::attention_view<const float>(dummy, 0, 1, 2), adaptive, defaults,
                  fp::errc::invalid_shape, {"layers = 0"});
  expect_rejected("non-square", fp::attention_view<const float>(data.data(), {L, H, 4, 5}, {H * 20, 20, 5, 1}),
                  adaptive, defaults, fp::errc::invalid_shape, {"queries = 4", "keys = 5"});
  expect_rejected("null data", fp::attention_view<const float>(nullptr, L, H, N), adaptive, defaults,
                  fp::errc::null_data, {"data", "null"});

  // Tokens.
  expect_rejected("a + b == N", v, adaptive, prefix_suffix(5, 3), fp::errc::invalid_tokens,
                  {"prefix_tokens", "suffix_tokens", "5 + 3", "tokens = 8"});
  expect_rejected("negative prefix", v, adaptive, prefix_suffix(-1, 0), fp::errc::invalid_tokens,
                  {"prefix_tokens = -1"});

  // Layers.
  fp::options o;
  o.pivot_layers = {3};
  expect_rejected("pivot layer 3", v, adaptive, o, fp::errc::invalid_layer, {"pivot_layers", "= 3"});
  o.pivot_layers = {1, 1};
  expect_rejected("duplicate pivot layer", v, adaptive, o, fp::errc::invalid_layer, {"pivot_layers", "layer 1"});
  o = defaults;
  o.complementary_layer = -2;
  expect_rejected("complementary layer -2", v, adaptive, o, fp::errc::invalid_layer, {"complementary_layer = -2"});

  // Options and budget.
  o = defaults;
  o.fence_factor = -1.0;
  expect_rejected("fence_factor -1", v, adaptive, o, fp::errc::invalid_option, {"fence_factor = -1"});
  o = defaults;
  o.pivots_per_layer = -2;
  expect_rejected("pivots_per_layer -2", v, adaptive, o, fp::errc::invalid_option, {"pivots_per_layer = -2"});
  o = defaults;
  o.complementary_from = static_cast<fp::direction>(7);
  expect_rejected("direction 7", v, adaptive, o, fp::errc::invalid_option, {"complementary_from = 7"});
  expect_rejected("count(0)", v, fp::budget::count(0), defaults, fp::errc::invalid_budget, {"budget::count(0)"});
  expect_rejected("ratio(1.5)", v, fp::budget::ratio(1.5), defaults, fp::errc::invalid_budget,
                  {"budget::ratio(1.5)"});
  expect_rejected("ratio(NaN)", v, fp::budget::ratio(std::numeric_limits<double>::quiet_NaN()), defaults,
                  fp::errc::invalid_budget, {"budget::ratio(", "nan"});

  // Non-finite values.
  data[static_cast<std::size_t>(((1 * H + 1) * N + 2) * N + 5)] = std::numeric_limits<float>::quiet_NaN();
  expect_rejected("NaN", v, adaptive, defaults, fp::errc::non_finite, {"layer 1", "head 1", "query 2", "key 5", "nan"});
  o = defaults;
  o.pivot_layers = {0};
  o.complementary_layer = 2;
  expect_ok("NaN in a layer not read", v, adaptive, o);

  // The batched view: the status names the item.
  std::vector<float> batch;
  for (int k = 0; k < 3; ++k) {
    const auto item = make_maps(L, H, N);
    batch.insert(batch.end(), item.begin(), item.end());
  }
  batch[static_cast<std::size_t>(2 * L * H * N * N + ((1 * H + 1) * N + 4) * N + 4)] =
      std::numeric_limits<float>::infinity();
  const fp::batched_attention_view<const float> bv(batch.data(), 3, L, H, N);
  std::vector<fp::selection> out(2);
  const fp::status s = fp::try_select(bv, adaptive, defaults, out);
  expect(!s.ok() && s.code() == fp::errc::non_finite, "batch: non_finite (\"" + s.message() + "\")");
  expect(s.message().find("batch item 2") != std::string::npos, "batch: message names item 2");
  expect(s.message().find("query 4") != std::string::npos, "batch: message names query 4");
  expect(out.empty(), "batch: output left empty");
  const fp::status fine = fp::try_select(bv, adaptive, o, out);
  expect(fine.ok() && out.size() == 3, "batch: NaN-free pivot and complementary layers select");

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed > 0 ? 1 : 0;
}

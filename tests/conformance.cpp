// Runs the SPEC conformance vectors (cases.txt + raw float32 maps) through
// every host path: the view, a keys-major strided view, double maps, the
// batched view and the stages.
//
//   freepruner_conformance DIR [--optional]
//
// A missing DIR/cases.txt fails, or with --optional exits 77 (ctest: skipped).

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <freepruner/freepruner.hpp>

#include "conformance_cases.hpp"

namespace {

using freepruner::index_t;
using freepruner::token_t;

std::string show(const std::vector<token_t>& v) {
  std::string s;
  for (token_t t : v) {
    s += ' ';
    s += std::to_string(t);
  }
  return s;
}

bool same(const char* path, const fptest::conformance_case& c, const freepruner::selection& s) {
  if (s.indices == c.indices && s.pivotal == c.pivotal && s.complementary == c.complementary) return true;
  std::printf("%s (%s): MISMATCH\n  want |%s |%s |%s\n  got  |%s |%s |%s\n", c.name.c_str(), path, show(c.indices).c_str(),
              show(c.pivotal).c_str(), show(c.complementary).c_str(), show(s.indices).c_str(), show(s.pivotal).c_str(),
              show(s.complementary).c_str());
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::string(argv[2]) != "--optional")) {
    std::printf("usage: freepruner_conformance DIR [--optional]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const bool optional = argc == 3;
  std::ifstream cases(dir + "/cases.txt");
  if (!cases) {
    if (optional) {
      std::printf("no conformance vectors at %s/cases.txt: skipped\n", dir.c_str());
      return 77;
    }
    std::printf("FAILED: cannot read %s/cases.txt (the conformance vectors; make them with "
                "tools/tests/make_conformance.py)\n",
                dir.c_str());
    return 1;
  }
  int passed = 0, failed = 0;
  std::string line;
  while (std::getline(cases, line)) {
    fptest::conformance_case c;
    if (!fptest::parse_case(line, c)) continue;
    const auto count = static_cast<std::size_t>(c.L * c.H * c.N * c.N);
    std::vector<float> maps;
    if (!fptest::read_case_maps(dir, c, maps)) {
      std::printf("%s: %s does not hold %zu float32 values\n", c.name.c_str(), c.file.c_str(), count);
      ++failed;
      continue;
    }
    const freepruner::options o = c.options();
    const auto b = c.budget();
    const index_t L = c.L, H = c.H, N = c.N;
    bool ok = true;

    const freepruner::attention_view<const float> v(maps.data(), L, H, N);
    ok &= same("view", c, freepruner::select(v, b, o));

    std::vector<float> transposed(count);
    for (index_t k = 0; k < L * H; ++k)
      for (index_t i = 0; i < N; ++i)
        for (index_t j = 0; j < N; ++j)
          transposed[static_cast<std::size_t>((k * N + j) * N + i)] = maps[static_cast<std::size_t>((k * N + i) * N + j)];
    ok &= same("keys-major view", c,
               freepruner::select(freepruner::attention_view<const float>(transposed.data(), {L, H, N, N}, {H * N * N, N * N, 1, N}), b, o));

    const std::vector<double> wide(maps.begin(), maps.end());
    ok &= same("double maps", c, freepruner::select(freepruner::attention_view<const double>(wide.data(), L, H, N), b, o));

    std::vector<float> twice(maps);
    twice.insert(twice.end(), maps.begin(), maps.end());
    const auto batch = freepruner::select(freepruner::batched_attention_view<const float>(twice.data(), 2, L, H, N), b, o);
    ok &= same("batch item 0", c, batch.at(0)) && same("batch item 1", c, batch.at(1));

    std::vector<std::vector<double>> degrees;
    for (index_t l = 0; l < L; ++l) degrees.push_back(freepruner::contribution_degree(v, l));
    const auto pivots = freepruner::pivotal_tokens(degrees, o);
    ok &= same("stages", c, freepruner::fit_budget(degrees, pivots, freepruner::complementary_tokens(v, pivots, o), b, o));

    const auto expected = freepruner::kept_tokens(b, N, o);
    if (expected && *expected != static_cast<index_t>(c.indices.size())) {
      std::printf("%s: kept_tokens says %lld, the vector keeps %zu\n", c.name.c_str(), static_cast<long long>(*expected),
                  c.indices.size());
      ok = false;
    }
    std::printf("%-26s %s\n", c.name.c_str(), ok ? "ok" : "FAILED");
    ok ? ++passed : ++failed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}

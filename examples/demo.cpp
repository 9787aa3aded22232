// freepruner demo: attention maps shaped like LLaVA-1.5's vision tower
// (CLIP ViT-L/14-336: CLS + 24x24 patches, 16 heads), generated here, then
// pruned to half and drawn as the patch grid.
//
//   freepruner_demo [ratio|adaptive] [seed]

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <freepruner/freepruner.hpp>

namespace {

constexpr int grid = 24, tokens = grid * grid + 1, heads = 16, layers = 2, dim = 16;

// Softmax(q.k) maps of a toy image: a round object on a background, a few
// background "sink" patches that every query attends to (as real ViTs have),
// and patch features that are similar inside the object.
std::vector<float> make_maps(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> feature(static_cast<std::size_t>(tokens) * dim), object(dim), background(dim);
  for (auto& x : object) x = normal(rng);
  for (auto& x : background) x = normal(rng);
  std::vector<bool> sink(tokens, false);
  for (int k = 0; k < 6; ++k) sink[1 + std::uniform_int_distribution<int>(0, grid * grid - 1)(rng)] = true;
  for (int t = 0; t < tokens; ++t) {
    const int y = (t - 1) / grid, x = (t - 1) % grid;
    const bool inside = t > 0 && (y - 11.5) * (y - 11.5) + (x - 14.0) * (x - 14.0) < 36.0;
    for (int d = 0; d < dim; ++d)
      feature[static_cast<std::size_t>(t * dim + d)] = (inside ? object[d] : background[d]) * 0.8f + 0.6f * normal(rng);
  }
  std::vector<float> maps(static_cast<std::size_t>(layers) * heads * tokens * tokens);
  std::vector<float> projection(dim * dim), key(static_cast<std::size_t>(tokens) * dim), logits(tokens);
  for (int lh = 0; lh < layers * heads; ++lh) {
    for (auto& w : projection) w = normal(rng) / std::sqrt(static_cast<float>(dim));
    for (int t = 0; t < tokens; ++t)
      for (int d = 0; d < dim; ++d) {
        float s = 0;
        for (int e = 0; e < dim; ++e) s += projection[d * dim + e] * feature[static_cast<std::size_t>(t * dim + e)];
        key[static_cast<std::size_t>(t * dim + d)] = s;
      }
    for (int i = 0; i < tokens; ++i) {
      float top = -1e30f;
      for (int j = 0; j < tokens; ++j) {
        float s = 0;
        for (int d = 0; d < dim; ++d) s += feature[static_cast<std::size_t>(i * dim + d)] * key[static_cast<std::size_t>(j * dim + d)];
        logits[j] = 0.5f * s + (sink[j] ? 4.0f : 0.0f);
        top = std::max(top, logits[j]);
      }
      float sum = 0;
      float* row = &maps[(static_cast<std::size_t>(lh) * tokens + i) * tokens];
      for (int j = 0; j < tokens; ++j) sum += row[j] = std::exp(logits[j] - top);
      for (int j = 0; j < tokens; ++j) row[j] /= sum;
    }
  }
  return maps;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "0.5";
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)) : 7u;
  const auto budget = what == "adaptive" ? freepruner::budget::adaptive() : freepruner::budget::ratio(std::atof(what.c_str()));

  const std::vector<float> maps = make_maps(seed);
  freepruner::attention_view<const float> view(maps.data(), layers, heads, tokens);
  freepruner::options options;
  options.prefix_tokens = 1;  // CLS comes first (Hugging Face layout) and is never selected

  freepruner::selection kept;
  const auto start = std::chrono::steady_clock::now();
  if (auto status = freepruner::try_select(view, budget, options, kept); !status) {
    std::fprintf(stderr, "%s\n", status.message().c_str());
    return 2;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  std::printf("freepruner %s: %d layers x %d heads x %d tokens (%.1f MB of float32 maps), budget %s\n",
              FREEPRUNER_VERSION_STRING, layers, heads, tokens, static_cast<double>(maps.size() * sizeof(float)) / 1e6,
              what.c_str());
  std::printf("kept %zu of %d patches: %zu pivotal (#), %zu complementary (+); '.' dropped; %.2f ms\n\n", kept.size(),
              tokens - 1, kept.pivotal.size(), kept.complementary.size(), ms);
  std::vector<char> cell(tokens, '.');
  for (auto t : kept.pivotal) cell[static_cast<std::size_t>(t)] = '#';
  for (auto t : kept.complementary) cell[static_cast<std::size_t>(t)] = '+';
  for (int y = 0; y < grid; ++y) {
    std::printf("  ");
    for (int x = 0; x < grid; ++x) std::printf("%c ", cell[static_cast<std::size_t>(1 + y * grid + x)]);
    std::printf("\n");
  }
  std::printf("\nkept token positions (CLS = 0):");
  for (std::size_t k = 0; k < kept.size(); ++k) std::printf("%s%d", k % 24 == 0 ? "\n  " : " ", kept.indices[k]);
  std::printf("\n");
  return 0;
}

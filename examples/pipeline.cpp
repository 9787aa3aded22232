// The engine-side pipeline in miniature: a toy vision encoder's output and
// attention maps -> select -> gather the kept rows -> projector input.
//
//   1. Before the encoder runs: kept_tokens() sizes the prompt (an exact
//      budget::count, so the image placeholder count is known at tokenize time).
//   2. The encoder runs and its chosen layers' attention maps are captured.
//   3. select() picks the tokens; their rows of the feature layer's output,
//      in ascending order, are the projector's input.
//   4. The projector (LLaVA's 2-layer MLP) runs on the kept rows only.
//
// It exits non-zero if the kept count differs from kept_tokens(), or if
// projecting every token and then gathering differs from gathering and then
// projecting (true for a per-token projector such as LLaVA's MLP, which is
// why an engine may prune before or after the projector).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <Eigen/Core>

#include <freepruner/freepruner.hpp>
#include <freepruner/extras/positions.hpp>
#include <freepruner/extras/presets.hpp>

namespace {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int heads = 4, d_head = 16, hidden = heads * d_head, mm_hidden = 96, llm_embd = 80;

matrix random_matrix(Eigen::Index rows, Eigen::Index cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, scale);
  matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

// softmax(Q K^T / sqrt(d)) of one layer, per head, into maps[l] ([H][N][N]).
void attention_maps(const matrix& x, std::mt19937& rng, float* out) {
  const Eigen::Index n = x.rows();
  const matrix wq = random_matrix(hidden, hidden, 1.0f / std::sqrt(static_cast<float>(hidden)), rng);
  const matrix wk = random_matrix(hidden, hidden, 1.0f / std::sqrt(static_cast<float>(hidden)), rng);
  const matrix q = x * wq, k = x * wk;
  for (int h = 0; h < heads; ++h) {
    Eigen::Map<matrix> a(out + static_cast<std::ptrdiff_t>(h) * n * n, n, n);
    a.noalias() = q.middleCols(h * d_head, d_head) * k.middleCols(h * d_head, d_head).transpose();
    a /= std::sqrt(static_cast<float>(d_head));
    for (Eigen::Index i = 0; i < n; ++i) {
      a.row(i).array() -= a.row(i).maxCoeff();
      a.row(i) = a.row(i).array().exp().matrix();
      a.row(i) /= a.row(i).sum();
    }
  }
}

// LLaVA's projector: Linear -> GELU -> Linear, applied to each row.
struct projector {
  matrix w1, w2;
  Eigen::RowVectorXf b1, b2;
  matrix operator()(const matrix& in) const {
    matrix h = (in * w1).rowwise() + b1;
    h = h.unaryExpr([](float v) { return 0.5f * v * (1.0f + std::erf(v / std::sqrt(2.0f))); });
    return (h * w2).rowwise() + b2;
  }
};

}  // namespace

int main() {
  namespace fp = freepruner;
  // LLaVA-1.5's shape (CLS + 24 x 24, two captured layers), with toy widths.
  const fp::preset p = fp::presets::llava_1_5();
  const auto n = static_cast<Eigen::Index>(p.tokens);
  const auto layers = static_cast<fp::index_t>(p.capture_layers.size());
  const fp::budget budget = fp::budget::count(144);  // a quarter of the 576 patches

  // 1. At tokenize time: how many image tokens the prompt gets.
  const auto reserved = p.kept_tokens(budget);
  if (!reserved) return 1;

  // 2. The "encoder": features of the feature layer, and the captured maps.
  std::mt19937 rng(7);
  const matrix features = random_matrix(n, hidden, 1.0f, rng);
  std::vector<float> maps(static_cast<std::size_t>(layers * heads * n * n));
  for (fp::index_t l = 0; l < layers; ++l)
    attention_maps(features, rng, maps.data() + static_cast<std::ptrdiff_t>(l) * heads * n * n);

  // 3. Select, then gather the kept rows in ascending order.
  const auto start = std::chrono::steady_clock::now();
  const fp::attention_view<const float> view(maps.data(), layers, heads, n);
  const fp::selection kept = fp::select(view, budget, p.select_options);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  matrix input(static_cast<Eigen::Index>(kept.size()), hidden);
  for (std::size_t r = 0; r < kept.size(); ++r) input.row(static_cast<Eigen::Index>(r)) = features.row(kept.indices[r]);

  // 4. The projector on the kept rows only.
  const projector mlp{random_matrix(hidden, mm_hidden, 0.2f, rng), random_matrix(mm_hidden, llm_embd, 0.2f, rng),
                      random_matrix(1, mm_hidden, 0.1f, rng), random_matrix(1, llm_embd, 0.1f, rng)};
  const matrix embeddings = mlp(input);

  // Checks: the count fixed at tokenize time, and gather/project commuting.
  bool ok = static_cast<fp::index_t>(kept.size()) == *reserved;
  const matrix all = mlp(features.bottomRows(n - p.prefix_tokens()));  // what the engine projects without pruning
  float worst = 0;
  for (std::size_t r = 0; r < kept.size(); ++r) {
    const auto row = static_cast<Eigen::Index>(kept.indices[r] - p.prefix_tokens());  // CLS is not an output row
    worst = std::max(worst, (all.row(row) - embeddings.row(static_cast<Eigen::Index>(r))).cwiseAbs().maxCoeff());
  }
  ok = ok && worst <= 1e-5f * std::max(1.0f, all.cwiseAbs().maxCoeff());
  for (std::size_t r = 0; r < kept.size(); ++r)
    ok = ok && kept.indices[r] >= p.prefix_tokens() && (r == 0 || kept.indices[r] > kept.indices[r - 1]);

  // 2-D positions of the kept patches, for engines that keep the original ones.
  const auto places = fp::grid_positions(kept.indices, p.layout());

  std::printf("freepruner pipeline: %s, %lld tokens (CLS + %lldx%lld), %lld layers x %d heads\n", p.name.c_str(),
              static_cast<long long>(p.tokens), static_cast<long long>(p.grid_rows), static_cast<long long>(p.grid_cols),
              static_cast<long long>(layers), heads);
  std::printf("  prompt reserves %lld image tokens (kept_tokens, before the encoder runs)\n",
              static_cast<long long>(*reserved));
  std::printf("  select kept %zu: %zu pivotal + %zu complementary, in %.2f ms\n", kept.size(), kept.pivotal.size(),
              kept.complementary.size(), ms);
  std::printf("  projector input %lld x %d -> LLM embeddings %lld x %d\n", static_cast<long long>(input.rows()), hidden,
              static_cast<long long>(embeddings.rows()), llm_embd);
  std::printf("  first kept patches (row, col):");
  for (std::size_t k = 0; k < places.size() && k < 6; ++k)
    std::printf(" (%lld, %lld)", static_cast<long long>(places[k].row), static_cast<long long>(places[k].col));
  std::printf("\n  project-then-gather vs gather-then-project: max |diff| = %.3g\n", static_cast<double>(worst));
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

#pragma once
// What the CUDA tests (test_cuda.cu, on a GPU) and the emulated kernels
// (emulation/emulated.cpp, on the CPU) run: a batch of maps laid out in
// memory in several ways, random options and budgets, and their names.

#include <array>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include <freepruner/options.hpp>

namespace fptest {

using freepruner::index_t;

/// Layouts of [batch][layers][heads][queries][keys] maps: keys-major takes the
/// element-wise path; padded rows (N + 3) start misaligned; layers outside
/// the items; heads in reverse order (a negative stride).
enum class layout_kind { contiguous, keys_major, padded_rows, layers_outer, reversed_heads };
inline constexpr int layout_count = 5;

inline const char* name_of(layout_kind k) {
  static const char* const names[] = {"contiguous", "keys-major", "padded rows", "layers outer", "reversed heads"};
  return names[static_cast<int>(k)];
}

/// Logical maps laid out as `kind` says: the buffer (padding set to `pad`),
/// where element [0][0][0][0][0] sits in it, and the strides.
template <class E>
struct laid_out {
  std::vector<E> memory;
  index_t offset = 0;
  std::array<index_t, 5> strides{};
};

template <class E>
laid_out<E> lay_out(const std::vector<E>& logical, index_t B, index_t L, index_t H, index_t N, layout_kind kind, E pad) {
  laid_out<E> out;
  auto& st = out.strides;
  index_t total = B * L * H * N * N;
  switch (kind) {
    case layout_kind::contiguous: st = {L * H * N * N, H * N * N, N * N, N, 1}; break;
    case layout_kind::keys_major: st = {L * H * N * N, H * N * N, N * N, 1, N}; break;
    case layout_kind::padded_rows: {
      const index_t r = N + 3;
      st = {L * H * N * r, H * N * r, N * r, r, 1};
      total = B * L * H * N * r;
      break;
    }
    case layout_kind::layers_outer: st = {H * N * N, B * H * N * N, N * N, N, 1}; break;
    case layout_kind::reversed_heads:
      st = {L * H * N * N, H * N * N, -N * N, N, 1};
      out.offset = (H - 1) * N * N;
      break;
  }
  out.memory.assign(static_cast<std::size_t>(total), pad);
  for (index_t b = 0; b < B; ++b)
    for (index_t l = 0; l < L; ++l)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < N; ++i)
          for (index_t j = 0; j < N; ++j)
            out.memory[static_cast<std::size_t>(out.offset + b * st[0] + l * st[1] + h * st[2] + i * st[3] + j * st[4])] =
                logical[static_cast<std::size_t>((((b * L + l) * H + h) * N + i) * N + j)];
  return out;
}

/// Random valid options and budget for `layers` x `tokens` maps, as
/// tests/common.hpp's random_config draws them (pivot layers in any order).
template <class Engine>
freepruner::options random_options(Engine& rng, int layers, int tokens, freepruner::budget& b) {
  auto uniform_int = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  freepruner::options o;
  o.prefix_tokens = uniform_int(0, 2);
  o.suffix_tokens = uniform_int(0, 1);
  while (o.prefix_tokens + o.suffix_tokens >= tokens) o.prefix_tokens > 0 ? --o.prefix_tokens : --o.suffix_tokens;
  const int m = tokens - static_cast<int>(o.prefix_tokens + o.suffix_tokens);
  switch (uniform_int(0, 2)) {
    case 0: b = freepruner::budget::adaptive(); break;
    case 1: b = freepruner::budget::count(uniform_int(1, m + 3)); break;
    default: b = freepruner::budget::ratio(std::uniform_real_distribution<double>(0.01, 1.0)(rng)); break;
  }
  o.pivots_per_layer = uniform_int(0, 3) == 0 ? uniform_int(1, 4) : 0;
  o.complementary_from = uniform_int(0, 1) == 1 ? freepruner::direction::column : freepruner::direction::row;
  o.complementary_layer = uniform_int(0, 1) == 0 ? -1 : uniform_int(0, layers - 1);
  if (uniform_int(0, 2) == 0)
    for (int l = layers - 1; l >= 0; --l)
      if (uniform_int(0, 1) == 1) o.pivot_layers.push_back(l);
  static const double fences[] = {1.5, 1.5, 0.0, 0.5, 3.0};
  o.fence_factor = fences[uniform_int(0, 4)];
  if (o.fence_factor == 0.5 && m <= 3) o.fence_factor = 1.5;  // the fence on a value: a rounding tie
  return o;
}

inline std::string describe(index_t B, index_t L, index_t H, index_t N, const freepruner::budget& b,
                            const freepruner::options& o) {
  std::string s = "B=" + std::to_string(B) + " L=" + std::to_string(L) + " H=" + std::to_string(H) +
                  " N=" + std::to_string(N) + " prefix=" + std::to_string(o.prefix_tokens) +
                  " suffix=" + std::to_string(o.suffix_tokens) + " k=" + std::to_string(o.pivots_per_layer) +
                  " f=" + std::to_string(o.fence_factor) +
                  (o.complementary_from == freepruner::direction::column ? " column" : " row") +
                  " c=" + std::to_string(o.complementary_layer) + " pivot_layers=";
  for (index_t l : o.pivot_layers) {
    s += std::to_string(l);
    s += ',';
  }
  switch (b.mode()) {
    case freepruner::budget::kind::adaptive: s += " adaptive"; break;
    case freepruner::budget::kind::count: s += " count(" + std::to_string(b.count_value()) + ")"; break;
    case freepruner::budget::kind::ratio: s += " ratio(" + std::to_string(b.ratio_value()) + ")"; break;
  }
  return s;
}

/// Converts through float, as the element types are made from doubles.
template <class E>
std::vector<E> narrow(const std::vector<double>& x) {
  std::vector<E> out(x.size());
  for (std::size_t k = 0; k < x.size(); ++k) out[k] = E(static_cast<float>(x[k]));
  return out;
}

}  // namespace fptest

#pragma once
// The CUDA backend's plain C++ side: what the kernels receive (problem,
// tiling, scratch) and how a call's work and workspace are cut, from the
// shape, budget and options alone. No CUDA header: any compiler reads it
// (the host tests check the layout without a GPU).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "../../detail/validate.hpp"
#include "../../view.hpp"

namespace freepruner {
namespace detail {
namespace cuda {

/// Threads of every kernel of the backend.
inline constexpr int block_threads = 256;
inline constexpr int block_warps = block_threads / 32;

/// Pivot layers travel in the kernel parameters (no copy, no sync).
inline constexpr int max_pivot_layers = 256;

/// The maps and the validated problem, as every kernel reads them.
struct problem {
  const void* data;
  index_t item_stride, layer_stride, head_stride, row_stride, key_stride;
  int batch, heads, tokens;
  int first, last;           // candidates C = [first, last)
  int top_k;                 // pivots_per_layer clamped to M; 0: adaptive pivots
  double fence_factor;
  int complementary_layer;
  bool column;               // complementary scores from the pivot's column
  kept_count budget;         // the kept set's size (steps 4-5)
  int pivot_layer_count;
  int pivot_layers[max_pivot_layers];
};

/// How the work is cut (computed on the host from the shape alone).
struct tiling {
  int tiles, tile_width;     // column tiles of each row
  int chunks;                // row chunks of each (item, pivot layer)
  index_t rows_per_chunk;
  int column_blocks;         // blocks of 32 columns in reduce_degrees
  int groups;                // complement blocks per item
};

/// Workspace arrays (placed by make_layout below).
struct scratch {
  double* partials;      // [item * K + k][chunk][N]
  double* degrees;       // [item * K + k][N]: r of each pivot layer
  int* status;           // [item]: 0, or 1 + k for pivot layer k, or 1 + K for the complementary layer
  int* pivot_count;      // [item]
  unsigned* arrivals;    // [2][item]: blocks done, for the two hand-offs
  int* pivots;           // [item][N]: P ascending
  int* ranks;            // [item][N]: best rank of each pivot
  std::uint8_t* is_pivot;    // [item][N]
  std::uint8_t* is_outlier;  // [item][N]: in some O_p
  std::uint8_t* keep;        // [item][N]
  double* scores;        // [item][group][N]: v_p of the group's current pivot
  double* affinity;      // [item][group][N]: the group's share of w
  unsigned long long* located;  // diagnose: first non-finite position
};

/// Bytes of one row tile (1024 fp16/bf16 or 512 fp32 columns) and rows staged at once.
inline constexpr int tile_bytes = 2048;
inline constexpr int stage_rows = 16;
/// An image's vectors (a layer's degrees, a pivot's scores, the affinity)
/// sit in shared memory up to this many tokens (32 KB of doubles): the
/// selection passes read them many times. Larger images read the workspace.
inline constexpr int cached_tokens = 4096;

/// Everything a call derives from the shape, budget and options alone: the
/// validated plan, the work cut, and where each array sits in the workspace.
struct layout {
  plan p;
  kept_count budget;
  tiling t{};
  index_t degree_blocks = 0, reduce_blocks = 0, complement_blocks = 0;
  std::size_t partials = 0, degrees = 0, status = 0, pivot_count = 0, arrivals = 0, pivots = 0, ranks = 0,
              is_pivot = 0, is_outlier = 0, keep = 0, scores = 0, affinity = 0, located = 0;
  std::size_t bytes = 0;
};

// Work sizes. They depend on the shape only (not on the device), so the
// workspace size and the order of every sum are the same on any GPU.
inline constexpr index_t target_degree_blocks = 2048;  // a few waves on 132 SMs
inline constexpr index_t min_chunk_rows = 64;           // keeps partials below ~10% of the read
inline constexpr index_t target_complement_blocks = 1024;
inline constexpr index_t max_groups = 64;

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

inline std::size_t carve(std::size_t& offset, std::size_t bytes) {
  const std::size_t at = (offset + 255) / 256 * 256;  // 256-byte aligned, as CUB's temporary storage
  offset = at + bytes;
  return at;
}

inline status make_layout(const std::array<index_t, 5>& e, const budget& b, const options& o, std::size_t element_size,
                          layout& out) {
  if (e[0] < 0) return negative_batch(e[0]);
  plan& p = out.p;
  if (auto s = make_plan({e[1], e[2], e[3], e[4]}, o, p); !s) return s;
  if (auto s = budget_tokens(b, p.candidates, out.budget); !s) return s;
  const auto layers = static_cast<index_t>(p.pivot_layers.size());
  if (layers > max_pivot_layers)
    return fail(errc::invalid_layer, "options.pivot_layers: ", layers,
                " pivot layers (the CUDA backend takes at most ", max_pivot_layers, ")");
  const index_t most = std::numeric_limits<int>::max();
  auto too_large = [&] {
    return fail(errc::invalid_shape, "attention maps: batch = ", e[0], " x ",
                layers, " pivot layers of ", p.heads, " x ",
                p.tokens, " rows is too large for one launch; split the batch");
  };
  if (e[0] > most || p.heads > most) return too_large();  // before the products below
  const index_t batch = e[0], n = p.tokens, rows = p.heads * n, z = batch * layers;
  tiling& t = out.t;
  const index_t width = tile_bytes / static_cast<index_t>(element_size);
  const index_t tiles = ceil_div(n, width);
  t.tiles = static_cast<int>(tiles);
  t.tile_width = static_cast<int>(ceil_div(n, tiles));
  index_t chunks = ceil_div(target_degree_blocks, std::max<index_t>(1, z * tiles));
  chunks = std::min(chunks, ceil_div(rows, min_chunk_rows));
  t.rows_per_chunk = ceil_div(ceil_div(rows, chunks), stage_rows) * stage_rows;
  t.chunks = static_cast<int>(ceil_div(rows, t.rows_per_chunk));
  t.column_blocks = static_cast<int>(ceil_div(n, 32));
  t.groups = static_cast<int>(std::min({ceil_div(target_complement_blocks, std::max<index_t>(1, batch)), max_groups,
                                        p.candidates}));
  out.degree_blocks = z * tiles * t.chunks;
  out.reduce_blocks = z * t.column_blocks;
  out.complement_blocks = batch * t.groups;
  if (out.degree_blocks > most || out.reduce_blocks > most || out.complement_blocks > most || rows > most)
    return too_large();

  const auto count = [](index_t x) { return static_cast<std::size_t>(x); };
  std::size_t at = 0;
  out.partials = carve(at, count(z * t.chunks * n) * sizeof(double));
  out.degrees = carve(at, count(z * n) * sizeof(double));
  out.status = carve(at, count(batch) * sizeof(int));
  out.pivot_count = carve(at, count(batch) * sizeof(int));
  out.arrivals = carve(at, count(2 * batch) * sizeof(unsigned));
  out.pivots = carve(at, count(batch * n) * sizeof(int));
  out.ranks = carve(at, count(batch * n) * sizeof(int));
  out.is_pivot = carve(at, count(batch * n));
  out.is_outlier = carve(at, count(batch * n));
  out.keep = carve(at, count(batch * n));
  out.scores = carve(at, count(batch * t.groups * n) * sizeof(double));
  out.affinity = carve(at, count(batch * t.groups * n) * sizeof(double));
  out.located = carve(at, sizeof(unsigned long long));
  out.bytes = carve(at, 0);
  return {};
}

inline scratch scratch_in(const layout& l, void* workspace) {
  auto* base = static_cast<unsigned char*>(workspace);
  scratch w{};
  w.partials = reinterpret_cast<double*>(base + l.partials);
  w.degrees = reinterpret_cast<double*>(base + l.degrees);
  w.status = reinterpret_cast<int*>(base + l.status);
  w.pivot_count = reinterpret_cast<int*>(base + l.pivot_count);
  w.arrivals = reinterpret_cast<unsigned*>(base + l.arrivals);
  w.pivots = reinterpret_cast<int*>(base + l.pivots);
  w.ranks = reinterpret_cast<int*>(base + l.ranks);
  w.is_pivot = base + l.is_pivot;
  w.is_outlier = base + l.is_outlier;
  w.keep = base + l.keep;
  w.scores = reinterpret_cast<double*>(base + l.scores);
  w.affinity = reinterpret_cast<double*>(base + l.affinity);
  w.located = reinterpret_cast<unsigned long long*>(base + l.located);
  return w;
}

template <class T>
problem problem_of(const layout& l, const batched_attention_view<const T, device_memory>& v, const options& o) {
  problem q{};
  q.data = v.data();
  q.item_stride = v.stride(0);
  q.layer_stride = v.stride(1);
  q.head_stride = v.stride(2);
  q.row_stride = v.stride(3);
  q.key_stride = v.stride(4);
  q.batch = static_cast<int>(v.batch());
  q.heads = static_cast<int>(l.p.heads);
  q.tokens = static_cast<int>(l.p.tokens);
  q.first = static_cast<int>(l.p.first);
  q.last = static_cast<int>(l.p.last);
  q.top_k = static_cast<int>(std::min<index_t>(o.pivots_per_layer, l.p.candidates));
  q.fence_factor = o.fence_factor;
  q.complementary_layer = static_cast<int>(l.p.complementary_layer);
  q.column = o.complementary_from == direction::column;
  q.budget = l.budget;
  q.pivot_layer_count = static_cast<int>(l.p.pivot_layers.size());
  for (std::size_t k = 0; k < l.p.pivot_layers.size(); ++k) q.pivot_layers[k] = static_cast<int>(l.p.pivot_layers[k]);
  return q;
}

}  // namespace cuda
}  // namespace detail
}  // namespace freepruner

#pragma once
// The CUDA backend's kernels (nvcc only). Three launches per call:
//
//   1. degree_partials: SPEC steps 0-1, the one pass over the pivot layers.
//      Blocks over (item, pivot layer, column tile, row chunk) stage 16 rows
//      of a tile in shared memory with aligned 16-byte loads, then each
//      thread adds its columns' elements in fp64.
//   2. reduce_degrees: the chunk partials in a fixed order -> r; the last
//      block of each item then picks its pivots (step 2).
//   3. complement_pass: blocks over (item, group of pivots) gather each pivot's
//      row (or column) of the complementary layer, head-averaged in fp64,
//      and mark its outliers (step 3); the last block of each item fits the
//      budget and writes the kept tokens (steps 4-5).
//
// No float atomics, and every sum has a fixed order: the result does not
// depend on scheduling. "Last block" hand-offs read what other blocks wrote
// with ld.global.cg (L2), never through a possibly stale L1 line.

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "block.cuh"
#include "layout.hpp"

namespace freepruner {
namespace detail {
namespace cuda {

/// Raw bits of an element and their float value.
template <class T>
struct element;
template <>
struct element<float> {
  using raw = unsigned int;
  __device__ static float to_float(raw r) { return __uint_as_float(r); }
};
template <>
struct element<__half> {
  using raw = unsigned short;
  __device__ static float to_float(raw r) { return __half2float(__ushort_as_half(r)); }
};
template <>
struct element<__nv_bfloat16> {
  using raw = unsigned short;
  __device__ static float to_float(raw r) { return __uint_as_float(static_cast<unsigned>(r) << 16); }
};

template <class T, bool Vector>
struct degree_tile {
  using raw = typename element<T>::raw;
  static constexpr int width = tile_bytes / static_cast<int>(sizeof(raw));  // columns of a full tile
  static constexpr int per_vector = 16 / static_cast<int>(sizeof(raw));     // elements of a 16-byte load
  static constexpr int stride = width + per_vector;  // a staged row: the tile plus room for its misalignment
  static constexpr int vectors = width / per_vector + 1;
  static constexpr int per_lane = (vectors + 31) / 32;
  static constexpr int rows_per_warp = stage_rows / block_warps;
  static constexpr int columns_per_thread = width / block_threads;
  static_assert(stage_rows % block_warps == 0 && width % block_threads == 0, "tiling constants");
};

/// SPEC steps 0-1: partial column sums of the pivot layers, the diagonal
/// left out (multiplied by 0, so a NaN or infinity there still shows).
/// Vector: keys contiguous (key stride 1), read 16 bytes at a time at
/// aligned addresses whatever the row's alignment (N = 577 rows are not);
/// otherwise one element at a time, any strides.
template <class T, bool Vector>
__global__ void __launch_bounds__(block_threads)
    degree_partials(const __grid_constant__ problem p, const tiling t, const scratch w) {
  using pass = degree_tile<T, Vector>;
  using raw = typename pass::raw;
  constexpr int per_vector = pass::per_vector, stride = pass::stride;
  __shared__ __align__(16) raw stage[stage_rows * stride];
  __shared__ int stage_shift[stage_rows], stage_query[stage_rows];

  if (blockIdx.x == 0)  // the hand-off counters of the next two kernels
    for (int i = static_cast<int>(threadIdx.x); i < 2 * p.batch; i += block_threads) w.arrivals[i] = 0;

  const int layers = p.pivot_layer_count, n = p.tokens;
  const int chunk = static_cast<int>(blockIdx.x % static_cast<unsigned>(t.chunks));
  const index_t rest = blockIdx.x / static_cast<unsigned>(t.chunks);
  const int tile = static_cast<int>(rest % t.tiles);
  const index_t z = rest / t.tiles;  // item * K + k
  const index_t item = z / layers;
  const int k = static_cast<int>(z % layers);
  const int c0 = tile * t.tile_width;
  const int cols = min(t.tile_width, n - c0);
  const index_t rows = static_cast<index_t>(p.heads) * n;
  const index_t f0 = chunk * t.rows_per_chunk;
  const index_t f1 = min(rows, f0 + t.rows_per_chunk);
  const raw* base = static_cast<const raw*>(p.data) + item * p.item_stride + p.pivot_layers[k] * p.layer_stride +
                    c0 * p.key_stride;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);

  // Row f of a layer is (head f / N, query f % N): memory order for contiguous maps.
  auto row_of = [&](index_t f, int& query) {
    const index_t h = f / n;
    query = static_cast<int>(f - h * n);
    return base + h * p.head_stride + query * p.row_stride;
  };

  double acc[pass::columns_per_thread];
#pragma unroll
  for (int u = 0; u < pass::columns_per_thread; ++u) acc[u] = 0.0;

  // Every element is added in fp64, as the CPU adds them: sums that are
  // exact there (equal or dyadic values) are exact here, so exact ties stay
  // ties and fall to the index, as on the CPU. fp32 partial sums would round
  // differently per column (the zeroed diagonal sits in a different place).
  auto accumulate = [&](int staged) {
#pragma unroll
    for (int u = 0; u < pass::columns_per_thread; ++u) {
      const int cc = static_cast<int>(threadIdx.x) + u * block_threads;
      if (cc >= cols) continue;
      const int col = c0 + cc;
      double sum = acc[u];
#pragma unroll 4
      for (int r = 0; r < staged; ++r) {
        const double x = element<T>::to_float(stage[r * stride + stage_shift[r] + cc]);
        sum += stage_query[r] == col ? x * 0.0 : x;
      }
      acc[u] = sum;
    }
  };

  const index_t stages = (f1 - f0 + stage_rows - 1) / stage_rows;
  if constexpr (Vector) {
    // Loads of stage s + 1 are in flight while stage s is summed.
    uint4 held[pass::rows_per_warp][pass::per_lane];
    int held_shift[pass::rows_per_warp], held_query[pass::rows_per_warp], held_count[pass::rows_per_warp];
    auto load = [&](index_t s0) {
#pragma unroll
      for (int rr = 0; rr < pass::rows_per_warp; ++rr) {
        const index_t f = s0 + warp + rr * block_warps;
        held_count[rr] = 0;
        if (f >= f1) continue;
        int query = 0;
        const raw* row = row_of(f, query);
        const int shift = static_cast<int>((reinterpret_cast<std::uintptr_t>(row) / sizeof(raw)) % per_vector);
        const raw* aligned = row - shift;
        held_shift[rr] = shift;
        held_query[rr] = query;
        held_count[rr] = (shift + cols + per_vector - 1) / per_vector;
#pragma unroll
        for (int u = 0; u < pass::per_lane; ++u) {
          const int q = lane + 32 * u;
          if (q >= held_count[rr]) continue;
          const int col = c0 - shift + q * per_vector;  // column of the vector's first element
          if (col >= 0 && col + per_vector <= n) {
            held[rr][u] = __ldg(reinterpret_cast<const uint4*>(aligned + q * per_vector));
          } else {  // the row's first or last vector: only its own elements
            union {
              uint4 v;
              raw e[per_vector];
            } part;
            part.v = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
            for (int e = 0; e < per_vector; ++e)
              if (col + e >= c0 && col + e < c0 + cols) part.e[e] = aligned[q * per_vector + e];
            held[rr][u] = part.v;
          }
        }
      }
    };
    auto store = [&]() {
#pragma unroll
      for (int rr = 0; rr < pass::rows_per_warp; ++rr) {
        const int r = warp + rr * block_warps;
        if (held_count[rr] == 0) continue;
        if (lane == 0) {
          stage_shift[r] = held_shift[rr];
          stage_query[r] = held_query[rr];
        }
#pragma unroll
        for (int u = 0; u < pass::per_lane; ++u) {
          const int q = lane + 32 * u;
          if (q < held_count[rr]) *reinterpret_cast<uint4*>(&stage[r * stride + q * per_vector]) = held[rr][u];
        }
      }
    };
    if (stages > 0) load(f0);
    for (index_t s = 0; s < stages; ++s) {
      const index_t s0 = f0 + s * stage_rows;
      store();
      __syncthreads();
      if (s + 1 < stages) load(s0 + stage_rows);
      accumulate(static_cast<int>(min(static_cast<index_t>(stage_rows), f1 - s0)));
      __syncthreads();
    }
  } else {
    for (index_t s = 0; s < stages; ++s) {
      const index_t s0 = f0 + s * stage_rows;
#pragma unroll
      for (int rr = 0; rr < pass::rows_per_warp; ++rr) {
        const int r = warp + rr * block_warps;
        const index_t f = s0 + r;
        if (f >= f1) continue;
        int query = 0;
        const raw* row = row_of(f, query);
        for (int c = lane; c < cols; c += 32) stage[r * stride + c] = row[c * p.key_stride];
        if (lane == 0) {
          stage_shift[r] = 0;
          stage_query[r] = query;
        }
      }
      __syncthreads();
      accumulate(static_cast<int>(min(static_cast<index_t>(stage_rows), f1 - s0)));
      __syncthreads();
    }
  }

  double* out = w.partials + (z * t.chunks + chunk) * n + c0;
#pragma unroll
  for (int u = 0; u < pass::columns_per_thread; ++u) {
    const int cc = static_cast<int>(threadIdx.x) + u * block_threads;
    if (cc < cols) out[cc] = acc[u];
  }
}

/// SPEC step 2 for one item, by the block that completed its degrees.
/// `cache`: shared memory for cached_tokens doubles.
__device__ inline void pick_pivots(const problem& p, const scratch& w, int item, block_storage& s, double* cache) {
  const int n = p.tokens, layers = p.pivot_layer_count, m = p.last - p.first;
  const double* r = w.degrees + static_cast<index_t>(item) * layers * n;
  std::uint8_t* is_pivot = w.is_pivot + static_cast<index_t>(item) * n;
  std::uint8_t* is_outlier = w.is_outlier + static_cast<index_t>(item) * n;
  const int tid = static_cast<int>(threadIdx.x);

  // A NaN or infinity read leaves its column sum non-finite: report the
  // first such pivot layer, in the order given.
  key_t bad = ~key_t{0};
  for (int k = 0; k < layers; ++k)
    for (int j = tid; j < n; j += block_threads)
      if (!isfinite(__ldcg(r + static_cast<index_t>(k) * n + j)) && static_cast<key_t>(k) < bad) bad = static_cast<key_t>(k);
  bad = block_min(bad, s);
  if (bad != ~key_t{0}) {
    if (tid == 0) {
      w.status[item] = 1 + static_cast<int>(bad);
      w.pivot_count[item] = 0;
    }
    return;
  }
  if (tid == 0) w.status[item] = 0;
  for (int j = tid; j < n; j += block_threads) {
    is_pivot[j] = 0;
    is_outlier[j] = 0;
  }
  __syncthreads();
  auto everyone = [](int) { return true; };
  auto mark = [&](int i) { is_pivot[i] = 1; };
  const bool cached = n <= cached_tokens;
  for (int k = 0; k < layers; ++k) {
    const double* rk = r + static_cast<index_t>(k) * n;
    if (cached) {
      for (int j = tid; j < n; j += block_threads) cache[j] = __ldcg(rk + j);
      __syncthreads();
    }
    auto degree = [&](int i) { return cached ? cache[i] : __ldcg(rk + i); };
    if (p.top_k > 0) {  // fixed: the top k, ties by the smaller index
      block_first_m(p.first, p.last, [&](int i) { return descending_key(degree(i)); }, everyone, p.top_k, mark, s);
    } else {  // adaptive: strict upper outliers over C
      const double fence = block_fence(p.first, p.last, degree, everyone, m, p.fence_factor, s);
      for (int i = p.first + tid; i < p.last; i += block_threads)
        if (degree(i) > fence) is_pivot[i] = 1;
    }
    __syncthreads();
  }
  int count = 0;
  for (int i = p.first + tid; i < p.last; i += block_threads) count += is_pivot[i];
  if (block_sum(count, s) == 0) {  // no layer has an outlier: the top-1 of each
    for (int k = 0; k < layers; ++k) {
      const double* rk = r + static_cast<index_t>(k) * n;
      block_first_m(p.first, p.last, [&](int i) { return descending_key(__ldcg(rk + i)); }, everyone, 1, mark, s);
      __syncthreads();
    }
  }
  int* pivots = w.pivots + static_cast<index_t>(item) * n;
  const int total = block_compact(
      p.first, p.last, [&](int i) { return is_pivot[i] != 0; }, [&](int i, int at) { pivots[at] = i; }, s);
  if (tid == 0) w.pivot_count[item] = total;
}

/// r = (sum of the chunk partials, in chunk order) / H; then the block
/// that completes an item picks its pivots. (A template, as every kernel
/// here: compiled only where a call instantiates it, one definition.)
template <int Unused = 0>
__global__ void __launch_bounds__(block_threads) reduce_degrees(const __grid_constant__ problem p, const tiling t,
                                                                  const scratch w) {
  __shared__ double part[block_warps][32];
  __shared__ block_storage s;
  __shared__ double cache[cached_tokens];
  __shared__ int last;
  const int n = p.tokens, layers = p.pivot_layer_count;
  const index_t z = blockIdx.x / static_cast<unsigned>(t.column_blocks);
  const int column_block = static_cast<int>(blockIdx.x % static_cast<unsigned>(t.column_blocks));
  const int lane = static_cast<int>(threadIdx.x % 32), group = static_cast<int>(threadIdx.x / 32);
  const int col = column_block * 32 + lane;
  double sum = 0.0;
  if (col < n)
    for (int c = group; c < t.chunks; c += block_warps) sum += w.partials[(z * t.chunks + c) * n + col];
  part[group][lane] = sum;
  __syncthreads();
  if (group == 0 && col < n) {
    double total = 0.0;
    for (int g = 0; g < block_warps; ++g) total += part[g][lane];
    w.degrees[z * n + col] = total / p.heads;
  }
  const int item = static_cast<int>(z / layers);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    last = atomicAdd(&w.arrivals[item], 1u) == static_cast<unsigned>(layers * t.column_blocks - 1) ? 1 : 0;
  __syncthreads();
  if (last == 0) return;
  __threadfence();
  pick_pivots(p, w, item, s, cache);
}

/// SPEC steps 4-5 for one item, by the block that completed its complements.
/// `cache`: shared memory for cached_tokens doubles.
__device__ inline void write_kept(const problem& p, const tiling& t, const scratch& w, int item, token_t* kept,
                                  index_t* counts, std::uint8_t* kept_pivotal, index_t capacity, block_storage& s,
                                  double* cache) {
  const int tid = static_cast<int>(threadIdx.x), n = p.tokens, groups = t.groups;
  if (__ldcg(w.status + item) != 0) {  // a NaN or infinity was read
    if (tid == 0) counts[item] = -1;
    return;
  }
  const index_t at = static_cast<index_t>(item) * n;
  const std::uint8_t* is_pivot = w.is_pivot + at;
  const std::uint8_t* is_outlier = w.is_outlier + at;
  std::uint8_t* keep = w.keep + at;
  const int pivot_count = w.pivot_count[item];
  auto pivotal = [&](int j) { return is_pivot[j] != 0; };
  auto complementary = [&](int j) { return is_pivot[j] == 0 && __ldcg(is_outlier + j) != 0; };  // Q = (∪ O_p) \ P

  if (p.budget.is_adaptive()) {  // step 4: K = P ∪ Q
    for (int j = tid; j < n; j += block_threads) keep[j] = pivotal(j) || complementary(j) ? 1 : 0;
    __syncthreads();
  } else {  // step 5
    const int m = static_cast<int>(p.budget.count()), layers = p.pivot_layer_count, warp = tid / 32, lane = tid % 32;
    for (int j = tid; j < n; j += block_threads) keep[j] = 0;
    __syncthreads();
    auto take = [&](int j) { keep[j] = 1; };
    if (pivot_count <= m) {
      for (int j = p.first + tid; j < p.last; j += block_threads)
        if (pivotal(j)) keep[j] = 1;
    } else {  // 1. P by best rank over the pivot layers, then index; one warp a pivot
      const int* pivots = w.pivots + at;
      int* ranks = w.ranks + at;
      const double* r = w.degrees + static_cast<index_t>(item) * layers * n;
      for (int q = warp; q < pivot_count; q += block_warps) {
        const int i = pivots[q];
        int best = p.last - p.first;
        for (int k = 0; k < layers; ++k) {
          const double* rk = r + static_cast<index_t>(k) * n;
          const double ri = rk[i];
          int ahead = 0;
          for (int j = p.first + lane; j < p.last; j += 32) ahead += ranks_before(rk[j], j, ri, i) ? 1 : 0;
          best = min(best, __reduce_add_sync(0xffffffffu, ahead));
        }
        if (lane == 0) ranks[i] = best;
      }
      __syncthreads();
      block_first_m(p.first, p.last, [&](int i) { return static_cast<key_t>(ranks[i]); }, pivotal, m, take, s);
    }
    __syncthreads();
    int room = m - min(pivot_count, m);
    if (room > 0) {
      // w(j) = the groups' shares summed in group order, in shared memory
      // (or, for a large image, over group 0's share).
      const double* shares = w.affinity + static_cast<index_t>(item) * groups * n;
      double* affinity = n <= cached_tokens ? cache : w.affinity + static_cast<index_t>(item) * groups * n;
      for (int j = p.first + tid; j < p.last; j += block_threads) {
        double sum = 0.0;
        for (int g = 0; g < groups; ++g) sum += __ldcg(shares + static_cast<index_t>(g) * n + j);
        affinity[j] = sum;
      }
      __syncthreads();
      auto by_affinity = [&](int j) { return descending_key(affinity[j]); };
      int q_count = 0;
      for (int j = p.first + tid; j < p.last; j += block_threads) q_count += complementary(j) ? 1 : 0;
      q_count = block_sum(q_count, s);
      if (q_count > room) {  // 2. Q by affinity, ties by index
        block_first_m(p.first, p.last, by_affinity, complementary, room, take, s);
      } else {
        for (int j = p.first + tid; j < p.last; j += block_threads)
          if (complementary(j)) keep[j] = 1;
        room -= q_count;
        if (room > 0)  // 3. the rest, by the same order
          block_first_m(
              p.first, p.last, by_affinity, [&](int j) { return !pivotal(j) && !complementary(j); }, room, take, s);
      }
    }
    __syncthreads();
  }
  token_t* out = kept + static_cast<index_t>(item) * capacity;
  std::uint8_t* out_pivotal = kept_pivotal != nullptr ? kept_pivotal + static_cast<index_t>(item) * capacity : nullptr;
  const int total = block_compact(
      p.first, p.last, [&](int j) { return keep[j] != 0; },
      [&](int j, int position) {
        out[position] = j;
        if (out_pivotal != nullptr) out_pivotal[position] = is_pivot[j];
      },
      s);
  if (tid == 0) counts[item] = total;
}

/// SPEC step 3: per pivot, v_p = the head mean of its row (or column) of
/// layer c, in fp64; its strict upper outliers over C \ {p} go to O_p; the
/// group adds v_p to its share of the affinity. Then the last block of the
/// item fits the budget.
template <class T>
__global__ void __launch_bounds__(block_threads)
    complement_pass(const __grid_constant__ problem p, const tiling t, const scratch w, token_t* kept,
                    index_t* counts, std::uint8_t* kept_pivotal, index_t capacity) {
  using raw = typename element<T>::raw;
  __shared__ block_storage s;
  __shared__ double cache[cached_tokens];
  __shared__ int last;
  const int tid = static_cast<int>(threadIdx.x), n = p.tokens, groups = t.groups;
  const int item = static_cast<int>(blockIdx.x / static_cast<unsigned>(groups));
  const int group = static_cast<int>(blockIdx.x % static_cast<unsigned>(groups));
  const index_t slot = static_cast<index_t>(item) * groups + group;
  double* v = n <= cached_tokens ? cache : w.scores + slot * n;  // v_p, read by every pass of the fence
  double* share = w.affinity + slot * n;
  std::uint8_t* is_outlier = w.is_outlier + static_cast<index_t>(item) * n;
  const raw* layer =
      static_cast<const raw*>(p.data) + item * p.item_stride + p.complementary_layer * p.layer_stride;
  const int from = p.column ? p.first : 0, to = p.column ? p.last : n;  // the v_p entries read

  if (w.status[item] == 0) {
    for (int j = tid; j < n; j += block_threads) share[j] = 0.0;
    __syncthreads();  // the column gather below maps j to other threads
    const int pivot_count = w.pivot_count[item];
    for (int q = group; q < pivot_count; q += groups) {
      const int pivot = w.pivots[static_cast<index_t>(item) * n + q];
      int bad = 0;
      for (int j = from + tid; j < to; j += block_threads) {
        const raw* a = p.column ? layer + j * p.row_stride + pivot * p.key_stride
                                : layer + pivot * p.row_stride + j * p.key_stride;
        double sum = 0.0;
#pragma unroll 4
        for (int h = 0; h < p.heads; ++h) sum += static_cast<double>(element<T>::to_float(a[h * p.head_stride]));
        const double x = sum / p.heads;
        v[j] = x;
        bad |= isfinite(x) ? 0 : 1;
        if (j >= p.first && j < p.last) share[j] += x;
      }
      if (block_sum(bad, s) != 0) {  // also orders the v writes before the reads below
        if (tid == 0) atomicMax(w.status + item, 1 + p.pivot_layer_count);  // status was 0
        break;
      }
      if (p.last - p.first > 1) {
        auto score = [&](int j) { return v[j]; };
        auto other = [&](int j) { return j != pivot; };
        const double fence = block_fence(p.first, p.last, score, other, p.last - p.first - 1, p.fence_factor, s);
        for (int j = p.first + tid; j < p.last; j += block_threads)
          if (j != pivot && v[j] > fence) is_outlier[j] = 1;
      }
      __syncthreads();  // v is rewritten by the next pivot
    }
  }
  __threadfence();
  __syncthreads();
  if (tid == 0)
    last = atomicAdd(&w.arrivals[p.batch + item], 1u) == static_cast<unsigned>(groups - 1) ? 1 : 0;
  __syncthreads();
  if (last == 0) return;
  __threadfence();
  write_kept(p, t, w, item, kept, counts, kept_pivotal, capacity, s, cache);
}

/// diagnose: the first non-finite element (in head, query, key order) among
/// those a failed stage read. mode 0: the whole layer; 1: the pivot rows;
/// 2: the pivot columns of the candidate rows.
template <class T>
__global__ void __launch_bounds__(block_threads)
    locate_non_finite(const __grid_constant__ problem p, index_t item, int layer, int mode,
                      const std::uint8_t* is_pivot, unsigned long long* found) {
  using raw = typename element<T>::raw;
  const int n = p.tokens;
  const index_t f = blockIdx.x;
  const index_t h = f / n;
  const int i = static_cast<int>(f - h * n);
  if (mode == 1 && is_pivot[i] == 0) return;
  if (mode == 2 && (i < p.first || i >= p.last)) return;
  const raw* row = static_cast<const raw*>(p.data) + item * p.item_stride + layer * p.layer_stride +
                   h * p.head_stride + i * p.row_stride;
  for (int j = static_cast<int>(threadIdx.x); j < n; j += block_threads) {
    if (mode == 2 && is_pivot[j] == 0) continue;
    if (!isfinite(element<T>::to_float(row[j * p.key_stride])))
      atomicMin(found, static_cast<unsigned long long>(f * n + j));
  }
}

}  // namespace cuda
}  // namespace detail
}  // namespace freepruner

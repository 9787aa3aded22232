#pragma once
// Block-wide building blocks of the per-image selection (nvcc only): order
// statistics by radix select, the SPEC fence, "the first m in an order" and
// ascending compaction. One block of `block_threads` threads works on one
// image; every result is the same whatever the scheduling (integer counts,
// fixed orders), so ties are decided exactly as the CPU decides them.

#include <cstdint>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda/functional>

#include "../../detail/decisions.hpp"
#include "layout.hpp"

namespace freepruner {
namespace detail {
namespace cuda {

using key_t = unsigned long long;

/// Doubles as unsigned keys in the same order; -0 and +0 get one key, as
/// they compare equal.
__device__ inline key_t order_key(double x) {
  const auto bits = static_cast<key_t>(__double_as_longlong(__dadd_rn(x, 0.0)));
  return (bits >> 63) != 0 ? ~bits : bits | (key_t{1} << 63);
}

__device__ inline double key_value(key_t k) {
  const key_t bits = (k >> 63) != 0 ? k & ~(key_t{1} << 63) : ~k;
  return __longlong_as_double(static_cast<long long>(bits));
}

/// "Larger score first": ascending keys of this order are descending scores.
__device__ inline key_t descending_key(double x) { return ~order_key(x); }

/// Shared memory of the block algorithms below; one per block.
struct block_storage {
  using reduce_int_t = cub::BlockReduce<int, block_threads>;
  using reduce_key_t = cub::BlockReduce<key_t, block_threads>;
  using scan_int_t = cub::BlockScan<int, block_threads>;
  union {
    typename reduce_int_t::TempStorage reduce_int;
    typename reduce_key_t::TempStorage reduce_key;
    typename scan_int_t::TempStorage scan_int;
  } cub;
  int histogram[256];
  int digit, below, in_bucket, value_int;
  key_t value_key;
};

__device__ inline int block_sum(int x, block_storage& s) {
  const int total = block_storage::reduce_int_t(s.cub.reduce_int).Sum(x);
  if (threadIdx.x == 0) s.value_int = total;
  __syncthreads();
  const int out = s.value_int;
  __syncthreads();
  return out;
}

__device__ inline key_t block_min(key_t x, block_storage& s) {
  const key_t least = block_storage::reduce_key_t(s.cub.reduce_key).Reduce(x, ::cuda::minimum<>{});
  if (threadIdx.x == 0) s.value_key = least;
  __syncthreads();
  const key_t out = s.value_key;
  __syncthreads();
  return out;
}

/// Calls f(i, valid) for i in [first, last) strided by the block; every lane
/// of a warp makes the same number of calls (for warp-wide intrinsics).
template <class F>
__device__ void for_each_in_warp_step(int first, int last, F f) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  for (int base = first + static_cast<int>(threadIdx.x & ~31u); base < last; base += block_threads)
    f(base + lane, base + lane < last);
}

/// The k-th smallest key (0-based) among the members of [first, last); k is
/// below the member count. Radix select, 8 bits a pass, from the top byte;
/// it stops as soon as one member is left in the chosen bucket.
template <class Key, class Member>
__device__ key_t block_select(int first, int last, Key key, Member member, int k, block_storage& s) {
  key_t prefix = 0, mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    s.histogram[threadIdx.x] = 0;
    __syncthreads();
    for_each_in_warp_step(first, last, [&](int i, bool valid) {
      int d = -1;
      if (valid && member(i)) {
        const key_t x = key(i);
        if ((x & mask) == prefix) d = static_cast<int>((x >> shift) & 255u);
      }
      // One atomic per distinct digit in the warp: scores cluster in few buckets.
      const unsigned peers = __match_any_sync(0xffffffffu, d);
      if (d >= 0 && static_cast<int>(threadIdx.x & 31u) == __ffs(static_cast<int>(peers)) - 1)
        atomicAdd(&s.histogram[d], __popc(peers));
    });
    __syncthreads();
    if (threadIdx.x < 32) {  // the bucket holding rank k: a warp scan over 8 bins a lane
      const int lane = static_cast<int>(threadIdx.x);
      int local = 0;
      for (int d = 0; d < 8; ++d) local += s.histogram[lane * 8 + d];
      int inclusive = local;
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += y;
      }
      const int exclusive = inclusive - local;
      if (exclusive <= k && k < inclusive) {
        int below = exclusive, d = lane * 8;
        while (below + s.histogram[d] <= k) below += s.histogram[d++];
        s.digit = d;
        s.below = below;
        s.in_bucket = s.histogram[d];
      }
    }
    __syncthreads();
    prefix |= static_cast<key_t>(s.digit) << shift;
    mask |= key_t{255} << shift;
    k -= s.below;
    if (s.in_bucket == 1 && shift > 0) {  // a single member left: fetch it
      const key_t found_prefix = prefix, found_mask = mask;
      __syncthreads();  // everyone has read s.in_bucket
      for (int i = first + static_cast<int>(threadIdx.x); i < last; i += block_threads)
        if (member(i)) {
          const key_t x = key(i);
          if ((x & found_mask) == found_prefix) s.value_key = x;
        }
      __syncthreads();
      const key_t out = s.value_key;
      __syncthreads();
      return out;
    }
  }
  __syncthreads();  // s.digit and friends are free again
  return prefix;
}

/// The smallest member key above t, or t itself when the k+1-th (0-based)
/// order statistic equals t (more than k+1 members are <= t).
template <class Key, class Member>
__device__ key_t block_successor(int first, int last, Key key, Member member, int k, key_t t, block_storage& s) {
  int at_most = 0;
  key_t next = ~key_t{0};
  for (int i = first + static_cast<int>(threadIdx.x); i < last; i += block_threads)
    if (member(i)) {
      const key_t x = key(i);
      if (x <= t) ++at_most;
      else if (x < next) next = x;
    }
  at_most = block_sum(at_most, s);
  next = block_min(next, s);
  return at_most >= k + 2 ? t : next;
}

/// SPEC "Outliers": fence = Q3 + f (Q3 - Q1) of the n >= 1 member values,
/// numpy's linear quartiles (the CPU's quantile_position / quantile_value /
/// fence_value on the same order statistics).
template <class Value, class Member>
__device__ double block_fence(int first, int last, Value value, Member member, int n, double f, block_storage& s) {
  auto key = [&](int i) { return order_key(value(i)); };
  auto quartile = [&](double t) {
    std::size_t k = 0;
    double g = 0;
    quantile_position(static_cast<std::size_t>(n), t, k, g);
    const key_t a = block_select(first, last, key, member, static_cast<int>(k), s);
    const key_t b = g != 0.0 ? block_successor(first, last, key, member, static_cast<int>(k), a, s) : a;
    return quantile_value(key_value(a), key_value(b), g);
  };
  const double q1 = quartile(0.25);
  const double q3 = quartile(0.75);
  return fence_value(q1, q3, f);
}

/// Calls mark(i) for the first m members of [first, last) in the order
/// (key ascending, index ascending); 1 <= m <= member count. With
/// `descending_key` this is SPEC's "larger first, ties by the smaller index".
template <class Key, class Member, class Mark>
__device__ void block_first_m(int first, int last, Key key, Member member, int m, Mark mark, block_storage& s) {
  const key_t t = block_select(first, last, key, member, m - 1, s);
  int less = 0;
  for (int i = first + static_cast<int>(threadIdx.x); i < last; i += block_threads)
    if (member(i) && key(i) < t) ++less;
  const int ties = m - block_sum(less, s);  // members equal to t, taken by index
  int carry = 0;
  for (int base = first; base < last; base += block_threads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const bool in = i < last && member(i);
    const key_t x = in ? key(i) : 0;
    const int equal = in && x == t ? 1 : 0;
    int before = 0, total = 0;
    block_storage::scan_int_t(s.cub.scan_int).ExclusiveSum(equal, before, total);
    __syncthreads();
    if (in && (x < t || (equal != 0 && carry + before < ties))) mark(i);
    carry += total;
  }
}

/// Calls put(i, position) for the flagged i of [first, last), positions
/// 0, 1, ... in ascending i; returns the count.
template <class Flag, class Put>
__device__ int block_compact(int first, int last, Flag flag, Put put, block_storage& s) {
  int carry = 0;
  for (int base = first; base < last; base += block_threads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const int on = i < last && flag(i) ? 1 : 0;
    int before = 0, total = 0;
    block_storage::scan_int_t(s.cub.scan_int).ExclusiveSum(on, before, total);
    __syncthreads();
    if (on != 0) put(i, carry + before);
    carry += total;
  }
  return carry;
}

}  // namespace cuda
}  // namespace detail
}  // namespace freepruner

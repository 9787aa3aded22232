#pragma once
// Runs the CUDA backend's kernels on the CPU, without CUDA, so machines with
// no GPU (CI) execute the very kernel code, under the suite's sanitizers
// too: a block is 256 threads with a barrier for __syncthreads, warp
// intrinsics exchange through per-warp slots, "__shared__" is a static
// (blocks run one after another, in a shuffled order), atomics are
// std::atomic_ref. The stand-ins for CUDA's and CUB's headers are in
// include/. Include this before the kernels.
//
// What it cannot show: performance, and what only real hardware does
// (the memory model across blocks, L1 behaviour, launch limits).

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct emulated_dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local emulated_dim3 threadIdx, blockIdx;

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

namespace emulation {

struct warp_exchange {
  std::barrier<> arrived{32};
  long long slot[32];
};
inline std::barrier<>* block_barrier = nullptr;
inline warp_exchange* warps = nullptr;

// Every lane posts a value; f(slots, lane) computes the lane's answer.
template <class F>
long long warp_round(long long mine, F f) {
  warp_exchange& w = warps[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x % 32);
  w.slot[lane] = mine;
  w.arrived.arrive_and_wait();
  const long long answer = f(w.slot, lane);
  w.arrived.arrive_and_wait();
  return answer;
}

/// Runs `body` as every block of a grid of `blocks`, 256 threads each, in a
/// shuffled block order (the result must not depend on it).
inline void launch(long long blocks, const std::function<void()>& body, std::mt19937_64& order_rng) {
  std::vector<long long> order(static_cast<std::size_t>(blocks));
  for (long long b = 0; b < blocks; ++b) order[static_cast<std::size_t>(b)] = b;
  std::shuffle(order.begin(), order.end(), order_rng);
  std::barrier<> barrier(256);
  std::vector<warp_exchange> exchange(8);
  block_barrier = &barrier;
  warps = exchange.data();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 256; ++t)
    threads.emplace_back([&order, &body, &barrier, t] {
      threadIdx.x = t;
      for (long long b : order) {
        blockIdx.x = static_cast<unsigned>(b);
        body();
        barrier.arrive_and_wait();  // the block is done before the next reuses "shared" memory
      }
    });
  for (auto& th : threads) th.join();
}

}  // namespace emulation

inline void __syncthreads() { emulation::block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline int __shfl_up_sync(unsigned, int v, int delta) {
  return static_cast<int>(
      emulation::warp_round(v, [delta](const long long* s, int lane) { return lane >= delta ? s[lane - delta] : s[lane]; }));
}
inline unsigned __match_any_sync(unsigned, int v) {
  return static_cast<unsigned>(emulation::warp_round(v, [v](const long long* s, int) {
    long long peers = 0;
    for (int i = 0; i < 32; ++i)
      if (s[i] == v) peers |= 1ll << i;
    return peers;
  }));
}
inline int __reduce_add_sync(unsigned, int v) {
  return static_cast<int>(emulation::warp_round(v, [](const long long* s, int) {
    long long total = 0;
    for (int i = 0; i < 32; ++i) total += s[i];
    return total;
  }));
}

template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
inline int atomicMax(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::atomic_ref<unsigned long long> a(*p);
  unsigned long long old = a.load();
  while (old > v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
inline long long __double_as_longlong(double x) {
  long long r = 0;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline double __longlong_as_double(long long x) {
  double r = 0;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __uint_as_float(unsigned x) {
  float r = 0;
  std::memcpy(&r, &x, sizeof r);
  return r;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
using std::isfinite;

#pragma once
// Emulation stand-in for cub::BlockReduce: the result is valid in thread 0
// only, and the temporary storage needs a barrier before reuse, as in CUB.
namespace cub {
template <class T, int Threads>
class BlockReduce {
 public:
  struct TempStorage {
    T slot[Threads];
  };
  explicit BlockReduce(TempStorage& s) : s_(s) {}
  T Sum(T x) {
    return Reduce(x, [](T a, T b) { return a + b; });
  }
  template <class Op>
  T Reduce(T x, Op op) {
    s_.slot[threadIdx.x] = x;
    __syncthreads();
    if (threadIdx.x != 0) return T(12345);  // anything: CUB leaves it undefined
    T r = s_.slot[0];
    for (int i = 1; i < Threads; ++i) r = op(r, s_.slot[i]);
    return r;
  }

 private:
  TempStorage& s_;
};
}  // namespace cub

#pragma once
// Emulation stand-in for cub::BlockScan (exclusive sums with the block total).
namespace cub {
template <class T, int Threads>
class BlockScan {
 public:
  struct TempStorage {
    T slot[Threads];
  };
  explicit BlockScan(TempStorage& s) : s_(s) {}
  void ExclusiveSum(T in, T& out, T& aggregate) {
    s_.slot[threadIdx.x] = in;
    __syncthreads();
    T before = 0, total = 0;
    for (int i = 0; i < Threads; ++i) {
      if (i < static_cast<int>(threadIdx.x)) before += s_.slot[i];
      total += s_.slot[i];
    }
    out = before;
    aggregate = total;
  }

 private:
  TempStorage& s_;
};
}  // namespace cub

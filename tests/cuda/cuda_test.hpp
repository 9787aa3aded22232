#pragma once
// Helpers of the CUDA tests: a plain checker (no test framework, so a GPU
// machine needs only nvcc and Eigen), device buffers, and a seeded engine
// for tests/softmax_maps.hpp.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "../softmax_maps.hpp"

namespace fpcuda {

struct checker {
  int passed = 0, failed = 0;
  bool expect(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      std::printf("FAILED: %s\n", what.c_str());
    }
    return ok;
  }
};

/// Exits 77 (CTest: skipped) when there is no device to run on.
inline void skip_without_device(const char* suite) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e == cudaSuccess && devices > 0) return;
  std::printf("%s: no CUDA device (%s); skipped\n", suite,
              e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
  std::fflush(stdout);
  std::exit(77);
}

/// A device allocation of n T's (aborts on failure: the tests need it).
template <class T>
class device_array {
 public:
  explicit device_array(std::size_t n) : n_(n) {
    if (cudaMalloc(reinterpret_cast<void**>(&p_), n == 0 ? 1 : n * sizeof(T)) != cudaSuccess) {
      std::printf("cudaMalloc of %zu bytes failed\n", n * sizeof(T));
      std::exit(1);
    }
  }
  template <class U>
  explicit device_array(const std::vector<U>& host) : device_array(host.size()) {
    static_assert(sizeof(U) == sizeof(T), "same element size");
    (void)cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() { (void)cudaFree(p_); }
  T* get() const noexcept { return p_; }
  std::vector<T> to_host() const {
    std::vector<T> out(n_);
    (void)cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

inline std::mt19937_64& rng() {
  static std::mt19937_64 engine(1);
  return engine;
}
inline int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng()); }
inline double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng()); }

/// Softmax rows with "sink" keys (tests/softmax_maps.hpp), from the seeded engine.
inline std::vector<double> random_maps(int layers, int heads, int tokens, bool flat = false) {
  return fptest::softmax_maps(rng(), layers, heads, tokens, flat);
}

/// The same bits in the device type D as in the host type E.
template <class D, class E>
std::vector<D> same_bits(const std::vector<E>& x) {
  static_assert(sizeof(D) == sizeof(E), "same element size");
  std::vector<D> out(x.size());
  std::memcpy(static_cast<void*>(out.data()), x.data(), x.size() * sizeof(E));
  return out;
}

}  // namespace fpcuda

// The CUDA backend from a translation unit that the host C++ compiler builds
// alone, as llama.cpp builds its multimodal code: it includes only
// backend/cuda/api.hpp for the backend and links the kernels compiled from
// instantiate.cu. The CUDA runtime header is here for the test's own
// allocations and copies. Exit 77 (CTest: skipped) without a CUDA device.

#include <freepruner/backend/cuda/api.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>
#include <freepruner/freepruner.hpp>

#include "cuda_test.hpp"

static_assert(std::is_same<freepruner::cuda::stream_t, cudaStream_t>::value,
              "freepruner::cuda::stream_t is cudaStream_t");

namespace {

namespace fp = freepruner;
using fp::index_t;
using fp::token_t;

fpcuda::checker check;

// One call of the type-erased API on maps of element type E, against the CPU backend.
template <class E>
void run(fp::cuda::dtype type, const char* name, const fp::budget& b) {
  const index_t B = 2, L = 2, H = 3, N = 30;
  const auto logical = fpcuda::random_maps(static_cast<int>(B * L), static_cast<int>(H), static_cast<int>(N));
  std::vector<E> host(logical.size());
  for (std::size_t k = 0; k < host.size(); ++k) host[k] = static_cast<E>(static_cast<float>(logical[k]));
  const fpcuda::device_array<unsigned char> device(host.size() * sizeof(E));
  (void)cudaMemcpy(device.get(), host.data(), host.size() * sizeof(E), cudaMemcpyHostToDevice);
  const void* data = device.get();

  fp::options o;
  o.prefix_tokens = 1;
  index_t capacity = 0;
  check.expect(fp::cuda::capacity(b, N, o, capacity).ok(), std::string(name) + ": capacity");
  const auto maps = fp::cuda::device_maps::contiguous(data, type, B, L, H, N);
  std::size_t bytes = 0;
  fp::status s = fp::cuda::select(nullptr, bytes, maps, b, o, nullptr, nullptr);
  check.expect(s.ok() && bytes > 0, std::string(name) + ": size query: " + s.message());
  fpcuda::device_array<unsigned char> workspace(bytes);
  fpcuda::device_array<token_t> kept(static_cast<std::size_t>(B * capacity));
  fpcuda::device_array<index_t> counts(static_cast<std::size_t>(B));
  fpcuda::device_array<std::uint8_t> pivotal(static_cast<std::size_t>(B * capacity));
  cudaStream_t stream = nullptr;
  (void)cudaStreamCreate(&stream);
  s = fp::cuda::select(workspace.get(), bytes, maps, b, o, kept.get(), counts.get(), stream, pivotal.get());
  check.expect(s.ok(), std::string(name) + ": select: " + s.message());
  (void)cudaStreamSynchronize(stream);
  (void)cudaStreamDestroy(stream);
  const auto h_kept = kept.to_host();
  const auto h_counts = counts.to_host();
  const auto h_pivotal = pivotal.to_host();
  for (index_t item = 0; item < B; ++item) {
    const fp::selection want =
        fp::select(fp::attention_view<const E>(host.data() + item * L * H * N * N, L, H, N), b, o);
    fp::selection got;
    const index_t count = h_counts[static_cast<std::size_t>(item)];
    for (index_t k = 0; k < count && k < capacity; ++k) {
      const auto at = static_cast<std::size_t>(item * capacity + k);
      got.indices.push_back(h_kept[at]);
      (h_pivotal[at] != 0 ? got.pivotal : got.complementary).push_back(h_kept[at]);
    }
    check.expect(want == got, std::string(name) + ": item " + std::to_string(item) + " differs from the CPU backend");
  }

  // Host memory where device memory is expected.
  const auto on_host = fp::cuda::device_maps::contiguous(host.data(), type, B, L, H, N);
  s = fp::cuda::select(workspace.get(), bytes, on_host, b, o, kept.get(), counts.get());
  check.expect(s.code() == fp::errc::wrong_memory_space, std::string(name) + ": host maps: " + s.message());
}

}  // namespace

int main() {
  fpcuda::skip_without_device("freepruner CUDA API from the host compiler");
  run<float>(fp::cuda::dtype::f32, "f32", fp::budget::ratio(0.5));
  run<float>(fp::cuda::dtype::f32, "f32 adaptive", fp::budget::adaptive());
  run<Eigen::half>(fp::cuda::dtype::f16, "f16", fp::budget::count(7));
  run<Eigen::bfloat16>(fp::cuda::dtype::bf16, "bf16", fp::budget::adaptive());
  std::printf("%d passed, %d failed\n", check.passed, check.failed);
  return check.failed == 0 ? 0 : 1;
}

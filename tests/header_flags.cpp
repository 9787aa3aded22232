// Compiled with llama.cpp's warning flags and -Werror (tests/CMakeLists.txt):
// every public header, every element type, every entry point.

#include <freepruner/adapters/eigen.hpp>
#include <freepruner/adapters/mdspan.hpp>
#include <freepruner/backend/cuda/api.hpp>
#include <freepruner/freepruner.hpp>

namespace fp_flags {

template <class E>
std::size_t instantiate_all(const E* data) {
  freepruner::attention_view<const E> v(data, 1, 1, 2);
  freepruner::batched_attention_view<const E> b(data, 1, 1, 1, 2);
  freepruner::selection s;
  std::vector<freepruner::selection> many;
  std::size_t n = 0;
  if (freepruner::try_select(v, freepruner::budget::count(1), freepruner::options{}, s)) n += s.size();
  if (freepruner::try_select(b, freepruner::budget::ratio(0.5), freepruner::options{}, many)) n += many.size();
  n += freepruner::select(v).size() + freepruner::select(b).size();
  const auto r = freepruner::contribution_degree(v, 0);
  const auto p = freepruner::pivotal_tokens({r});
  const auto q = freepruner::complementary_tokens(v, p);
  n += freepruner::fit_budget({r}, p, q, freepruner::budget::adaptive()).size();
  return n;
}

}  // namespace fp_flags

int main() {
  const float f[4] = {0.5f, 0.5f, 0.25f, 0.75f};
  const double d[4] = {0.5, 0.5, 0.25, 0.75};
  const Eigen::half h[4] = {Eigen::half(0.5f), Eigen::half(0.5f), Eigen::half(0.25f), Eigen::half(0.75f)};
  const Eigen::bfloat16 bf[4] = {Eigen::bfloat16(0.5f), Eigen::bfloat16(0.5f), Eigen::bfloat16(0.25f),
                                 Eigen::bfloat16(0.75f)};
  const std::size_t n =
      fp_flags::instantiate_all(f) + fp_flags::instantiate_all(d) + fp_flags::instantiate_all(h) + fp_flags::instantiate_all(bf);
  const auto kept = freepruner::kept_tokens(freepruner::budget::ratio(0.5), 577, freepruner::options{1, 0, 0, 1.5,
                                                                                                     freepruner::direction::row, -1, {}});
  freepruner::index_t slots = 0;  // the CUDA API's host-only part
  const bool cuda_ok = freepruner::cuda::capacity(freepruner::budget::ratio(0.5), 577, freepruner::options{1, 0, 0, 1.5,
                                                  freepruner::direction::row, -1, {}}, slots).ok() && slots == 288 &&
                       freepruner::cuda::device_maps::contiguous(f, freepruner::cuda::dtype::f32, 1, 1, 1, 2).strides[3] == 2;
  return n > 0 && kept && *kept == 288 && cuda_ok ? 0 : 1;
}

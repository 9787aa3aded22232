// Misuses that must stop compilation with freepruner's own message; one per
// FREEPRUNER_FAIL_* definition (tests/CMakeLists.txt checks the message).

#include <array>

#include <freepruner/freepruner.hpp>

#if defined(FREEPRUNER_FAIL_device_mdspan_without_cuda)
#include <cuda/std/mdspan>
#include <freepruner/adapters/mdspan.hpp>
#endif

namespace {
struct no_traits {};
struct no_key_stride {};
}  // namespace

template <>
struct freepruner::attention_traits<no_key_stride> {
  using value_type = float;
  static std::array<index_t, 4> extents(const no_key_stride&) { return {1, 1, 1, 1}; }
  static const float* row(const no_key_stride&, index_t, index_t, index_t) { return nullptr; }
};

int main() {
#if defined(FREEPRUNER_FAIL_not_a_tensor)
  (void)freepruner::select(no_traits{});
#elif defined(FREEPRUNER_FAIL_missing_key_stride)
  (void)freepruner::select(no_key_stride{});
#elif defined(FREEPRUNER_FAIL_device_without_cuda)
  const freepruner::attention_view<const float, freepruner::device_memory> v(nullptr, 1, 1, 1);
  (void)freepruner::select(v);
#elif defined(FREEPRUNER_FAIL_device_mdspan_without_cuda)
  using device_floats = freepruner::device_accessor<cuda::std::default_accessor<const float>>;
  using ext = cuda::std::dextents<int, 4>;
  const cuda::std::mdspan<const float, ext, cuda::std::layout_right, device_floats> m(nullptr, 1, 1, 1, 1);
  (void)freepruner::select(m);
#elif defined(FREEPRUNER_FAIL_element_type)
  const int x[1] = {1};
  (void)freepruner::select(freepruner::attention_view<const int>(x, 1, 1, 1));
#endif
  return 0;
}

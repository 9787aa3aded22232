// Misuses that must stop compilation with freepruner's own message; one per
// FREEPRUNER_FAIL_* definition (tests/CMakeLists.txt checks the message).
// With FREEPRUNER_FAIL_OK as well, each case is corrected and must compile,
// so that a compile-fail test cannot pass on some unrelated error.

#include <array>

#include <freepruner/freepruner.hpp>

#if defined(FREEPRUNER_FAIL_device_mdspan_without_cuda)
#include <cuda/std/mdspan>
#include <freepruner/adapters/mdspan.hpp>
#endif

namespace {
struct no_traits {};
struct no_key_stride {};
struct with_key_stride {};

constexpr float one_map[1] = {1.0f};

// Everything but key_stride; the two specializations below differ only there.
template <class T>
struct traits_without_key_stride {
  using value_type = float;
  static std::array<freepruner::index_t, 4> extents(const T&) { return {1, 1, 1, 1}; }
  static const float* row(const T&, freepruner::index_t, freepruner::index_t, freepruner::index_t) { return one_map; }
};
}  // namespace

template <>
struct freepruner::attention_traits<no_key_stride> : traits_without_key_stride<no_key_stride> {};

template <>
struct freepruner::attention_traits<with_key_stride> : traits_without_key_stride<with_key_stride> {
  static index_t key_stride(const with_key_stride&) { return 1; }
};

int main() {
#if defined(FREEPRUNER_FAIL_not_a_tensor) && !defined(FREEPRUNER_FAIL_OK)
  (void)freepruner::select(no_traits{});
#elif defined(FREEPRUNER_FAIL_not_a_tensor)
  (void)freepruner::select(with_key_stride{});
#elif defined(FREEPRUNER_FAIL_missing_key_stride) && !defined(FREEPRUNER_FAIL_OK)
  (void)freepruner::select(no_key_stride{});
#elif defined(FREEPRUNER_FAIL_missing_key_stride)
  (void)freepruner::select(with_key_stride{});
#elif defined(FREEPRUNER_FAIL_device_without_cuda) && !defined(FREEPRUNER_FAIL_OK)
  const freepruner::attention_view<const float, freepruner::device_memory> v(nullptr, 1, 1, 1);
  (void)freepruner::select(v);
#elif defined(FREEPRUNER_FAIL_device_without_cuda)
  const freepruner::attention_view<const float, freepruner::host_memory> v(one_map, 1, 1, 1);
  (void)freepruner::select(v);
#elif defined(FREEPRUNER_FAIL_device_mdspan_without_cuda) && !defined(FREEPRUNER_FAIL_OK)
  using device_floats = freepruner::device_accessor<cuda::std::default_accessor<const float>>;
  using ext = cuda::std::dextents<int, 4>;
  const cuda::std::mdspan<const float, ext, cuda::std::layout_right, device_floats> m(nullptr, 1, 1, 1, 1);
  (void)freepruner::select(m);
#elif defined(FREEPRUNER_FAIL_device_mdspan_without_cuda)
  using host_floats = freepruner::host_accessor<cuda::std::default_accessor<const float>>;
  using ext = cuda::std::dextents<int, 4>;
  const cuda::std::mdspan<const float, ext, cuda::std::layout_right, host_floats> m(one_map, 1, 1, 1, 1);
  (void)freepruner::select(m);
#elif defined(FREEPRUNER_FAIL_element_type) && !defined(FREEPRUNER_FAIL_OK)
  const int x[1] = {1};
  (void)freepruner::select(freepruner::attention_view<const int>(x, 1, 1, 1));
#elif defined(FREEPRUNER_FAIL_element_type)
  const float x[1] = {1.0f};
  (void)freepruner::select(freepruner::attention_view<const float>(x, 1, 1, 1));
#endif
  return 0;
}

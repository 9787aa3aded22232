// Tensor types other than attention_view: the Eigen and mdspan adapters, a
// user type through attention_traits, one through ADL as_attention_view, and
// the concept's answers for types that are not tensors.

#include <freepruner/adapters/eigen.hpp>
#include <freepruner/adapters/mdspan.hpp>
#include <freepruner/freepruner.hpp>

#if FREEPRUNER_TEST_HAVE_CUDA_MDSPAN
#include <cuda/std/mdspan>
#endif
#if defined(__has_include)
#if __has_include(<experimental/mdspan>)  // Kokkos's reference mdspan, where installed
#include <experimental/mdspan>
#define FREEPRUNER_TEST_HAVE_KOKKOS_MDSPAN 1
#endif
#endif

#include "common.hpp"

namespace {

using freepruner::index_t;

// An engine that keeps each layer in its own buffer (as ggml does), with the
// layout [query][head][key]; read through attention_traits.
struct layered_maps {
  std::vector<const float*> layer_data;
  index_t heads = 0, tokens = 0;
};

}  // namespace

template <>
struct freepruner::attention_traits<layered_maps> {
  using value_type = float;
  static std::array<index_t, 4> extents(const layered_maps& m) {
    return {static_cast<index_t>(m.layer_data.size()), m.heads, m.tokens, m.tokens};
  }
  static const float* row(const layered_maps& m, index_t l, index_t h, index_t i) {
    return m.layer_data[static_cast<std::size_t>(l)] + (i * m.heads + h) * m.tokens;
  }
  static index_t key_stride(const layered_maps&) { return 1; }
};

namespace user {
// A strided tensor that maps itself onto a view, found by ADL.
struct tensor {
  const double* data;
  index_t layers, heads, tokens;
};
inline freepruner::attention_view<const double> as_attention_view(const tensor& t) {
  return {t.data, t.layers, t.heads, t.tokens};
}
struct not_a_tensor {};
}  // namespace user

static_assert(freepruner::is_attention_tensor_v<freepruner::attention_view<const float>>, "view");
static_assert(freepruner::is_attention_tensor_v<freepruner::attention_view<float>>, "mutable view");
static_assert(freepruner::is_attention_tensor_v<layered_maps>, "trait specialization");
static_assert(freepruner::is_attention_tensor_v<user::tensor>, "ADL");
static_assert(freepruner::is_attention_tensor_v<Eigen::Tensor<float, 4, Eigen::RowMajor>>, "Eigen tensor");
static_assert(freepruner::is_attention_tensor_v<Eigen::TensorMap<Eigen::Tensor<const float, 4>>>, "Eigen map");
static_assert(!freepruner::is_attention_tensor_v<Eigen::Tensor<float, 3>>, "rank 3 is not one");
static_assert(!freepruner::is_attention_tensor_v<user::not_a_tensor>, "no traits");
static_assert(!freepruner::is_attention_tensor_v<std::vector<float>>, "no traits");
static_assert(!freepruner::is_attention_tensor_v<freepruner::batched_attention_view<const float>>, "rank 5");
#if FREEPRUNER_HAS_CONCEPTS
static_assert(freepruner::attention_tensor<layered_maps>, "concept");
static_assert(!freepruner::attention_tensor<user::not_a_tensor>, "concept");
#endif

namespace {

// An mdspan's memory space is its accessor's: plain accessors and
// host_accessor read host memory, device_accessor device memory, and no
// conversion moves maps from one space to the other.
template <template <class, class, class, class> class Mdspan, template <class> class Default, class Ext, class Layout>
constexpr bool mdspan_memory_spaces() {
  using freepruner::device_memory;
  using freepruner::host_memory;
  using freepruner::tensor_memory_space_t;
  using plain = Mdspan<const float, Ext, Layout, Default<const float>>;
  using host = Mdspan<const float, Ext, Layout, freepruner::host_accessor<Default<const float>>>;
  using device = Mdspan<const float, Ext, Layout, freepruner::device_accessor<Default<const float>>>;
  using device_mutable = Mdspan<float, Ext, Layout, freepruner::device_accessor<Default<float>>>;
  static_assert(freepruner::is_attention_tensor_v<plain> && freepruner::is_attention_tensor_v<host> &&
                    freepruner::is_attention_tensor_v<device> && freepruner::is_attention_tensor_v<device_mutable>,
                "every accessor makes an attention tensor");
  static_assert(std::is_same<tensor_memory_space_t<plain>, host_memory>::value, "plain accessor: host");
  static_assert(std::is_same<tensor_memory_space_t<host>, host_memory>::value, "host_accessor: host");
  static_assert(std::is_same<tensor_memory_space_t<device>, device_memory>::value, "device_accessor: device");
  static_assert(std::is_same<tensor_memory_space_t<device_mutable>, device_memory>::value, "device_accessor: device");
  static_assert(std::is_same<freepruner::tensor_value_t<device_mutable>, float>::value, "value type");
  // Built as with a default accessor: pointer and mapping, or nothing.
  static_assert(std::is_constructible<device, const float*, typename device::mapping_type>::value, "pointer + mapping");
  static_assert(std::is_default_constructible<device>::value, "default");
  static_assert(std::is_convertible<device_mutable, device>::value, "float to const float, same space");
  using device_policy = typename device::accessor_type;
  static_assert(std::is_convertible<typename device_policy::offset_policy, device_policy>::value,
                "offsetting keeps the space");
  static_assert(!std::is_constructible<plain, device>::value && !std::is_constructible<host, device>::value,
                "device maps never become host maps");
  static_assert(!std::is_constructible<device, host>::value, "nor host_accessor maps device maps");
  static_assert(std::is_constructible<device, plain>::value && !std::is_convertible<plain, device>::value,
                "a plain mdspan becomes a device one only explicitly");
  return true;
}

#if FREEPRUNER_TEST_HAVE_CUDA_MDSPAN
static_assert(mdspan_memory_spaces<cuda::std::mdspan, cuda::std::default_accessor, cuda::std::dextents<int, 4>,
                                   cuda::std::layout_right>(), "cuda::std::mdspan, layout_right");
static_assert(mdspan_memory_spaces<cuda::std::mdspan, cuda::std::default_accessor, cuda::std::dextents<long, 4>,
                                   cuda::std::layout_stride>(), "cuda::std::mdspan, layout_stride");
#endif
#if FREEPRUNER_TEST_HAVE_KOKKOS_MDSPAN
static_assert(mdspan_memory_spaces<std::experimental::mdspan, std::experimental::default_accessor,
                                   std::experimental::dextents<int, 4>, std::experimental::layout_right>(),
              "std::experimental::mdspan, layout_right");
#endif

}  // namespace

TEST_CASE("adapters and user types read the maps in place", "[adapters]") {
  for (int t = 0; t < 30; ++t) {
    const fpref::config c = fptest::random_config();
    const index_t L = c.layers, H = c.heads, N = c.tokens;
    const auto maps = fptest::convert<float>(fptest::random_maps(c.layers, c.heads, c.tokens));
    const auto o = fptest::options_of(c);
    const auto b = fptest::budget_of(c);
    const freepruner::attention_view<const float> dense(maps.data(), L, H, N);
    const auto want = freepruner::select(dense, b, o);
    INFO(fptest::describe(c));

    SECTION("Eigen::TensorMap, row-major, in place") {
      Eigen::TensorMap<Eigen::Tensor<const float, 4, Eigen::RowMajor>> map(maps.data(), L, H, N, N);
      REQUIRE(freepruner::select(map, b, o) == want);
    }
    SECTION("Eigen::Tensor, column-major (t(l,h,i,j) keeps its meaning)") {
      Eigen::Tensor<float, 4> owned(L, H, N, N);
      for (index_t l = 0; l < L; ++l)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j) owned(l, h, i, j) = dense(l, h, i, j);
      REQUIRE(freepruner::select(owned, b, o) == want);
      REQUIRE(freepruner::contribution_degree(owned, -1) == freepruner::contribution_degree(dense, -1));
    }
    SECTION("a user type with one buffer per layer, through attention_traits") {
      std::vector<std::vector<float>> per_layer(static_cast<std::size_t>(L), std::vector<float>(static_cast<std::size_t>(H * N * N)));
      layered_maps m{{}, H, N};
      for (index_t l = 0; l < L; ++l) {
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j) per_layer[static_cast<std::size_t>(l)][static_cast<std::size_t>((i * H + h) * N + j)] = dense(l, h, i, j);
        m.layer_data.push_back(per_layer[static_cast<std::size_t>(l)].data());
      }
      REQUIRE(freepruner::select(m, b, o) == want);
    }
    SECTION("a user type found by ADL") {
      const std::vector<double> wide = fptest::widen(maps);
      REQUIRE(freepruner::select(user::tensor{wide.data(), L, H, N}, b, o) == want);
    }
#if FREEPRUNER_TEST_HAVE_CUDA_MDSPAN
    SECTION("cuda::std::mdspan, layout_right and layout_stride") {
      cuda::std::mdspan<const float, cuda::std::dextents<int, 4>> right(maps.data(), static_cast<int>(L), static_cast<int>(H),
                                                                      static_cast<int>(N), static_cast<int>(N));
      REQUIRE(freepruner::select(right, b, o) == want);
      // Keys-major storage through layout_stride.
      std::vector<float> transposed(maps.size());
      for (index_t l = 0; l < L; ++l)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j) transposed[static_cast<std::size_t>(((l * H + h) * N + j) * N + i)] = dense(l, h, i, j);
      using ext = cuda::std::dextents<long, 4>;
      cuda::std::layout_stride::mapping<ext> mapping(ext(L, H, N, N), cuda::std::array<long, 4>{H * N * N, N * N, 1, N});
      cuda::std::mdspan<const float, ext, cuda::std::layout_stride> strided(transposed.data(), mapping);
      REQUIRE(freepruner::select(strided, b, o) == want);
    }
    SECTION("cuda::std::mdspan with host_accessor reads what attention_view reads") {
      using ext = cuda::std::dextents<long, 4>;
      using host_floats = freepruner::host_accessor<cuda::std::default_accessor<float>>;
      std::vector<float> copy(maps);
      const cuda::std::mdspan<float, ext, cuda::std::layout_right, host_floats> writable(copy.data(), L, H, N, N);
      using marked_maps = cuda::std::mdspan<const float, ext, cuda::std::layout_right,
                                            freepruner::host_accessor<cuda::std::default_accessor<const float>>>;
      STATIC_REQUIRE(std::is_same<freepruner::tensor_memory_space_t<marked_maps>, freepruner::host_memory>::value);
      const marked_maps marked = writable;  // float to const float: the accessor's conversion
      bool same_elements = true;            // access() forwards to the wrapped accessor
      for (long l = 0; l < L; ++l)
        for (long h = 0; h < H; ++h)
          for (long i = 0; i < N; ++i)
            for (long j = 0; j < N; ++j)
              same_elements &= marked[cuda::std::array<long, 4>{l, h, i, j}] == dense(l, h, i, j);
      REQUIRE(same_elements);
      REQUIRE(freepruner::select(marked, b, o) == want);
      REQUIRE(freepruner::contribution_degree(marked, -1) == freepruner::contribution_degree(dense, -1));
    }
#endif
  }
}

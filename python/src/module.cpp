// freepruner's Python module: converts tensors (DLPack or the buffer
// protocol) into views, releases the GIL and calls the C++ API. Every check
// of the inputs' values is the C++ API's own; this file adds only what C++
// types rule out at compile time (dtype, rank, device, Python strings).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <freepruner/extras/presets.hpp>
#include <freepruner/freepruner.hpp>

namespace nb = nanobind;
namespace fp = freepruner;
using fp::index_t;

namespace {

// Any dtype, shape, strides and device; read only, so nothing is copied.
using array = nb::ndarray<nb::ro>;

// A dimension's extent, signed as the views' (DLPack's shapes are int64 too).
index_t extent(const array& a, std::size_t d) { return static_cast<index_t>(a.shape(d)); }

template <class... Parts>
[[noreturn]] void fail(fp::errc code, const Parts&... parts) {
  fp::detail::raise(fp::detail::fail(code, parts...));
}

enum class element { f32, f64, f16, bf16 };

std::string dtype_name(const nb::dlpack::dtype& t) {
  const char* kind = "unknown";
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
    default: break;
  }
  if (t.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bool)) return "bool";
  std::string name = kind + std::to_string(t.bits);
  if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
  return name;
}

element element_of(const array& a, const std::string& what) {
  const auto t = a.dtype();
  if (t.lanes == 1) {
    if (t.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float)) {
      if (t.bits == 32) return element::f32;
      if (t.bits == 64) return element::f64;
      if (t.bits == 16) return element::f16;
    } else if (t.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat) && t.bits == 16) {
      return element::bf16;
    }
  }
  fail(fp::errc::invalid_shape, what, ": dtype ", dtype_name(t),
       " (freepruner reads float32, float64, float16 and bfloat16)");
}

const char* device_name(int type) {
  switch (type) {
    case 1: return "cpu";
    case 2: return "cuda";
    case 3: return "cuda_host";
    case 4: return "opencl";
    case 7: return "vulkan";
    case 8: return "metal";
    case 10: return "rocm";
    case 13: return "cuda_managed";
    case 14: return "oneapi";
    default: return "device";
  }
}

// DLPack's kDLCPU and kDLCUDAHost (pinned host memory) are read in place.
bool host_readable(int type) { return type == 1 || type == 3; }

[[noreturn]] void wrong_device(const std::string& what, int type, long long id) {
  fail(fp::errc::wrong_memory_space, what, ": a tensor on ", device_name(type), ":", id,
       " (this build of freepruner reads CPU memory; its CUDA backend is not compiled in: pass .cpu())");
}

// The DLPack or buffer-protocol tensor behind `h`, without a copy.
array import_array(nb::handle h, const std::string& what) {
  array a;
  bool imported = nb::try_cast(h, a, false);
  // torch refuses DLPack export of a tensor that requires grad; its values are read all the same.
  if (!imported && nb::hasattr(h, "requires_grad") && nb::hasattr(h, "detach")) {
    try {
      if (nb::cast<bool>(h.attr("requires_grad"))) imported = nb::try_cast(h.attr("detach")(), a, false);
    } catch (const nb::python_error&) {
      imported = false;
    }
  }
  if (!imported) {
    // Say why when the object names its device (a framework's GPU tensor).
    if (nb::hasattr(h, "__dlpack_device__")) {
      int type = 0;
      long long id = 0;
      try {
        auto dev = nb::cast<nb::tuple>(h.attr("__dlpack_device__")());
        type = nb::cast<int>(dev[0]);
        id = nb::cast<long long>(dev[1]);
      } catch (const nb::python_error&) {
        type = 0;
      }
      if (type != 0 && !host_readable(type)) wrong_device(what, type, id);
    }
    fail(fp::errc::invalid_shape, what, ": a ", std::string(nb::type_name(h.type()).c_str()),
         " is not a tensor freepruner can read (it reads DLPack and buffer-protocol tensors: NumPy, PyTorch, ...)");
  }
  if (!host_readable(a.device_type())) wrong_device(what, a.device_type(), static_cast<long long>(a.device_id()));
  return a;
}

bool is_sequence(nb::handle h) { return nb::isinstance<nb::list>(h) || nb::isinstance<nb::tuple>(h); }

std::string shape_of(const array& a) {
  std::string s = "[";
  for (std::size_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(extent(a, d));
  return s + "]";
}

// Calls f(T{}) with the element type of `e`.
template <class F>
decltype(auto) with_element(element e, F&& f) {
  switch (e) {
    case element::f64: return f(double{});
    case element::f16: return f(Eigen::half{});
    case element::bf16: return f(Eigen::bfloat16{});
    case element::f32: break;
  }
  return f(float{});
}

template <class T>
const T* data_of(const array& a) {
  return static_cast<const T*>(a.data());
}

// Layers held in separate tensors (a list of per-layer [H, N, N] maps, as
// output_attentions gives them), read in place through attention_traits.
struct layer_list {
  std::array<index_t, 4> extents{};
  index_t key_stride = 1;
  std::vector<const void*> data;                  // &A[l][0][0][0]
  std::vector<std::array<index_t, 2>> strides;    // head and query strides of each layer
};

template <class T>
struct typed_layers {
  const layer_list* list;
};

}  // namespace

template <class T>
struct freepruner::attention_traits<typed_layers<T>> {
  using value_type = T;
  static std::array<index_t, 4> extents(const typed_layers<T>& t) { return t.list->extents; }
  static const T* row(const typed_layers<T>& t, index_t l, index_t h, index_t i) {
    const auto k = static_cast<std::size_t>(l);
    return static_cast<const T*>(t.list->data[k]) + h * t.list->strides[k][0] + i * t.list->strides[k][1];
  }
  static index_t key_stride(const typed_layers<T>& t) { return t.list->key_stride; }
};

namespace {

fp::options make_options(index_t prefix_tokens, index_t suffix_tokens, index_t pivots_per_layer, double fence_factor,
                         const std::string& complementary_from, index_t complementary_layer,
                         const std::optional<std::vector<index_t>>& pivot_layers) {
  fp::options o;
  o.prefix_tokens = prefix_tokens;
  o.suffix_tokens = suffix_tokens;
  o.pivots_per_layer = pivots_per_layer;
  o.fence_factor = fence_factor;
  if (complementary_from == "row") {
    o.complementary_from = fp::direction::row;
  } else if (complementary_from == "column") {
    o.complementary_from = fp::direction::column;
  } else {
    fail(fp::errc::invalid_option, "complementary_from = \"", complementary_from, "\" (must be \"row\" or \"column\")");
  }
  o.complementary_layer = complementary_layer;
  if (pivot_layers) o.pivot_layers = *pivot_layers;
  return o;
}

// One selection as three int32 NumPy arrays that own their vectors.
nb::object to_numpy(std::vector<fp::token_t>&& v) {
  auto* owned = new std::vector<fp::token_t>(std::move(v));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<fp::token_t>*>(p); });
  static fp::token_t empty = 0;
  fp::token_t* data = owned->empty() ? &empty : owned->data();
  return nb::cast(nb::ndarray<nb::numpy, fp::token_t, nb::ndim<1>>(data, {owned->size()}, owner));
}

nb::tuple to_python(fp::selection&& s) {
  return nb::make_tuple(to_numpy(std::move(s.indices)), to_numpy(std::move(s.pivotal)),
                        to_numpy(std::move(s.complementary)));
}

nb::list to_python(std::vector<fp::selection>&& items) {
  nb::list out;
  for (auto& s : items) out.append(to_python(std::move(s)));
  return out;
}

// The inputs select understands, converted once; `run` selects on them.
struct maps_input {
  enum class form { single, batch, layers, batched_layers } kind = form::single;
  element type = element::f32;
  std::vector<array> arrays;                      // keeps the tensors alive
  layer_list list;                                // form::layers and batched_layers
  std::vector<std::vector<char>> copies;          // layers whose key stride had to be made 1
  index_t batch = 0;
  std::vector<index_t> item_strides;              // batched_layers: item stride of each layer

  template <class T>
  fp::attention_view<const T> view() const {
    const array& a = arrays[0];
    return fp::attention_view<const T>(data_of<T>(a), {extent(a, 0), extent(a, 1), extent(a, 2), extent(a, 3)},
                                       {a.stride(0), a.stride(1), a.stride(2), a.stride(3)});
  }
  template <class T>
  fp::batched_attention_view<const T> batched_view() const {
    const array& a = arrays[0];
    return fp::batched_attention_view<const T>(
        data_of<T>(a), {extent(a, 0), extent(a, 1), extent(a, 2), extent(a, 3), extent(a, 4)},
        {a.stride(0), a.stride(1), a.stride(2), a.stride(3), a.stride(4)});
  }
  // Batch item b of the per-layer tensors.
  layer_list item(index_t b) const {
    layer_list l = list;
    for (std::size_t k = 0; k < l.data.size(); ++k)
      l.data[k] = static_cast<const char*>(l.data[k]) + b * item_strides[k] * element_size();
    return l;
  }
  index_t element_size() const { return type == element::f32 ? 4 : type == element::f64 ? 8 : 2; }
};

maps_input read_maps(nb::handle maps) {
  maps_input in;
  if (!is_sequence(maps)) {
    in.arrays.push_back(import_array(maps, "maps"));
    const array& a = in.arrays[0];
    in.type = element_of(a, "maps");
    if (a.ndim() == 4) {
      in.kind = maps_input::form::single;
    } else if (a.ndim() == 5) {
      in.kind = maps_input::form::batch;
    } else {
      fail(fp::errc::invalid_shape, "maps: shape ", shape_of(a), " has rank ", static_cast<long long>(a.ndim()),
           " (need [layers, heads, N, N], a batch [B, layers, heads, N, N], or a list of per-layer [heads, N, N])");
    }
    return in;
  }
  const auto seq = nb::borrow<nb::sequence>(maps);
  const std::size_t layers = nb::len(seq);
  if (layers == 0) fail(fp::errc::invalid_shape, "maps: an empty list (need one [heads, N, N] tensor per layer)");
  for (std::size_t l = 0; l < layers; ++l) {
    const std::string what = "maps[" + std::to_string(l) + "]";
    in.arrays.push_back(import_array(seq[l], what));
    const array& a = in.arrays.back();
    const element e = element_of(a, what);
    if (l == 0) {
      in.type = e;
      if (a.ndim() != 3 && a.ndim() != 4)
        fail(fp::errc::invalid_shape, what, ": shape ", shape_of(a), " has rank ", static_cast<long long>(a.ndim()),
             " (a list holds per-layer [heads, N, N], or [B, heads, N, N] for a batch)");
    } else {
      const array& first = in.arrays[0];
      if (e != in.type)
        fail(fp::errc::invalid_shape, what, ": dtype ", dtype_name(a.dtype()), " but maps[0] is ",
             dtype_name(first.dtype()), " (every layer has the same dtype)");
      bool same = a.ndim() == first.ndim();
      for (std::size_t d = 0; same && d < a.ndim(); ++d) same = extent(a, d) == extent(first, d);
      if (!same)
        fail(fp::errc::invalid_shape, what, ": shape ", shape_of(a), " but maps[0] is ", shape_of(first),
             " (every layer has the same shape)");
    }
  }
  const array& first = in.arrays[0];
  const std::size_t o = first.ndim() == 4 ? 1 : 0;  // the batch dimension, when there is one
  in.kind = o ? maps_input::form::batched_layers : maps_input::form::layers;
  in.batch = o ? extent(first, 0) : 1;
  in.list.extents = {static_cast<index_t>(layers), extent(first, o), extent(first, o + 1), extent(first, o + 2)};
  bool one_key_stride = true;
  for (const array& a : in.arrays) one_key_stride &= a.stride(o + 2) == first.stride(o + 2);
  in.list.key_stride = one_key_stride ? first.stride(o + 2) : 1;
  for (const array& a : in.arrays) {
    in.item_strides.push_back(o ? a.stride(0) : 0);
    if (one_key_stride || a.stride(o + 2) == 1) {
      in.list.data.push_back(a.data());
      in.list.strides.push_back({a.stride(o), a.stride(o + 1)});
      continue;
    }
    // Layers with different key strides: the odd ones are copied with a
    // key stride of 1 (attention_traits has one key stride for all layers).
    const index_t n_items = o ? extent(a, 0) : 1, heads = extent(a, o), rows = extent(a, o + 1), keys = extent(a, o + 2);
    const index_t size = in.element_size();
    std::vector<char> copy(static_cast<std::size_t>(n_items * heads * rows * keys * size));
    const char* src = static_cast<const char*>(a.data());
    char* dst = copy.data();
    for (index_t b = 0; b < n_items; ++b)
      for (index_t h = 0; h < heads; ++h)
        for (index_t i = 0; i < rows; ++i)
          for (index_t j = 0; j < keys; ++j, dst += size)
            std::memcpy(dst, src + ((o ? b * a.stride(0) : 0) + h * a.stride(o) + i * a.stride(o + 1) + j * a.stride(o + 2)) * size,
                        static_cast<std::size_t>(size));
    in.item_strides.back() = heads * rows * keys;
    in.list.data.push_back(copy.data());
    in.list.strides.push_back({rows * keys, keys});
    in.copies.push_back(std::move(copy));
  }
  return in;
}

// Selects on converted maps; the caller has released the GIL.
fp::status select_into(const maps_input& in, const fp::budget& b, const fp::options& o, fp::selection& one,
                       std::vector<fp::selection>& many) {
  return with_element(in.type, [&](auto tag) {
    using T = decltype(tag);
    fp::status st;
    switch (in.kind) {
      case maps_input::form::single:
        st = fp::try_select(in.view<T>(), b, o, one);
        break;
      case maps_input::form::batch:
        st = fp::try_select(in.batched_view<T>(), b, o, many);
        break;
      case maps_input::form::layers:
        st = fp::try_select(typed_layers<T>{&in.list}, b, o, one);
        break;
      case maps_input::form::batched_layers:
        many.resize(static_cast<std::size_t>(in.batch));
        for (index_t item = 0; item < in.batch && st; ++item) {
          const layer_list l = in.item(item);
          st = fp::detail::in_item(fp::try_select(typed_layers<T>{&l}, b, o, many[static_cast<std::size_t>(item)]),
                                   item);
        }
        // An empty batch still checks the options and the budget, as the batched view does.
        if (st && in.batch == 0) {
          std::vector<fp::selection> none;
          st = fp::try_select(fp::batched_attention_view<const T>(nullptr, 0, in.list.extents[0], in.list.extents[1],
                                                                  in.list.extents[2]),
                              b, o, none);
        }
        if (!st) many.clear();
        break;
    }
    return st;
  });
}

bool is_batch(const maps_input& in) {
  return in.kind == maps_input::form::batch || in.kind == maps_input::form::batched_layers;
}

// How long the C++ select of the last call took (bench/python_compare.py:
// the binding's overhead is the rest of the call's time).
std::atomic<double> last_select_seconds{0};

// Selects with the GIL released; throws fp::error.
nb::object run(const maps_input& in, const fp::budget& b, const fp::options& o) {
  fp::selection one;
  std::vector<fp::selection> many;
  fp::status st;
  {
    nb::gil_scoped_release nogil;
    const auto t0 = std::chrono::steady_clock::now();
    st = select_into(in, b, o, one, many);
    last_select_seconds.store(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                              std::memory_order_relaxed);
  }
  fp::detail::check(st);
  if (is_batch(in)) return to_python(std::move(many));
  return to_python(std::move(one));
}

nb::object select_maps(nb::handle maps, const fp::budget& b, index_t prefix_tokens, index_t suffix_tokens,
                  index_t pivots_per_layer, double fence_factor, const std::string& complementary_from,
                  index_t complementary_layer, const std::optional<std::vector<index_t>>& pivot_layers) {
  const auto o = make_options(prefix_tokens, suffix_tokens, pivots_per_layer, fence_factor, complementary_from,
                              complementary_layer, pivot_layers);
  return run(read_maps(maps), b, o);
}

// The addresses select reads each layer from (tests: no copy was made).
std::vector<std::uintptr_t> data_pointers(nb::handle maps) {
  const maps_input in = read_maps(maps);
  std::vector<std::uintptr_t> out;
  if (in.kind == maps_input::form::single || in.kind == maps_input::form::batch)
    out.push_back(reinterpret_cast<std::uintptr_t>(in.arrays[0].data()));
  else
    for (const void* p : in.list.data) out.push_back(reinterpret_cast<std::uintptr_t>(p));
  return out;
}

// ---------------------------------------------------------------------------
// Q/K

struct qk_input {
  element type = element::f32;
  std::vector<array> arrays;
  std::vector<const void*> data;
  std::vector<std::array<index_t, 3>> extents, strides;  // of [heads][tokens][dim]
};

qk_input read_qk(nb::handle layers, const char* name, bool tokens_major) {
  qk_input in;
  std::vector<std::pair<nb::handle, std::string>> items;
  nb::object keep;
  if (is_sequence(layers)) {
    const auto seq = nb::borrow<nb::sequence>(layers);
    keep = seq;
    for (std::size_t l = 0; l < nb::len(seq); ++l)
      items.emplace_back(seq[l], std::string(name) + "[" + std::to_string(l) + "]");
  } else {
    items.emplace_back(layers, name);
  }
  // The map of the layout's dimensions to [heads][tokens][dim].
  const std::array<std::size_t, 3> dims = tokens_major ? std::array<std::size_t, 3>{1, 0, 2}
                                                       : std::array<std::size_t, 3>{0, 1, 2};
  for (auto& [h, what] : items) {
    in.arrays.push_back(import_array(h, what));
    const array& a = in.arrays.back();
    const element e = element_of(a, what);
    if (in.arrays.size() == 1) in.type = e;
    if (e != in.type)
      fail(fp::errc::invalid_shape, what, ": dtype ", dtype_name(a.dtype()), " but ", name, "[0] is ",
           dtype_name(in.arrays[0].dtype()), " (every layer has the same dtype)");
    const bool stacked = !is_sequence(layers);
    if (a.ndim() != (stacked ? 4u : 3u))
      fail(fp::errc::invalid_shape, what, ": shape ", shape_of(a), " has rank ", static_cast<long long>(a.ndim()),
           stacked ? " (need [layers, heads, tokens, dim] or a list of per-layer [heads, tokens, dim]; "
                     "[layers, tokens, heads, dim] with layout=\"tokens_major\")"
                   : " (need per-layer [heads, tokens, dim], or [tokens, heads, dim] with layout=\"tokens_major\")");
    const std::size_t o = stacked ? 1 : 0;
    const index_t count = stacked ? extent(a, 0) : 1;
    for (index_t l = 0; l < count; ++l) {
      in.data.push_back(static_cast<const char*>(a.data()) +
                        (stacked ? l * a.stride(0) : 0) * (e == element::f32 ? 4 : e == element::f64 ? 8 : 2));
      in.extents.push_back({extent(a, o + dims[0]), extent(a, o + dims[1]), extent(a, o + dims[2])});
      in.strides.push_back({a.stride(o + dims[0]), a.stride(o + dims[1]), a.stride(o + dims[2])});
    }
  }
  return in;
}

nb::object select_qk(nb::handle q_layers, nb::handle k_layers, const fp::budget& b, std::optional<double> scale,
                     const std::string& layout, index_t prefix_tokens, index_t suffix_tokens, index_t pivots_per_layer,
                     double fence_factor, const std::string& complementary_from, index_t complementary_layer,
                     const std::optional<std::vector<index_t>>& pivot_layers, int threads) {
  const auto o = make_options(prefix_tokens, suffix_tokens, pivots_per_layer, fence_factor, complementary_from,
                              complementary_layer, pivot_layers);
  if (threads < 1) fail(fp::errc::invalid_option, "threads = ", threads, " (must be >= 1)");
  const fp::executor parallel = fp::executor::threads(threads);
  if (layout != "heads_major" && layout != "tokens_major")
    fail(fp::errc::invalid_option, "layout = \"", layout, "\" (must be \"heads_major\" or \"tokens_major\")");
  const bool tokens_major = layout == "tokens_major";
  const qk_input q = read_qk(q_layers, "q_layers", tokens_major), k = read_qk(k_layers, "k_layers", tokens_major);
  if (q.data.size() != k.data.size())
    fail(fp::errc::invalid_shape, "k_layers: ", static_cast<long long>(k.data.size()), " layers but q_layers has ",
         static_cast<long long>(q.data.size()));
  if (q.type != k.type)
    fail(fp::errc::invalid_shape, "k_layers: dtype ", dtype_name(k.arrays[0].dtype()), " but q_layers is ",
         dtype_name(q.arrays[0].dtype()), " (q and k have the same dtype)");
  fp::status st;
  fp::selection out;
  with_element(q.type, [&](auto tag) {
    using T = decltype(tag);
    std::vector<fp::qk_layer<const T>> layers;
    for (std::size_t l = 0; l < q.data.size(); ++l)
      layers.push_back(fp::make_qk_layer(
          fp::qk_tensor<const T>(static_cast<const T*>(q.data[l]), q.extents[l], q.strides[l]),
          fp::qk_tensor<const T>(static_cast<const T*>(k.data[l]), k.extents[l], k.strides[l]), scale.value_or(0.0)));
    nb::gil_scoped_release nogil;
    st = fp::try_select(layers, b, o, out, parallel);
  });
  fp::detail::check(st);
  return to_python(std::move(out));
}

nb::dict preset_options(const fp::preset& p) {
  const fp::options& o = p.select_options;
  nb::dict d;
  d["prefix_tokens"] = o.prefix_tokens;
  d["suffix_tokens"] = o.suffix_tokens;
  d["pivots_per_layer"] = o.pivots_per_layer;
  d["fence_factor"] = o.fence_factor;
  d["complementary_from"] = o.complementary_from == fp::direction::row ? "row" : "column";
  d["complementary_layer"] = o.complementary_layer;
  d["pivot_layers"] = o.pivot_layers.empty() ? nb::none() : nb::cast(o.pivot_layers);
  return d;
}

std::string budget_repr(const fp::budget& b) {
  switch (b.mode()) {
    case fp::budget::kind::count: return "budget.count(" + std::to_string(b.count_value()) + ")";
    case fp::budget::kind::ratio: {
      std::string s;
      fp::detail::append(s, b.ratio_value());
      return "budget.ratio(" + s + ")";
    }
    case fp::budget::kind::adaptive: break;
  }
  return "budget.adaptive()";
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "freepruner's compiled core; use the freepruner package.";
  m.attr("__version__") = FREEPRUNER_VERSION_STRING;

  static nb::object error_type = nb::exception<fp::error>(m, "Error", PyExc_ValueError);
  (void)error_type;

  nb::class_<fp::budget>(m, "budget", "How many tokens to keep: budget.count(m), budget.ratio(x) or budget.adaptive().")
      .def_static("count", &fp::budget::count, nb::arg("m"), "Keep min(m, candidates) tokens; m >= 1.")
      .def_static("ratio", &fp::budget::ratio, nb::arg("x"), "Keep max(1, floor(x * candidates + 0.5)) tokens; 0 < x <= 1.")
      .def_static("adaptive", &fp::budget::adaptive, "Keep the pivotal and complementary tokens (a data-dependent count).")
      .def_prop_ro("kind", [](const fp::budget& b) {
        return b.mode() == fp::budget::kind::count ? "count" : b.mode() == fp::budget::kind::ratio ? "ratio" : "adaptive";
      })
      .def_prop_ro("value", [](const fp::budget& b) -> nb::object {
        if (b.mode() == fp::budget::kind::count) return nb::cast(b.count_value());
        if (b.mode() == fp::budget::kind::ratio) return nb::cast(b.ratio_value());
        return nb::none();
      })
      .def("__repr__", &budget_repr);

  m.def("select", &select_maps, nb::arg("maps").none(), nb::arg("budget"), nb::arg("prefix_tokens"), nb::arg("suffix_tokens"),
        nb::arg("pivots_per_layer"), nb::arg("fence_factor"), nb::arg("complementary_from"),
        nb::arg("complementary_layer"), nb::arg("pivot_layers").none());
  m.def("select_qk", &select_qk, nb::arg("q_layers").none(), nb::arg("k_layers").none(), nb::arg("budget"),
        nb::arg("scale").none(), nb::arg("layout"), nb::arg("prefix_tokens"), nb::arg("suffix_tokens"),
        nb::arg("pivots_per_layer"), nb::arg("fence_factor"), nb::arg("complementary_from"),
        nb::arg("complementary_layer"), nb::arg("pivot_layers").none(), nb::arg("threads"));
  m.def(
      "kept_tokens",
      [](const fp::budget& b, index_t tokens, index_t prefix_tokens, index_t suffix_tokens) {
        fp::options o;
        o.prefix_tokens = prefix_tokens;
        o.suffix_tokens = suffix_tokens;
        return fp::kept_tokens(b, tokens, o);
      },
      nb::arg("budget"), nb::arg("tokens"), nb::arg("prefix_tokens"), nb::arg("suffix_tokens"));
  m.def("_data_pointers", &data_pointers, nb::arg("maps").none());
  m.def("_last_select_seconds", [] { return last_select_seconds.load(std::memory_order_relaxed); });

  nb::class_<fp::preset>(m, "Preset", "A vision encoder's shape and the freepruner settings for it.")
      .def_ro("name", &fp::preset::name)
      .def_ro("tokens", &fp::preset::tokens, "N: tokens of one image, crop or frame")
      .def_ro("grid_rows", &fp::preset::grid_rows)
      .def_ro("grid_cols", &fp::preset::grid_cols)
      .def_ro("frames", &fp::preset::frames)
      .def_ro("heads", &fp::preset::heads)
      .def_ro("encoder_layers", &fp::preset::encoder_layers)
      .def_ro("feature_layer", &fp::preset::feature_layer, "the encoder block whose output the projector reads")
      .def_ro("spatial_merge", &fp::preset::spatial_merge)
      .def_ro("source", &fp::preset::source)
      .def_prop_ro("layers", [](const fp::preset& p) { return p.capture_layers; },
                   "encoder blocks (from 0) whose attention maps to pass to select, in this order")
      .def_prop_ro("options", &preset_options, "keyword arguments for select: select(maps, budget, **preset.options)")
      .def("kept_tokens", &fp::preset::kept_tokens, nb::arg("budget"))
      .def("__repr__", [](const fp::preset& p) { return "<freepruner preset " + p.name + ">"; });

  auto presets = m.def_submodule("presets", "Common vision encoders: presets.by_name(\"llava-1.5\"), presets.names().");
  presets.def("by_name", [](const std::string& name) { return fp::presets::by_name(name); }, nb::arg("name"));
  presets.def("names", &fp::presets::names);
}

#pragma once
// The CPU backend's entry: `select` on host maps (one tensor or a batch) and
// on host Q/K, each a driver of detail/pipeline.hpp over this backend's
// layer sources.

#include <string>
#include <type_traits>
#include <vector>

#include "../../detail/messages.hpp"
#include "../../detail/pipeline.hpp"
#include "../../detail/validate.hpp"
#include "../../executor.hpp"
#include "../../options.hpp"
#include "../../select.hpp"
#include "../../traits.hpp"
#include "../../view.hpp"
#include "scores.hpp"
#include "sources.hpp"

namespace freepruner {
namespace detail {

template <class Tensor>
status check_data(const Tensor& t, const plan& p) {
  for (index_t l = 0; l < p.layers; ++l)
    if (attention_traits<Tensor>::row(t, l, 0, 0) == nullptr) return null_maps(l, p.layers, p.heads, p.tokens);
  return {};
}

template <class Tensor>
constexpr bool assert_host_tensor() {
  static_assert(assert_attention_tensor<Tensor>(), "freepruner: see the message above");
  static_assert(std::is_same<tensor_memory_space_t<Tensor>, host_memory>::value,
                "freepruner: the stage routines read host memory; device maps go through select()");
  static_assert(cpu::is_host_element_v<tensor_value_t<Tensor>>,
                "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 maps");
  return true;
}

namespace cpu {

/// SPEC steps 0-5 on validated maps.
template <class Tensor>
status run_maps(const Tensor& t, const plan& p, kept_count m, const options& o, selection& out) {
  return run_steps<fast_loops>(
      p, o, m, [&](index_t l) { return attention_source<Tensor>(t, l, p, o.complementary_from); }, out);
}

/// SPEC steps 1-5 on validated queries and keys.
template <class T, class Space>
status run_qk(const std::vector<qk_layer<T, Space>>& layers, const plan& p, kept_count m, const options& o,
              const executor& parallel, selection& out) {
  using E = std::remove_cv_t<T>;
  return run_steps<fast_loops>(
      p, o, m,
      [&](index_t l) {
        const auto& x = layers[static_cast<std::size_t>(l)];
        return qk_source<E>(qk_layer<const E>{x.q, x.k, x.scale}, l, p, o.complementary_from, parallel);
      },
      out);
}

}  // namespace cpu

template <>
struct backend<host_memory> {
  static constexpr bool available = true;

  template <class Tensor>
  static status select(const Tensor& t, const budget& b, const options& o, selection& out) {
    static_assert(assert_host_tensor<Tensor>(), "");
    plan p;
    kept_count m;
    if (auto s = make_plan(attention_traits<Tensor>::extents(t), o, p); !s) return s;
    if (auto s = budget_tokens(b, p.candidates, m); !s) return s;
    if (auto s = check_data(t, p); !s) return s;
    return cpu::run_maps(t, p, m, o, out);
  }

  template <class T>
  static status select(const batched_attention_view<T, host_memory>& v, const budget& b, const options& o,
                       std::vector<selection>& out) {
    static_assert(cpu::is_host_element_v<std::remove_cv_t<T>>,
                  "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 maps");
    out.clear();
    if (v.batch() < 0) return negative_batch(v.batch());
    plan p;
    kept_count m;
    const auto& e = v.extents();
    if (auto s = make_plan({e[1], e[2], e[3], e[4]}, o, p); !s) return s;
    if (auto s = budget_tokens(b, p.candidates, m); !s) return s;
    if (v.batch() == 0) return {};  // an empty batch is valid, its options too
    if (v.data() == nullptr) return check_data(v[0], p);
    out.resize(static_cast<std::size_t>(v.batch()));
    for (index_t item = 0; item < v.batch(); ++item)  // each item on its own thresholds
      if (auto s = cpu::run_maps(v[item], p, m, o, out[static_cast<std::size_t>(item)]); !s) {
        out.clear();
        return in_item(s, item);
      }
    return {};
  }
};

}  // namespace detail
}  // namespace freepruner

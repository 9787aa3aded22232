#pragma once
/// \file select.hpp
/// `select` and its stages. validate -> contribution degrees (steps 0-1) ->
/// pivotal (step 2) -> complementary (step 3) -> budget (steps 4-5).

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/scores.hpp"
#include "detail/decisions.hpp"
#include "detail/validate.hpp"
#include "error.hpp"
#include "options.hpp"
#include "traits.hpp"
#include "view.hpp"

namespace freepruner {

/// SPEC step 3's output: the complementary tokens Q (ascending) and the
/// affinity w(j) = sum over P of v_p[j] for every token j (zero outside C \ P),
/// which orders the fill of a fixed budget.
struct complements {
  std::vector<token_t> tokens;
  std::vector<double> affinity;
};

namespace detail {

/// Backend per memory space; a device backend specializes this in its own header.
template <class Space>
struct backend {
  static constexpr bool available = false;
};

template <class Tensor>
status check_data(const Tensor& t, const plan& p) {
  for (index_t l = 0; l < p.layers; ++l)
    if (attention_traits<Tensor>::row(t, l, 0, 0) == nullptr)
      return fail(errc::null_data, "attention maps: data of layer ", static_cast<long long>(l),
                  " is null with shape [", static_cast<long long>(p.layers), ", ", static_cast<long long>(p.heads), ", ",
                  static_cast<long long>(p.tokens), ", ", static_cast<long long>(p.tokens), "]");
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

// Prefixes a batch item's message with its position.
inline status in_item(const status& s, index_t item) {
  if (s) return s;
  const std::string prefix = "freepruner: ";
  std::string text = s.message();
  if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
  return fail(s.code(), "batch item ", static_cast<long long>(item), ": ", text);
}

template <>
struct backend<host_memory> {
  static constexpr bool available = true;

  // Every step after `make_plan`, for one validated input.
  template <class Tensor>
  static status run(const Tensor& t, const plan& p, index_t m, const options& o, selection& out) {
    const std::size_t layers = p.pivot_layers.size(), n = static_cast<std::size_t>(p.tokens);
    std::vector<double> degrees(layers * n), scratch;
    for (std::size_t k = 0; k < layers; ++k) {
      if (auto s = cpu::contribution_degree(t, p.pivot_layers[k], &degrees[k * n], scratch); !s) return s;
      if (auto s = check_spread(&degrees[k * n], p.first, p.last, "the contribution degrees r"); !s) return s;
    }
    const auto pivots = pivotal_from_degrees(degrees.data(), layers, p, o.pivots_per_layer, o.fence_factor);
    std::vector<token_t> comps;
    std::vector<double> affinity;
    if (auto s = cpu::complementary(t, pivots, p, o.complementary_from, o.fence_factor, comps, affinity); !s) return s;
    out = fit_budget(degrees.data(), layers, pivots, comps, affinity, p, m);
    return {};
  }

  template <class Tensor>
  static status select(const Tensor& t, const budget& b, const options& o, selection& out) {
    static_assert(assert_host_tensor<Tensor>(), "");
    plan p;
    index_t m = 0;
    if (auto s = make_plan(attention_traits<Tensor>::extents(t), o, p); !s) return s;
    if (auto s = budget_tokens(b, p.candidates, m); !s) return s;
    if (auto s = check_data(t, p); !s) return s;
    return run(t, p, m, o, out);
  }

  template <class T>
  static status select(const batched_attention_view<T, host_memory>& v, const budget& b, const options& o,
                       std::vector<selection>& out) {
    static_assert(cpu::is_host_element_v<std::remove_cv_t<T>>,
                  "freepruner: the CPU backend reads float, double, Eigen::half and Eigen::bfloat16 maps");
    out.clear();
    if (v.batch() < 0)
      return fail(errc::invalid_shape, "attention maps: batch = ", static_cast<long long>(v.batch()), " (must be >= 0)");
    plan p;
    index_t m = 0;
    const auto& e = v.extents();
    if (auto s = make_plan({e[1], e[2], e[3], e[4]}, o, p); !s) return s;
    if (auto s = budget_tokens(b, p.candidates, m); !s) return s;
    if (v.batch() == 0) return {};  // an empty batch is valid, its options too
    if (v.data() == nullptr) return check_data(v[0], p);
    out.resize(static_cast<std::size_t>(v.batch()));
    for (index_t item = 0; item < v.batch(); ++item)  // each item on its own thresholds
      if (auto s = run(v[item], p, m, o, out[static_cast<std::size_t>(item)]); !s) {
        out.clear();
        return in_item(s, item);
      }
    return {};
  }
};

template <class Tensor>
constexpr bool assert_selectable() {
  static_assert(assert_attention_tensor<Tensor>(), "freepruner: see the message above");
  static_assert(backend<tensor_memory_space_t<Tensor>>::available,
                "freepruner: maps in device_memory need the CUDA backend: #include <freepruner/cuda.cuh>");
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The stages, usable alone.

/// SPEC steps 0-1: the contribution degree r[i] = sum_j Ā[j][i] - Ā[i][i] of
/// every token i in 0..N-1 for one layer (-1: the last), from one read of
/// that layer's maps.
template <class Tensor>
std::vector<double> contribution_degree(const Tensor& maps, index_t layer) {
  static_assert(detail::assert_host_tensor<Tensor>(), "");
  detail::plan p;
  detail::check(detail::make_plan(attention_traits<Tensor>::extents(maps), options{}, p));
  index_t l = 0;
  detail::check(detail::resolve_layer(layer, p.layers, "layer", l));
  detail::check(detail::check_data(maps, p));
  std::vector<double> r(static_cast<std::size_t>(p.tokens)), scratch;
  detail::check(detail::cpu::contribution_degree(maps, l, r.data(), scratch));
  return r;
}

namespace detail {

// Checks a table of degrees (one N-vector per pivot layer) and flattens it.
// Its rows are the pivot layers, so the options' layer choices do not apply.
inline status flatten_degrees(const std::vector<std::vector<double>>& degrees, const options& o, plan& p,
                              std::vector<double>& flat) {
  if (degrees.empty()) return fail(errc::invalid_shape, "degrees: no layer given (need at least one)");
  const auto n = static_cast<index_t>(degrees.front().size());
  if (n == 0) return fail(errc::invalid_shape, "degrees[0] is empty (need one value per token)");
  options table = o;
  table.pivot_layers.clear();
  table.complementary_layer = -1;
  if (auto s = make_plan({static_cast<index_t>(degrees.size()), 1, n, n}, table, p); !s) return s;
  flat.clear();
  for (std::size_t k = 0; k < degrees.size(); ++k) {
    if (static_cast<index_t>(degrees[k].size()) != n)
      return fail(errc::invalid_shape, "degrees[", static_cast<long long>(k), "] has ",
                  static_cast<long long>(degrees[k].size()), " values, degrees[0] has ", static_cast<long long>(n));
    for (std::size_t i = 0; i < degrees[k].size(); ++i)
      if (!std::isfinite(degrees[k][i]))
        return fail(errc::non_finite, "degrees[", static_cast<long long>(k), "][", static_cast<long long>(i),
                    "] = ", degrees[k][i], " (must be finite)");
    if (auto s = check_spread(degrees[k].data(), p.first, p.last, "degrees[k]"); !s) return s;
    flat.insert(flat.end(), degrees[k].begin(), degrees[k].end());
  }
  return {};
}

// A pivot set given by the caller: candidates only; returned sorted, unique.
inline status check_token_set(const std::vector<token_t>& given, const plan& p, const char* what,
                              std::vector<token_t>& out) {
  out = given;
  make_set(out);
  for (token_t t : out)
    if (t < p.first || t >= p.last)
      return fail(errc::invalid_tokens, what, " token ", static_cast<long long>(t), " is not a candidate (",
                  static_cast<long long>(p.first), "..", static_cast<long long>(p.last - 1), ")");
  return {};
}

}  // namespace detail

/// SPEC step 2: the pivotal tokens from the contribution degrees of the pivot
/// layers (one vector of N values per layer, as `contribution_degree` returns).
/// Uses `prefix_tokens`, `suffix_tokens`, `pivots_per_layer`, `fence_factor`.
inline std::vector<token_t> pivotal_tokens(const std::vector<std::vector<double>>& degrees, const options& o = {}) {
  detail::plan p;
  std::vector<double> flat;
  detail::check(detail::flatten_degrees(degrees, o, p, flat));
  return detail::pivotal_from_degrees(flat.data(), degrees.size(), p, o.pivots_per_layer, o.fence_factor);
}

/// SPEC step 3: the complementary tokens of a pivot set, from the layer
/// `o.complementary_layer` of `maps`, in direction `o.complementary_from`.
template <class Tensor>
complements complementary_tokens(const Tensor& maps, const std::vector<token_t>& pivotal, const options& o = {}) {
  static_assert(detail::assert_host_tensor<Tensor>(), "");
  detail::plan p;
  detail::check(detail::make_plan(attention_traits<Tensor>::extents(maps), o, p));
  detail::check(detail::check_data(maps, p));
  std::vector<token_t> pivots;
  detail::check(detail::check_token_set(pivotal, p, "pivotal", pivots));
  complements out;
  detail::check(detail::cpu::complementary(maps, pivots, p, o.complementary_from, o.fence_factor, out.tokens, out.affinity));
  return out;
}

/// SPEC steps 4-5: the kept set for a budget, from the stages' outputs.
inline selection fit_budget(const std::vector<std::vector<double>>& degrees, const std::vector<token_t>& pivotal,
                            const complements& c, const budget& b, const options& o = {}) {
  detail::plan p;
  std::vector<double> flat;
  detail::check(detail::flatten_degrees(degrees, o, p, flat));
  index_t m = 0;
  detail::check(detail::budget_tokens(b, p.candidates, m));
  std::vector<token_t> pivots, comps;
  detail::check(detail::check_token_set(pivotal, p, "pivotal", pivots));
  detail::check(detail::check_token_set(c.tokens, p, "complementary (complements.tokens)", comps));
  if (static_cast<index_t>(c.affinity.size()) != p.tokens)
    detail::raise(detail::fail(errc::invalid_shape, "complements.affinity has ", static_cast<long long>(c.affinity.size()),
                               " values for tokens = ", static_cast<long long>(p.tokens)));
  for (std::size_t j = 0; j < c.affinity.size(); ++j)
    if (!std::isfinite(c.affinity[j]))
      detail::raise(detail::fail(errc::non_finite, "complements.affinity[", static_cast<long long>(j), "] = ",
                                 c.affinity[j], " (must be finite)"));
  std::vector<token_t> overlap;
  std::set_intersection(pivots.begin(), pivots.end(), comps.begin(), comps.end(), std::back_inserter(overlap));
  if (!overlap.empty())
    detail::raise(detail::fail(errc::invalid_tokens, "token ", static_cast<long long>(overlap.front()),
                               " is both pivotal and complementary"));
  return detail::fit_budget(flat.data(), degrees.size(), pivots, comps, c.affinity, p, m);
}

// ---------------------------------------------------------------------------
// select

/// Selects the tokens to keep; never throws. On failure `out` is left
/// empty and the status names the argument and its value.
template <class Tensor>
status try_select(const Tensor& maps, const budget& b, const options& o, selection& out) {
  static_assert(detail::assert_selectable<Tensor>(), "");
  out = selection{};
  return detail::backend<tensor_memory_space_t<Tensor>>::select(maps, b, o, out);
}

/// Selects per item of a batch, each on its own thresholds; never throws.
template <class T, class Space>
status try_select(const batched_attention_view<T, Space>& maps, const budget& b, const options& o,
                  std::vector<selection>& out) {
  static_assert(detail::backend<Space>::available,
                "freepruner: maps in device_memory need the CUDA backend: #include <freepruner/cuda.cuh>");
  return detail::backend<Space>::select(maps, b, o, out);
}

/// Selects the tokens to keep (SPEC steps 0-5). Throws `freepruner::error`
/// on bad input.
template <class Tensor>
selection select(const Tensor& maps, const budget& b = budget::adaptive(), const options& o = {}) {
  selection out;
  detail::check(try_select(maps, b, o, out));
  return out;
}

/// Selects per item of a batch: one selection per item, in batch order.
template <class T, class Space>
std::vector<selection> select(const batched_attention_view<T, Space>& maps, const budget& b = budget::adaptive(),
                              const options& o = {}) {
  std::vector<selection> out;
  detail::check(try_select(maps, b, o, out));
  return out;
}

/// The exact number of tokens `select` will keep for inputs of `tokens`
/// tokens, known before the encoder runs; empty for `budget::adaptive()`,
/// whose count depends on the maps. Throws on an invalid budget or options.
inline std::optional<index_t> kept_tokens(const budget& b, index_t tokens, const options& o = {}) {
  if (tokens < 1)
    detail::raise(detail::fail(errc::invalid_shape, "tokens = ", static_cast<long long>(tokens), " (must be >= 1)"));
  detail::check(detail::check_tokens(o, tokens));
  index_t m = 0;
  detail::check(detail::budget_tokens(b, tokens - o.prefix_tokens - o.suffix_tokens, m));
  if (m < 0) return std::nullopt;
  return m;
}

}  // namespace freepruner

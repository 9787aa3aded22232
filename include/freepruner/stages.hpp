#pragma once
/// \file stages.hpp
/// The SPEC's stages, usable alone on host maps: contribution degrees (steps
/// 0-1), pivotal tokens (step 2), complementary tokens (step 3) and the
/// budget's fill (steps 4-5). `select` runs them in order.

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>
#include <vector>

#include "backend/cpu/backend.hpp"
#include "detail/decisions.hpp"
#include "detail/messages.hpp"
#include "detail/pipeline.hpp"
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
      return fail(errc::invalid_shape, "degrees[", k, "] has ",
                  degrees[k].size(), " values, degrees[0] has ", n);
    for (std::size_t i = 0; i < degrees[k].size(); ++i)
      if (!std::isfinite(degrees[k][i]))
        return fail(errc::non_finite, "degrees[", k, "][", i,
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
      return fail(errc::invalid_tokens, what, " token ", t, " is not a candidate (",
                  p.first, "..", p.last - 1, ")");
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
  return detail::pivotal_step(flat.data(), p, o);
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
  std::vector<double> buffer;
  const detail::cpu::attention_source<Tensor> source(maps, p.complementary_layer, p, o.complementary_from);
  detail::check(
      detail::complementary_step<detail::cpu::fast_loops>(source, pivots, p, o, buffer, out.tokens, out.affinity));
  return out;
}

/// SPEC steps 4-5: the kept set for a budget, from the stages' outputs.
inline selection fit_budget(const std::vector<std::vector<double>>& degrees, const std::vector<token_t>& pivotal,
                            const complements& c, const budget& b, const options& o = {}) {
  detail::plan p;
  std::vector<double> flat;
  detail::check(detail::flatten_degrees(degrees, o, p, flat));
  detail::kept_count m;
  detail::check(detail::budget_tokens(b, p.candidates, m));
  std::vector<token_t> pivots, comps;
  detail::check(detail::check_token_set(pivotal, p, "pivotal", pivots));
  detail::check(detail::check_token_set(c.tokens, p, "complementary (complements.tokens)", comps));
  if (static_cast<index_t>(c.affinity.size()) != p.tokens)
    detail::raise(detail::fail(errc::invalid_shape, "complements.affinity has ", c.affinity.size(),
                               " values for tokens = ", p.tokens));
  for (std::size_t j = 0; j < c.affinity.size(); ++j)
    if (!std::isfinite(c.affinity[j]))
      detail::raise(detail::fail(errc::non_finite, "complements.affinity[", j, "] = ",
                                 c.affinity[j], " (must be finite)"));
  std::vector<token_t> overlap;
  std::set_intersection(pivots.begin(), pivots.end(), comps.begin(), comps.end(), std::back_inserter(overlap));
  if (!overlap.empty())
    detail::raise(detail::fail(errc::invalid_tokens, "token ", overlap.front(),
                               " is both pivotal and complementary"));
  return detail::kept_set(flat.data(), degrees.size(), pivots, comps, c.affinity, p, m);
}

}  // namespace freepruner

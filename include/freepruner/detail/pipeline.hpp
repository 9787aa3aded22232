#pragma once
// The SPEC's step sequence on the host, written once. Select on maps, select
// on Q/K and the streaming pruner drive these steps over layer sources, so
// every path computes the same values and reports the same first error.
//
// A layer source is what the steps need of one layer (backend/cpu/sources.hpp):
//  - `status degrees(double* r, std::vector<double>& scratch) const`: SPEC
//    steps 0-1, r[0..N) of the layer;
//  - `status scores(pivots, std::vector<double>& buffer, Sink&& sink) const`:
//    SPEC step 3, v_p of each pivot p in ascending order, handed over as
//    `status sink(token_t p, const double* v)` with v indexed by token (only
//    candidates are read); stops at the first error.

#include <cstddef>
#include <vector>

#include "../options.hpp"
#include "decisions.hpp"
#include "messages.hpp"
#include "validate.hpp"

namespace freepruner {
namespace detail {

/// SPEC steps 0-1 of one pivot layer: r from its source, then the check that
/// the quartile arithmetic on r cannot overflow.
template <class Source>
status degree_step(const Source& src, const plan& p, double* r, std::vector<double>& scratch) {
  if (auto s = src.degrees(r, scratch); !s) return s;
  return check_spread(r, p.first, p.last, "the contribution degrees r");
}

/// SPEC step 2 from the degrees of the pivot layers (P x N, in
/// `p.pivot_layers` order).
inline std::vector<token_t> pivotal_step(const double* degrees, const plan& p, const options& o) {
  return pivotal_from_degrees(degrees, p.pivot_layers.size(), p, o.pivots_per_layer, o.fence_factor);
}

/// SPEC step 3 from the complementary layer's source. `Loops`: the
/// backend's loops for complement_builder (any give the same result).
template <class Loops, class Source>
status complementary_step(const Source& src, const std::vector<token_t>& pivots, const plan& p, const options& o,
                          std::vector<double>& buffer, std::vector<token_t>& out, std::vector<double>& affinity) {
  complement_builder<double, Loops> builder(pivots, p, o.fence_factor);
  auto sink = [&builder](token_t pivot, const double* v) { return builder.add(v, pivot); };
  if (auto s = src.scores(pivots, buffer, sink); !s) return s;
  return builder.finish(out, affinity);
}

/// SPEC steps 0-5 in order on a validated plan: `source_of(l)` is the source
/// of layer l. Degrees of every pivot layer, pivots, complements, then the
/// kept set of `m` tokens.
template <class Loops, class SourceOf>
status run_steps(const plan& p, const options& o, kept_count m, SourceOf&& source_of, selection& out) {
  const std::size_t layers = p.pivot_layers.size(), n = static_cast<std::size_t>(p.tokens);
  std::vector<double> degrees(layers * n), scratch;
  for (std::size_t k = 0; k < layers; ++k)
    if (auto s = degree_step(source_of(p.pivot_layers[k]), p, &degrees[k * n], scratch); !s) return s;
  const std::vector<token_t> pivots = pivotal_step(degrees.data(), p, o);
  std::vector<token_t> complements;
  std::vector<double> affinity, buffer;
  if (auto s = complementary_step<Loops>(source_of(p.complementary_layer), pivots, p, o, buffer, complements, affinity);
      !s)
    return s;
  out = kept_set(degrees.data(), layers, pivots, complements, affinity, p, m);
  return {};
}

}  // namespace detail
}  // namespace freepruner

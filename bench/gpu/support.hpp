#pragma once
// Benchmark support callable from plain C++: random attention maps made on
// the device (a 31 GB batch cannot be made on the host in reasonable time).

#include <cstdint>

#include <freepruner/backend/cuda/api.hpp>

namespace fpbench {

/// Fills `rows` rows of `tokens` values with softmax rows of random logits
/// plus a few "sink" keys per (item, layer, head) block of `tokens` rows,
/// as a vision encoder's maps look. Deterministic in `seed`. Returns false
/// when the launch fails.
bool fill_random_maps(void* data, freepruner::cuda::dtype type, std::int64_t rows, int tokens, std::uint64_t seed,
                      freepruner::cuda::stream_t stream);

}  // namespace fpbench

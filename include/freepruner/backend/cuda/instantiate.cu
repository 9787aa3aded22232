// Compile this file once with nvcc in an engine that calls the CUDA backend
// from plain C++ (backend/cuda/api.hpp): it holds the kernels for float,
// __half and __nv_bfloat16 maps and the type-erased calls api.hpp declares.

#include "select.cuh"

FREEPRUNER_CUDA_INSTANCES(template, float)
FREEPRUNER_CUDA_INSTANCES(template, __half)
FREEPRUNER_CUDA_INSTANCES(template, __nv_bfloat16)

namespace freepruner {
namespace cuda {
namespace {

status unknown_type(dtype type) {
  return detail::fail(errc::invalid_option, "maps.type = ", static_cast<int>(type),
                      " (must be dtype::f32, dtype::f16 or dtype::bf16)");
}

}  // namespace

status select(void* d_workspace, std::size_t& workspace_bytes, const device_maps& maps, const budget& b, const options& o,
              token_t* d_kept, index_t* d_counts, stream_t stream, std::uint8_t* d_pivotal) {
  switch (maps.type) {
    case dtype::f32:
      return select<float>(d_workspace, workspace_bytes, view_of<float>(maps), b, o, d_kept, d_counts, stream, d_pivotal);
    case dtype::f16:
      return select<__half>(d_workspace, workspace_bytes, view_of<__half>(maps), b, o, d_kept, d_counts, stream, d_pivotal);
    case dtype::bf16:
      return select<__nv_bfloat16>(d_workspace, workspace_bytes, view_of<__nv_bfloat16>(maps), b, o, d_kept, d_counts,
                                   stream, d_pivotal);
  }
  return unknown_type(maps.type);
}

status diagnose(const void* d_workspace, std::size_t workspace_bytes, const device_maps& maps, const budget& b,
                const options& o, index_t item, stream_t stream) {
  switch (maps.type) {
    case dtype::f32: return diagnose<float>(d_workspace, workspace_bytes, view_of<float>(maps), b, o, item, stream);
    case dtype::f16: return diagnose<__half>(d_workspace, workspace_bytes, view_of<__half>(maps), b, o, item, stream);
    case dtype::bf16:
      return diagnose<__nv_bfloat16>(d_workspace, workspace_bytes, view_of<__nv_bfloat16>(maps), b, o, item, stream);
  }
  return unknown_type(maps.type);
}

}  // namespace cuda
}  // namespace freepruner

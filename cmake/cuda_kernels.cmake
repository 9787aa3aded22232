# freepruner_cuda_kernels(<name>): a static library of the CUDA backend's
# kernels for float, __half and __nv_bfloat16 maps, built by nvcc from
# include/freepruner/backend/cuda/instantiate.cu. Link it to call the
# backend from plain C++ (backend/cuda/api.hpp), or from nvcc translation
# units that define FREEPRUNER_CUDA_EXTERN_TEMPLATES. Needs the CUDA
# language enabled and the freepruner::freepruner target.
# An installed package sets FREEPRUNER_CUDA_INSTANTIATE to its own copy first.
if(NOT DEFINED FREEPRUNER_CUDA_INSTANTIATE)
  set(FREEPRUNER_CUDA_INSTANTIATE "${CMAKE_CURRENT_LIST_DIR}/../include/freepruner/backend/cuda/instantiate.cu")
endif()

function(freepruner_cuda_kernels name)
  find_package(CUDAToolkit REQUIRED)
  add_library(${name} STATIC "${FREEPRUNER_CUDA_INSTANTIATE}")
  # The static runtime, as nvcc links executables by default: one runtime per process.
  target_link_libraries(${name} PUBLIC freepruner::freepruner CUDA::cudart_static)
  set_target_properties(${name} PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
endfunction()

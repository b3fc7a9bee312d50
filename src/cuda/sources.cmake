# The CUDA backends, added to the s2attn target. Included by cmake/cuda.cmake once it has found nvcc.
#   S2ATTN_CUDA_ARCHS: SASS architectures of the portable (mma.sync) path; the lowest also ships as PTX.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

set(S2ATTN_CUDA_ARCHS "80;90" CACHE STRING "CUDA architectures of the portable kernels (e.g. 80;90)")
#   S2ATTN_SM80_FWD_WARP_ROWS: query rows per warp of the portable forward's 128-row CTAs
#   (forward_traits_sm80.h): 32 (default: 4 warps, Q re-read from shared memory, 2 CTAs per SM) or 16
#   (8 warps, Q in registers, 1 CTA per SM): 4-26% slower on the H100 (bench/results/ab_s11_pending_2026-12-06.txt).
#   The dQ kernel's 128-row tiles (blocks >= 64) take the same warps (measured for the forward only).
set(S2ATTN_SM80_FWD_WARP_ROWS "32" CACHE STRING "Portable forward: query rows per warp of a 128-row CTA (16 or 32)")
if(NOT S2ATTN_SM80_FWD_WARP_ROWS MATCHES "^(16|32)$")
  message(FATAL_ERROR "S2ATTN_SM80_FWD_WARP_ROWS must be 16 or 32 (got '${S2ATTN_SM80_FWD_WARP_ROWS}')")
endif()

set(S2ATTN_CUDA_SOURCES
  src/cuda/common/device.cpp
  src/cuda/common/tma_map.cpp
  src/cuda/sm80/forward_sm80.cu
  src/cuda/sm80/instantiations/forward_sm80_bf16_d64.cu
  src/cuda/sm80/instantiations/forward_sm80_bf16_d128.cu
  src/cuda/sm80/instantiations/forward_sm80_fp16_d64.cu
  src/cuda/sm80/instantiations/forward_sm80_fp16_d128.cu
  src/cuda/sm80/backward_sm80.cu
  src/cuda/sm80/instantiations/backward_sm80_bf16_d64.cu
  src/cuda/sm80/instantiations/backward_sm80_bf16_d128.cu
  src/cuda/sm80/instantiations/backward_sm80_fp16_d64.cu
  src/cuda/sm80/instantiations/backward_sm80_fp16_d128.cu
)
target_sources(s2attn PRIVATE ${S2ATTN_CUDA_SOURCES})

# SASS for every listed architecture plus PTX of the lowest one (JIT-compiled on newer GPUs).
list(SORT S2ATTN_CUDA_ARCHS COMPARE NATURAL)
list(GET S2ATTN_CUDA_ARCHS 0 _s2attn_lowest_arch)
set(_s2attn_archs "")
foreach(arch IN LISTS S2ATTN_CUDA_ARCHS)
  list(APPEND _s2attn_archs "${arch}-real")
endforeach()
list(APPEND _s2attn_archs "${_s2attn_lowest_arch}-virtual")
set_target_properties(s2attn PROPERTIES
  CUDA_ARCHITECTURES "${_s2attn_archs}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)

# The target's host warning flags (-Wall -Wextra, set before this file) mean nothing to nvcc: keep every
# plain option of the target for C++ sources only, then give CUDA sources their own.
get_target_property(_s2attn_opts s2attn COMPILE_OPTIONS)
if(_s2attn_opts)
  set(_s2attn_cxx_opts "")
  foreach(opt IN LISTS _s2attn_opts)
    if(opt MATCHES "^\\$<")
      list(APPEND _s2attn_cxx_opts "${opt}")
    else()
      list(APPEND _s2attn_cxx_opts "$<$<COMPILE_LANGUAGE:CXX>:${opt}>")
    endif()
  endforeach()
  set_property(TARGET s2attn PROPERTY COMPILE_OPTIONS "${_s2attn_cxx_opts}")
endif()

# -DNDEBUG always for device code (device asserts serialise the tensor-core pipeline); -lineinfo for
# profilers and compute-sanitizer. The host -Wall -Wextra of the target stays on the host compiler.
target_compile_options(s2attn PRIVATE
  "$<$<COMPILE_LANGUAGE:CUDA>:-O3;-DNDEBUG;-lineinfo;--expt-relaxed-constexpr;-Xcompiler=-Wall,-Wextra>")

target_compile_definitions(s2attn PUBLIC S2ATTN_WITH_CUDA)
target_compile_definitions(s2attn PRIVATE S2ATTN_SM80_FWD_WARP_ROWS=${S2ATTN_SM80_FWD_WARP_ROWS})
# PUBLIC: whatever links the static s2attn (the tests, the Python extension) links the CUDA runtime too.
# The static runtime: the extension then needs no libcudart on the loader path, whatever CUDA torch ships.
target_link_libraries(s2attn PUBLIC CUDA::cudart_static)

# Paged-KV inference kernels (decode, chunked prefill, LSE combine): portable, same archs as above.
include(${CMAKE_CURRENT_SOURCE_DIR}/src/inference/inference_cuda.cmake OPTIONAL)

# The Hopper-native path (sm_90a: wgmma, TMA): its own object library, compiled for sm_90a only, built when
# the CUTLASS/CuTe headers are present (`make cutlass` installs the pinned ones into .deps/cutlass).
set(S2ATTN_CUTLASS_INCLUDE "${CMAKE_CURRENT_SOURCE_DIR}/.deps/cutlass/cutlass_library/source/include"
  CACHE PATH "CUTLASS/CuTe include directory (from the nvidia-cutlass wheel)")
set(S2ATTN_SM90 "AUTO" CACHE STRING "Build the Hopper path: AUTO (when the CUTLASS headers are found), ON or OFF")
if(NOT S2ATTN_SM90 STREQUAL "OFF")
  if(EXISTS "${S2ATTN_CUTLASS_INCLUDE}/cute/tensor.hpp")
    include(${CMAKE_CURRENT_LIST_DIR}/sm90/sm90.cmake OPTIONAL)
  elseif(S2ATTN_SM90 STREQUAL "ON")
    message(FATAL_ERROR "S2ATTN_SM90=ON but no CUTLASS headers at S2ATTN_CUTLASS_INCLUDE=${S2ATTN_CUTLASS_INCLUDE}")
  else()
    message(STATUS "s2attn: no CUTLASS headers (run `make cutlass`); the Hopper path is not built")
  endif()
endif()

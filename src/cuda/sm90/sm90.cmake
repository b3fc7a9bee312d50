# The Hopper-native forward and backward (wgmma, TMA, warp specialisation): an OBJECT library compiled for sm_90a only,
# its objects archived into the s2attn static library. Included by src/cuda/sources.cmake when the
# CUTLASS/CuTe headers exist at S2ATTN_CUTLASS_INCLUDE; nothing here runs otherwise.
#   S2ATTN_SM90_VARIANTS: which (dtype, head dim) kernels to build. "all" (default) or a reduced list for
#   slow CI machines, e.g. "bf16_d128" (each kernel is one ~2 min translation unit on 2 cores); variants not
#   built make forward_sm90_supports() / backward_sm90_supports() false, so the dispatcher falls back to the
#   portable path. Each variant builds a forward and a backward (KV + dQ kernels) translation unit.
set(S2ATTN_SM90_VARIANTS "all" CACHE STRING
  "Hopper kernels to build: all, or a ;-list of bf16_d64 bf16_d128 fp16_d64 fp16_d128")
set(_s2attn_sm90_all bf16_d64 bf16_d128 fp16_d64 fp16_d128)
#   S2ATTN_SM90_D128_STAGES: depth of the K/V ring at D = 128 (forward_traits_sm90.h): 2 (default, 192 KiB,
#   with a second Q buffer: forward -2 to -4% on the H100 against 3, two A/B rounds in
#   bench/results/ab_s8_smem_addrspace_and_others_2026-11-25.txt and
#   ab_s8_bwd_descending_fwd_stages_2026-11-25.txt) or 3 (224 KiB of shared memory).
set(S2ATTN_SM90_D128_STAGES "2" CACHE STRING "Hopper forward: K/V pipeline stages at head dim 128 (2 or 3)")
if(NOT S2ATTN_SM90_D128_STAGES MATCHES "^[23]$")
  message(FATAL_ERROR "S2ATTN_SM90_D128_STAGES must be 2 or 3 (got '${S2ATTN_SM90_D128_STAGES}')")
endif()
if(S2ATTN_SM90_VARIANTS STREQUAL "all")
  set(_s2attn_sm90_variants ${_s2attn_sm90_all})
else()
  set(_s2attn_sm90_variants ${S2ATTN_SM90_VARIANTS})
endif()

set(_s2attn_sm90_sources
  ${CMAKE_CURRENT_LIST_DIR}/tensor_map_sm90.cu
  ${CMAKE_CURRENT_LIST_DIR}/forward_sm90.cu
  ${CMAKE_CURRENT_LIST_DIR}/backward_sm90.cu)
foreach(variant IN LISTS _s2attn_sm90_variants)
  if(NOT variant IN_LIST _s2attn_sm90_all)
    message(FATAL_ERROR "S2ATTN_SM90_VARIANTS: unknown variant '${variant}' (known: ${_s2attn_sm90_all})")
  endif()
  list(APPEND _s2attn_sm90_sources ${CMAKE_CURRENT_LIST_DIR}/instantiations/forward_sm90_${variant}.cu
    ${CMAKE_CURRENT_LIST_DIR}/instantiations/backward_sm90_${variant}.cu)
  # the fused-dQ KV kernel, where the variant has one (head dim 128), in its own translation unit
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/instantiations/backward_sm90_${variant}_fused_dq.cu)
    list(APPEND _s2attn_sm90_sources ${CMAKE_CURRENT_LIST_DIR}/instantiations/backward_sm90_${variant}_fused_dq.cu)
  endif()
  string(TOUPPER "${variant}" _v)
  list(APPEND _s2attn_sm90_defs S2ATTN_SM90_HAS_${_v})
endforeach()

add_library(s2attn_sm90 OBJECT ${_s2attn_sm90_sources})
# 90a-real: SASS for sm_90a only (wgmma and setmaxnreg exist nowhere else; PTX would be of no use elsewhere).
set_target_properties(s2attn_sm90 PROPERTIES
  CUDA_ARCHITECTURES "90a-real"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(s2attn_sm90 PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_include_directories(s2attn_sm90 SYSTEM PRIVATE ${S2ATTN_CUTLASS_INCLUDE})
target_link_libraries(s2attn_sm90 PRIVATE CUDA::cudart_static)  # usage requirements only (headers)
target_compile_definitions(s2attn_sm90 PRIVATE S2ATTN_WITH_CUDA S2ATTN_WITH_SM90 ${_s2attn_sm90_defs}
  S2ATTN_SM90_D128_STAGES=${S2ATTN_SM90_D128_STAGES})
# -DNDEBUG always for device code (device asserts serialise wgmma, ptxas warning C7510).
target_compile_options(s2attn_sm90 PRIVATE
  "$<$<COMPILE_LANGUAGE:CUDA>:-O3;-DNDEBUG;-lineinfo;--expt-relaxed-constexpr;-Xcompiler=-Wall,-Wextra>")

# PUBLIC: ops.cpp (and whatever includes cuda_backend.h) sees the Hopper entry points.
target_compile_definitions(s2attn PUBLIC S2ATTN_WITH_SM90)
target_sources(s2attn PRIVATE $<TARGET_OBJECTS:s2attn_sm90>)

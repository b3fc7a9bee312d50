# Paged-KV inference kernels (decode, chunked prefill, LSE combine) on the portable CUDA path. Included from
# src/cuda/sources.cmake inside its scope: the s2attn target's CUDA architectures and flags apply.
target_sources(s2attn PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/inference/cuda/paged_launch.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/src/inference/cuda/paged_tma_map.cpp)
target_compile_definitions(s2attn PRIVATE S2ATTN_WITH_PAGED_CUDA)
#   S2ATTN_PAGED_DECODE_CTAS: decode CTAs per SM at head dim 128 (paged_mma_kernel.cuh): 2 (default) or 3 (two
#   stages, 168 registers): 1-12% slower on the H100 (bench/results/ab_s11_pending_2026-12-06.txt).
set(S2ATTN_PAGED_DECODE_CTAS "2" CACHE STRING "Paged decode: CTAs per SM at head dim 128 (2 or 3)")
if(NOT S2ATTN_PAGED_DECODE_CTAS MATCHES "^[23]$")
  message(FATAL_ERROR "S2ATTN_PAGED_DECODE_CTAS must be 2 or 3 (got '${S2ATTN_PAGED_DECODE_CTAS}')")
endif()
target_compile_definitions(s2attn PRIVATE S2ATTN_PAGED_DECODE_CTAS=${S2ATTN_PAGED_DECODE_CTAS})

# Paged-KV inference kernels (decode, chunked prefill, LSE combine) on the portable CUDA path. Included from
# src/cuda/sources.cmake inside its scope: the s2attn target's CUDA architectures and flags apply.
target_sources(s2attn PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src/inference/cuda/paged_launch.cu)
target_compile_definitions(s2attn PRIVATE S2ATTN_WITH_PAGED_CUDA)

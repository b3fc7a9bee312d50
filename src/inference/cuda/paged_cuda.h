// The CUDA paged-KV kernels as the front door (src/api/paged.cpp) sees them. Compiled when nvcc is found
// (S2ATTN_WITH_PAGED_CUDA); params validated, pointers on the device of q. Portable: sm_80 and newer.
#pragma once
#include "inference/paged_params.h"

namespace s2attn::cuda {

// The split-KV count for these params when the caller asks for automatic: from the shapes, the pattern
// and the GPU's SM count only (no device data), so it is fixed before a CUDA-graph capture.
int paged_auto_splits(const PagedParams& params);

// Paged attention (decode, speculative decode, chunked prefill). With num_splits > 1 the partial results
// go to params.workspace and a combine kernel writes out/lse. Throws Unsupported for variants not built
// (head_dim other than 64/128, block-mask patterns).
void paged_forward(const PagedParams& params);

// combine_partitions on CUDA tensors.
void combine_partitions(const CombineParams& params);

}  // namespace s2attn::cuda

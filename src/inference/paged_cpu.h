// The CPU backend of the paged-KV ops: paged attention (decode, speculative decode, chunked prefill) and the
// LSE combine of partial outputs. The reference the CUDA kernels are checked against. Params validated by
// the front door (src/api/validate_paged.cpp).
#pragma once
#include "inference/paged_params.h"

namespace s2attn::cpu {

// Throws InvalidArgument("block_table") when a page the pattern reads has an entry outside [0, num_pages).
void paged_forward(const PagedParams& params);
void combine_partitions(const CombineParams& params);

}  // namespace s2attn::cpu

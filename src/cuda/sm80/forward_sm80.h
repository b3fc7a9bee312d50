// The kernel variants of the portable forward and their launcher, as the dispatcher (forward_sm80.cu)
// sees them. Each variant is instantiated once, in instantiations/ (one file per dtype and head dim).
#pragma once
#include <cuda_runtime_api.h>

#include "common/attention_params.h"

namespace s2attn::cuda {

struct ForwardLaunch {
  int device = 0;
  cudaStream_t stream = nullptr;
  int query_tiles = 0;  // per sequence and head (an upper bound under varlen); grid: x batch x heads
};

// Elem: __nv_bfloat16 or __half; kBlockN: keys per tile (key_tile_sm80(block_size)); kList: a block-mask
// pattern (params.pattern.use_mask, device lists), else the analytic rules.
template <typename Elem, int kHeadDim, int kBlockN, bool kList>
void run_forward_sm80(const AttentionParams& params, const ForwardLaunch& launch);

}  // namespace s2attn::cuda

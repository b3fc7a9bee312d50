// The kernel variants of the portable backward and their launchers, as its front (backward_sm80.cu) sees
// them. Each (dtype, head dim) is instantiated once, in instantiations/backward_sm80_*.cu.
#pragma once
#include <cuda_runtime_api.h>

#include "common/attention_params.h"

namespace s2attn::cuda {

struct BackwardLaunch {
  int device = 0;
  cudaStream_t stream = nullptr;
  int key_tiles = 0;    // KV kernel: per sequence and KV head (an upper bound under varlen)
  int query_tiles = 0;  // dQ kernel: per sequence and head (an upper bound under varlen)
  // workspace sections (BackwardWorkspace)
  float* lse2 = nullptr;
  float* dsum = nullptr;
  float* dq_accum = nullptr;  // null in deterministic mode
};

// Pre-pass (row statistics, zeroed dQ accumulator) and post-process (dQ accumulator -> dq).
template <typename Elem, int kHeadDim>
void run_backward_rows_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch, bool post);

// The KV kernel; kBlockM: query rows per step (bwd_query_tile_sm80(block_size)).
// kList (both kernels): a block-mask pattern (params.pattern.use_mask, device lists), else the analytic rules.
template <typename Elem, int kHeadDim, int kBlockM, bool kList>
void run_backward_kv_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch);

// The deterministic dQ kernel; kBlockN: keys per tile (key_tile_sm80(block_size)).
template <typename Elem, int kHeadDim, int kBlockN, bool kList>
void run_backward_dq_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch);

}  // namespace s2attn::cuda

// The kernel variants of the portable backward and their launchers, as its front (backward_sm80.cu) sees
// them. Each (dtype, head dim) is instantiated once, in instantiations/backward_sm80_*.cu.
#pragma once
#include <cuda_runtime_api.h>

#include "common/attention_params.h"
#include "cuda/common/kv_tile_order.h"

namespace s2attn::cuda {

struct BackwardLaunch {
  int device = 0;
  cudaStream_t stream = nullptr;
  KvTileOrder kv_order;  // KV kernel: its key tiles per sequence and KV head (.tiles: an upper bound under
                         // varlen) and the order of its CTAs
  int query_tiles = 0;  // dQ kernel: per sequence and head (an upper bound under varlen)
  // workspace sections (BackwardWorkspace)
  float* lse2 = nullptr;
  float* dsum = nullptr;
  float* dq_accum = nullptr;  // null in deterministic mode
};

// Whether dQ is better computed by the ordered per-query-tile kernel (the deterministic algorithm) than
// by fp32 atomics from the KV kernel; both CUDA backwards ask. Measured on an H100 (S = 8k / 32k, V = 8 /
// 16 / 32; bench/results/gpu_backward_*.json): with vertical strides the ordered path's fwd+bwd is
// 1.3-1.4x faster, because a vertical key block is seen by every later query block, so its KV-stationary
// tile is long and its atomics pile onto every dQ row. Measured again in session 21 against the dQ and KV
// kernels of then, with sm_90's vector reductions: atomics +20% / +29% backward time at 32k V32 / V16
// (bench/results/ab_sm80_dq_atomics_2026-12-07_s21.txt).
inline bool ordered_dq_preferred(const PatternRules& rules) { return !rules.use_mask && rules.vert_stride > 0; }

// The KV kernels' grid: per sequence, KV heads x the order's CTAs per head (the key tiles, plus a few
// without work when the vertical tiles go first).
inline int64_t kv_grid_ctas(const AttentionBwdParams& params, const KvTileOrder& order) {
  return int64_t(order.per_head) * params.num_kv_heads * params.batch;
}

// Pre-pass (row statistics, zeroed dQ accumulator) and post-process (dQ accumulator -> dq).
template <typename Elem, int kHeadDim>
void run_backward_rows_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch, bool post);

// The KV kernel; kBlockM: query rows per step (bwd_query_tile_sm80(block_size), or 32 where shared memory
// is short: backward_sm80.cu).
// kList (both kernels): a block-mask pattern (params.pattern.use_mask, device lists), else the analytic rules.
template <typename Elem, int kHeadDim, int kBlockM, bool kList>
void run_backward_kv_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch);

// The KV kernel on 2 x 2 warp tiles (backward_kv_2x2_kernel_sm80.cuh): 64-row steps, head dim 128 only
// (instantiated with it), where a CTA may have its shared memory (BackwardKv2x2TraitsSm80::kSmemBytes).
template <typename Elem, int kHeadDim, bool kList>
void run_backward_kv_2x2_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch);

// The deterministic dQ kernel; kKeyTile: key_tile_sm80(block_size) (its tiles: dq_query_tile_sm80 /
// dq_key_tile_sm80 of it).
template <typename Elem, int kHeadDim, int kKeyTile, bool kList>
void run_backward_dq_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch);

}  // namespace s2attn::cuda

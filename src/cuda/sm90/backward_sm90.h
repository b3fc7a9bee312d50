// The Hopper backward's KV kernel parameters and its launcher, as its front (backward_sm90.cu) sees them.
// Each (dtype, head dim) variant is instantiated once, in instantiations/backward_sm90_*.cu.
#pragma once
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime_api.h>

#include "common/attention_params.h"
#include "cuda/sm90/forward_sm90.h"  // ForwardParamsSm90: the dQ kernel walks the forward's units and stages

namespace s2attn::cuda {

// Everything the KV kernel reads, passed by value as a __grid_constant__ parameter (the TMA descriptors must
// live in parameter, constant or global memory).
struct BackwardParamsSm90 {
  CUtensorMap tma_q;   // [batch, seq, head, dim], boxes of 64 rows x 64 elements, 128-byte swizzle
  CUtensorMap tma_do;
  CUtensorMap tma_k;
  CUtensorMap tma_v;
  AttentionBwdParams p;
  // workspace sections (BackwardWorkspace): written by the pre-pass, read here
  const float* lse2 = nullptr;
  const float* dsum = nullptr;
  float* dq_accum = nullptr;  // fused dQ only: the fp32 accumulator in tiles (dq_accum_tiles_sm90.h)
  int vertical_first = 0;  // the scheduler's first pass over the vertical key tiles (backward_scheduler_sm90.cuh)
  int head_group = 0;      // KV heads side by side in the scheduler's second pass (>= 1; clamped to the count)
  int fold_vertical = 0;   // pass 1's units of a head in pairs (m, last - m), the second walked upwards
  // Dynamic scheduling when set (more units than CTAs): the producer takes its next unit from this counter
  // (workspace, zeroed before the launch); null: the static stride.
  int* unit_counter = nullptr;
};

struct BackwardLaunchSm90 {
  int device = 0;
  cudaStream_t stream = nullptr;
  int grid = 0;  // persistent CTAs (<= SMs)
  bool overlap_previous = false;  // launch_kernel_overlapping (the dQ kernel only)
};

// The Hopper dQ kernel's parameters (backward_dq_kernel_sm90.cuh): the forward's units (query tiles) and
// key stages over Q, K, V (f.p: the forward's view of the backward's operands), plus dO, the statistics
// and the dQ output. It writes dQ rows directly (no accumulator, deterministic).
struct BackwardDqParamsSm90 {
  ForwardParamsSm90 f;
  CUtensorMap tma_do;
  const float* lse2 = nullptr;  // workspace (BackwardWorkspace): [h][t]
  const float* dsum = nullptr;
  int64_t total_q = 0;
  void* dq = nullptr;
  SeqStrides dq_stride;
  int pingpong = 0;  // consumer warpgroups take turns on the GEMMs (backward_dq_consumer_sm90.cuh)
};

// Elem: cutlass::bfloat16_t or cutlass::half_t. kFusedDq: the KV kernel also reduce-adds dQ into the
// workspace's accumulator (head dim 128; the front runs no dQ kernel then).
template <typename Elem, int kHeadDim, bool kFusedDq = false>
void run_backward_kv_sm90(const BackwardParamsSm90& params, const BackwardLaunchSm90& launch);
template <typename Elem, int kHeadDim>
void run_backward_dq_sm90(const BackwardDqParamsSm90& params, const BackwardLaunchSm90& launch);

}  // namespace s2attn::cuda

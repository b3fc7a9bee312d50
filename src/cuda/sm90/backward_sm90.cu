// The Hopper backward's front: backward_sm90_supports (what the sm_90a KV kernel can serve; the dispatcher
// falls back to the portable backward otherwise), the TMA descriptors, the persistent grids, and the three
// steps, enqueued on the caller's stream with no host synchronisation:
//   1. the portable pre-pass: lse2, dsum = rowsum(dO * O)               (backward_preprocess_sm80)
//   2. the Hopper KV kernel: dK, dV written once                         (backward_kernel_sm90.cuh)
//   3. the Hopper dQ kernel: the forward's query tiles and key stages, dQ in registers, written once
//                                                                        (backward_dq_kernel_sm90.cuh)
// Deterministic mode and head dim 64: no atomics, bitwise repeatable. Fused dQ (non-deterministic mode at
// head dim 128, S2ATTN_SM90_FUSED_DQ=0 turns it off: fused_dq_chosen): the KV kernel adds dQ into the
// workspace's fp32 accumulator (per-warp bulk reductions, dq_accum_tiles_sm90.h) and step 3 becomes its
// post-process (backward_consumer_sm90.cuh). The workspace is the portable backward's (BackwardWorkspace);
// its dQ section is used by the fused mode only, its counter word holds the KV kernel's dynamic schedule
// (zeroed by a memset before the pre-pass).
#include <algorithm>
#include <cstdlib>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include <cutlass/numeric_types.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/launch.cuh"
#include "cuda/common/host_math.h"  // kMaxKernelPosition
#include "cuda/common/kv_tile_order.h"
#include "cuda/common/stream_scratch.h"
#include "cuda/common/tma_map.h"
#include "cuda/cuda_backend.h"
#include "cuda/sm80/backward_sm80.h"
#include "cuda/sm90/backward_dq_postprocess_sm90.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/dq_accum_tiles_sm90.h"
#include "cuda/sm90/tensor_map_sm90.h"
#include "cuda/sm90/variants_sm90.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

constexpr int kBlockN = 128;  // BackwardTraitsSm90::kBlockN
constexpr int kFoldMinKeys = 65536;  // pass 1 folded from this key length on (backward_sm90 below)

// Which backward kernels this build has: those of the variants of S2ATTN_SM90_VARIANTS (sm90.cmake).
bool backward_variant_built(DType dtype, int head_dim) {
  return (head_dim == 64 || head_dim == 128) && variant_built_sm90(dtype, head_dim);
}

// Fused dQ's post-process (backward_dq_postprocess_sm90.cuh): one CTA per (accumulator tile, head).
template <typename CudaElemT>
void run_dq_postprocess_sm90(const AttentionBwdParams& p, const float* accum, const BackwardLaunch& rows) {
  static uint64_t configured = 0;  // (static shared memory only: no opt-in)
  const dim3 grid(grid_extent(dq_tile_count(p.total_q, p.batch), "the fused-dQ post-process"),
                  static_cast<unsigned>(p.num_heads));
  launch_kernel(backward_dq_postprocess_sm90<CudaElemT>, grid, kRowKernelThreads, 0, rows.stream, rows.device,
                &configured, p, accum);
}

template <typename Elem, typename CudaElemT, int kHeadDim>
void run_variant(const AttentionBwdParams& p, const BackwardParamsSm90& bp, const BackwardLaunchSm90& launch,
                 const BackwardDqParamsSm90& dqp, const BackwardLaunchSm90& dq_launch, const BackwardLaunch& rows) {
  run_backward_rows_sm80<CudaElemT, kHeadDim>(p, rows, /*post=*/false);
  if (bp.dq_accum != nullptr) {  // fused dQ: the KV kernel adds dQ into the accumulator, the post-process converts it
    if constexpr (kHeadDim == 128) {
      if (launch.grid > 0) run_backward_kv_sm90<Elem, kHeadDim, true>(bp, launch);
      run_dq_postprocess_sm90<CudaElemT>(p, bp.dq_accum, rows);
      return;
    }
  }
  if (launch.grid > 0) run_backward_kv_sm90<Elem, kHeadDim>(bp, launch);
  if (dq_launch.grid > 0) run_backward_dq_sm90<Elem, kHeadDim>(dqp, dq_launch);
}

// Fused dQ: in non-deterministic mode at head dim 128, dQ is added from the KV kernel (fp32 accumulator,
// order-dependent sums) instead of the dQ kernel's recomputation of S and dP: 5 GEMMs a step pair instead of
// 7. The default for every pattern since its reduce-adds stay in L2 (the scheduler's second pass in head
// groups, below); S2ATTN_SM90_FUSED_DQ=0 (read per call) turns it off, as deterministic mode does. The kernel
// indexes the accumulator's half tiles with an int; the post-process's grid has the heads as its y extent.
bool fused_dq_chosen(const AttentionBwdParams& p) {
  const char* v = std::getenv("S2ATTN_SM90_FUSED_DQ");
  const bool wanted = v == nullptr || v[0] != '0';
  return wanted && !p.deterministic && p.head_dim == 128 && p.num_heads <= 65535 &&
         dq_tile_count(p.total_q, p.batch) * p.num_heads * 2 < (int64_t(1) << 31);
}

template <typename Elem, typename CudaElemT, int kHeadDim>
void run_if_built(const AttentionBwdParams& p, const BackwardParamsSm90& bp, const BackwardLaunchSm90& launch,
                  const BackwardDqParamsSm90& dqp, const BackwardLaunchSm90& dq_launch, const BackwardLaunch& rows) {
  if constexpr (variant_built_sm90_v<Elem, kHeadDim>()) {
    run_variant<Elem, CudaElemT, kHeadDim>(p, bp, launch, dqp, dq_launch, rows);
  } else {
    (void)p, (void)bp, (void)launch, (void)dqp, (void)dq_launch, (void)rows;
    throw Unsupported("this Hopper backward variant is not built (S2ATTN_SM90_VARIANTS)");
  }
}

}  // namespace

bool backward_sm90_supports(const AttentionBwdParams& p) {
  if (p.pattern.use_mask) return false;  // NOTE: block-mask lists need a device plan (as on the portable path)
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) return false;
  if (!backward_variant_built(p.dtype, p.head_dim)) return false;  // head dims 64 and 128
  if (p.pattern.block_size != 64 && p.pattern.block_size != 128) return false;
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) return false;
  if (p.batch <= 0 || p.seqlen_q <= 0 || p.seqlen_k <= 0) return false;  // empty operands: the portable path
  if (p.q_offset >= kMaxKernelPosition || p.q_offset + p.seqlen_q >= kMaxKernelPosition) return false;
  if (int64_t(p.seqlen_q) + p.seqlen_k >= kMaxKernelPosition) return false;
  // 32-bit unit indices in the scheduler: (pass 1 + pass 2 units) per sequence, + one grid of overshoot
  const int64_t tiles_ub = (int64_t(p.seqlen_k) + kBlockN - 1) / kBlockN + 1;
  if ((3 * tiles_ub * p.batch + 1) * p.num_kv_heads + 4096 >= (int64_t(1) << 31)) return false;
  // and the dQ kernel's (the forward's scheduler over 128-row query tiles)
  const int64_t q_tiles_ub = (int64_t(p.seqlen_q) + 127) / 128 + 1;
  if ((q_tiles_ub * p.batch + 1) * p.num_heads + 4096 >= (int64_t(1) << 31)) return false;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t batch = varlen ? 1 : p.batch;
  return tma_ok_sm90(p.q, p.q_stride, batch, p.seqlen_q, p.num_heads) &&
         tma_ok_sm90(p.dout, p.dout_stride, batch, p.seqlen_q, p.num_heads) &&
         tma_ok_sm90(p.k, p.k_stride, batch, p.seqlen_k, p.num_kv_heads) &&
         tma_ok_sm90(p.v, p.v_stride, batch, p.seqlen_k, p.num_kv_heads) &&
         rows_ok_sm90(p.out, p.out_stride, batch, p.seqlen_q, p.num_heads) &&
         rows_ok_sm90(p.dq, p.dq_stride, batch, p.seqlen_q, p.num_heads) &&
         rows_ok_sm90(p.dk, p.dk_stride, batch, p.seqlen_k, p.num_kv_heads) &&
         rows_ok_sm90(p.dv, p.dv_stride, batch, p.seqlen_k, p.num_kv_heads);
}

void backward_sm90(const AttentionBwdParams& params) {
  AttentionBwdParams p = params;
  // Without fused dQ every mode is the deterministic algorithm (see above): no dQ accumulator
  const bool fused = fused_dq_chosen(params);
  p.deterministic = !fused;
  if (!backward_sm90_supports(p)) {
    throw Unsupported("the Hopper path has no backward kernel for this dtype / head dim / block size / pattern");
  }
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t batch = varlen ? 1 : p.batch;  // varlen: one packed sequence of seqlen_q (= total) tokens
  const CUtensorMapDataType dt = tma_dtype_16bit(p.dtype);

  BackwardLaunchSm90 launch;
  launch.device = device_of(p.q, "q");
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);

  // the workspace: the caller's (checked by the front door) or our own, stream-ordered
  const BackwardWorkspace layout(p.num_heads, p.total_q, p.head_dim, p.batch, p.deterministic);
  StreamScratch own(p.workspace != nullptr ? 0 : layout.bytes(), launch.stream);
  char* base = static_cast<char*>(p.workspace != nullptr ? p.workspace : own.get());
  BackwardLaunch rows;  // the portable pre-pass, post-process and dQ kernel
  rows.device = launch.device;
  rows.stream = launch.stream;
  rows.lse2 = reinterpret_cast<float*>(base + layout.lse2_offset());
  rows.dsum = reinterpret_cast<float*>(base + layout.dsum_offset());
  // (the row passes check their own grid: run_backward_rows_sm80; the Hopper kernels' grids are persistent)

  BackwardParamsSm90 bp;
  bp.p = p;
  bp.tma_q = make_tensor_map_sm90(p.q, dt, batch, p.seqlen_q, p.num_heads, p.head_dim, p.q_stride);
  bp.tma_do = make_tensor_map_sm90(p.dout, dt, batch, p.seqlen_q, p.num_heads, p.head_dim, p.dout_stride);
  bp.tma_k = make_tensor_map_sm90(p.k, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.k_stride);
  bp.tma_v = make_tensor_map_sm90(p.v, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.v_stride);
  bp.lse2 = rows.lse2;
  bp.dsum = rows.dsum;
  if (fused) {  // the accumulator's tiles, zeroed in stream order (the pre-pass zeroes only the row layout's)
    bp.dq_accum = reinterpret_cast<float*>(base + layout.dq_offset());
    S2_CUDA_CHECK(cudaMemsetAsync(bp.dq_accum, 0, layout.dq_floats * sizeof(float), launch.stream));
  }
  // the scheduler's pass 1 (backward_scheduler_sm90.cuh): stride >= 2 puts at most one vertical block in a
  // 128-key tile
  bp.vertical_first = vertical_first_order(p.pattern) ? 1 : 0;
  // Pass 1 folded (block size 64: pairs of vertical tiles, backward_scheduler_sm90.cuh): its CTAs stay in two
  // fronts per head, which the L2 model prefers once a head's keys outgrow the L2. Measured (H100, session 23,
  // KV kernel): -2% at 64k, -3.5% at 96k, -5% / -9.5% at 128k V32 / V8, but +7% at 32k V32: so from 64k keys
  // on. S2ATTN_SM90_BWD_FOLD=0 / 1 (read per call) turns it off / on whatever the length.
  const bool foldable = bp.vertical_first != 0 && p.pattern.block_size < kBlockN;
  bp.fold_vertical = foldable && p.seqlen_k >= kFoldMinKeys ? 1 : 0;
  if (const char* fold = std::getenv("S2ATTN_SM90_BWD_FOLD")) {
    bp.fold_vertical = foldable && fold[0] != '0' ? 1 : 0;
  }
  // The scheduler's second pass in groups of KV heads. Fused dQ: 4. With all heads' local key tiles side by
  // side, their dQ reduce-adds overflowed the L2 (ncu, 32k V32: 1.98 TB/s of DRAM traffic against 1.07 for
  // the ordered KV kernel; tools/kv_schedule_l2_model.py: 15 GB with all heads, 3.8 GB in groups of 1-8).
  // Ordered: all heads (the model finds no difference there). S2ATTN_SM90_BWD_HEAD_GROUP=n (read per call)
  // overrides (n >= the KV head count: all side by side).
  bp.head_group = fused ? std::min(4, p.num_kv_heads) : p.num_kv_heads;
  if (const char* v = std::getenv("S2ATTN_SM90_BWD_HEAD_GROUP")) {
    const long n = std::strtol(v, nullptr, 10);
    if (n > 0) bp.head_group = static_cast<int>(std::min<long>(n, p.num_kv_heads));
  }

  // Units (scheduler): per sequence, key tiles x KV heads, plus the vertical pass. Varlen: seqlen_k is the
  // total, an upper bound used only to size the grid.
  const int64_t tiles = (int64_t(p.seqlen_k) + kBlockN - 1) / kBlockN;
  const int64_t units = tiles * p.num_kv_heads * (varlen ? 1 : p.batch);
  const int sms = sm_count(launch.device);
  launch.grid = static_cast<int>(units < sms ? units : sms);
  // More units than CTAs: the producer takes each next unit from the workspace's counter, zeroed here in
  // stream order (backward_producer_sm90.cuh)
  if (units > launch.grid && !static_schedule_forced_sm90()) {
    bp.unit_counter = reinterpret_cast<int*>(base + layout.counter_offset());
    S2_CUDA_CHECK(cudaMemsetAsync(bp.unit_counter, 0, sizeof(int), launch.stream));
  }

  // The dQ kernel: the forward's query-tile units over the same operands.
  BackwardDqParamsSm90 dqp;
  BackwardLaunchSm90 dq_launch = launch;
  dqp.f.p = p;  // the forward's view: q, k, v, pattern, lengths, scale
  dqp.f.tma_q = bp.tma_q;
  dqp.f.tma_k = bp.tma_k;
  dqp.f.tma_v = bp.tma_v;
  dqp.tma_do = bp.tma_do;
  dqp.lse2 = rows.lse2;
  dqp.dsum = rows.dsum;
  dqp.total_q = p.total_q;
  dqp.dq = p.dq;
  dqp.dq_stride = p.dq_stride;
  // S2ATTN_SM90_DQ_PINGPONG=1 (read per call): the consumers' turns, while they are measured (tools/env_ab.py)
  const char* pingpong = std::getenv("S2ATTN_SM90_DQ_PINGPONG");
  dqp.pingpong = pingpong != nullptr && pingpong[0] == '1' ? 1 : 0;
  const QueryTileGridSm90 tg = query_tile_grid_sm90(p, sms);
  dq_launch.grid = tg.grid;
  dqp.f.head_group = tg.head_group;
  // Started during the KV kernel's tail (programmatic dependent launch) where each CTA has few query tiles:
  // H100, H = 32, D = 128, backward wall time: 8k (16 tiles a CTA) -2.5 to -3%; 32k (62) +0.5 to +1.4%,
  // 128k +1% (its CTAs start staggered, as the KV kernel's CTAs finish).
  dq_launch.overlap_previous = launch.grid > 0 && tg.units <= int64_t(32) * dq_launch.grid;

  const bool d128 = p.head_dim == 128;
  if (p.dtype == DType::bf16) {
    if (d128) run_if_built<cutlass::bfloat16_t, __nv_bfloat16, 128>(p, bp, launch, dqp, dq_launch, rows);
    else run_if_built<cutlass::bfloat16_t, __nv_bfloat16, 64>(p, bp, launch, dqp, dq_launch, rows);
  } else {
    if (d128) run_if_built<cutlass::half_t, __half, 128>(p, bp, launch, dqp, dq_launch, rows);
    else run_if_built<cutlass::half_t, __half, 64>(p, bp, launch, dqp, dq_launch, rows);
  }
}

}  // namespace s2attn::cuda

// The fused-dQ post-process: dq = scale * the fp32 accumulator, read in its tile layout
// (dq_accum_tiles_sm90.h), converted to dq's dtype and written with dq's strides. One CTA per (tile, head):
// the tile's 32 KiB are read in order, put in row order in shared memory, and its rows that hold queries of
// the sequence are written as 16-byte chunks. Rows no key tile touched hold 0 (the accumulator was zeroed);
// rows before position 0 (offset < 0) are in no tile and written as 0 by the sequence's first tile's CTA.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm80/backward_preprocess_sm80.cuh"  // operand_row, kRowKernelThreads
#include "cuda/sm90/dq_accum_tiles_sm90.h"

namespace s2attn::cuda {

// The sequence whose tiles hold `tile`: the last b with dq_tile_base(q_begin of b, b) <= tile.
__device__ __forceinline__ int dq_tile_sequence(const AttentionParams& p, int64_t tile) {
  int lo = 0, hi = p.batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    const int64_t q_begin = p.cu_seqlens_q != nullptr ? int64_t(p.cu_seqlens_q[mid]) : int64_t(mid) * p.seqlen_q;
    if (dq_tile_base(q_begin, mid) <= tile) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Grid: (dq_tile_count(total_q, batch), heads) CTAs of kRowKernelThreads threads; head dim 128.
template <typename Elem>
__global__ void __launch_bounds__(kRowKernelThreads)
    backward_dq_postprocess_sm90(const __grid_constant__ AttentionBwdParams params, const float* dq_accum) {
  constexpr int kD = 128, kPitch = kD + 8;  // pitch 136 floats: a warp's float2 stores hit 2 wavefronts
  __shared__ __align__(16) float rows[kDqTileRows * kPitch];
  const int64_t tile = blockIdx.x;
  const int h = blockIdx.y;
  const int b = dq_tile_sequence(params, tile);
  SeqGeometry g = seq_geometry(params, b);
  if (params.cu_seqlens_q == nullptr) g.q_begin = int64_t(b) * params.seqlen_q;
  const int64_t base = dq_tile_base(g.q_begin, b);  // the sequence's first tile
  if (tile < base) return;  // below the first sequence's tiles (cu_seqlens_q[0] >= 64)
  // the tile's first position, and its rows that are queries of the sequence
  const int pos0 = static_cast<int>(tile - base + dq_first_position_tile(g.offset)) * kDqTileRows;
  const int row_lo = max(g.offset - pos0, 0), row_hi = min(g.offset + g.len_q - pos0, kDqTileRows);
  constexpr int kChunks = kD / 8;
  if (g.offset < 0 && tile == base) {  // rows before position 0 see nothing: dq = 0
    const int n = min(-g.offset, g.len_q);
    for (int u = threadIdx.x; u < n * kChunks; u += kRowKernelThreads) {
      Elem* dq = static_cast<Elem*>(params.dq) + operand_row(params.dq_stride, g.q_begin + u / kChunks, params.seqlen_q, h);
      reinterpret_cast<uint4*>(dq)[u % kChunks] = make_uint4(0u, 0u, 0u, 0u);
    }
  }
  if (row_lo >= row_hi) return;  // one of a sequence's spare tiles

  const float4* src = reinterpret_cast<const float4*>(dq_accum + (tile * params.num_heads + h) * 2 * kDqHalfFloats);
  constexpr int kFloat4s = 2 * kDqHalfFloats / 4;
#pragma unroll
  for (int k = 0; k < kFloat4s / kRowKernelThreads; ++k) {
    const int u = threadIdx.x + k * kRowKernelThreads;
    const int half = u / (kDqHalfFloats / 4), f = u % (kDqHalfFloats / 4);
    const int j = f / 32 % 8, tid = f / 256 * 32 + f % 32;  // float4 j of thread tid: elements 4 j .. 4 j + 3
    const float4 v = src[u];
    const int row = dq_fragment_row(tid, 4 * j), col = half * 64 + dq_fragment_col(tid, 4 * j);
    *reinterpret_cast<float2*>(rows + row * kPitch + col) = make_float2(v.x, v.y);        // elements 4 j, + 1
    *reinterpret_cast<float2*>(rows + (row + 8) * kPitch + col) = make_float2(v.z, v.w);  // 4 j + 2, + 3
  }
  __syncthreads();
  const float c = params.scale;
  for (int u = threadIdx.x; u < kDqTileRows * kChunks; u += kRowKernelThreads) {
    const int r = u / kChunks, ch = u % kChunks;
    if (r < row_lo || r >= row_hi) continue;
    const float4 a = *reinterpret_cast<const float4*>(rows + r * kPitch + ch * 8);
    const float4 d = *reinterpret_cast<const float4*>(rows + r * kPitch + ch * 8 + 4);
    uint4 out;
    out.x = pack2<Elem>(a.x * c, a.y * c);
    out.y = pack2<Elem>(a.z * c, a.w * c);
    out.z = pack2<Elem>(d.x * c, d.y * c);
    out.w = pack2<Elem>(d.z * c, d.w * c);
    const int64_t t = g.q_begin + (pos0 + r - g.offset);
    Elem* dq = static_cast<Elem*>(params.dq) + operand_row(params.dq_stride, t, params.seqlen_q, h);
    reinterpret_cast<uint4*>(dq)[ch] = out;
  }
}

}  // namespace s2attn::cuda

// The backward's post-process (non-deterministic mode): dq = scale * the fp32 dQ accumulator, converted to
// dq's dtype and written with dq's strides. Rows no key tile touched hold 0 (the pre-pass zeroed them).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/sm80/backward_preprocess_sm80.cuh"

namespace s2attn::cuda {

// Grid: ceil(heads * total_q * D / 8 / kRowKernelThreads) CTAs; each thread one 16-byte chunk of dq.
template <typename Elem, int kHeadDim>
__global__ void __launch_bounds__(kRowKernelThreads)
    backward_postprocess_sm80(const __grid_constant__ AttentionBwdParams params, const float* dq_accum) {
  constexpr int kChunks = kHeadDim / 8;
  const int64_t chunk = int64_t(blockIdx.x) * kRowKernelThreads + threadIdx.x;
  const int64_t idx = chunk / kChunks;  // h * total_q + t
  if (idx >= int64_t(params.num_heads) * params.total_q) return;
  const int ch = static_cast<int>(chunk % kChunks);
  const int h = static_cast<int>(idx / params.total_q);
  const int64_t t = idx % params.total_q;
  const float4* src = reinterpret_cast<const float4*>(dq_accum + idx * kHeadDim + ch * 8);
  const float4 a = src[0], b = src[1];
  const float c = params.scale;
  uint4 out;
  out.x = pack2<Elem>(a.x * c, a.y * c);
  out.y = pack2<Elem>(a.z * c, a.w * c);
  out.z = pack2<Elem>(b.x * c, b.y * c);
  out.w = pack2<Elem>(b.z * c, b.w * c);
  Elem* dq = static_cast<Elem*>(params.dq) + operand_row(params.dq_stride, t, params.seqlen_q, h);
  reinterpret_cast<uint4*>(dq)[ch] = out;
}

}  // namespace s2attn::cuda

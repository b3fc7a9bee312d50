// The backward's pre-pass: per q head h and query row t of the operands (t = b * seqlen_q + r, or the varlen
// token index), dsum = rowsum(dO * O) in fp32 and lse2 = lse * log2(e) (+inf where lse = -inf: a row that
// saw nothing gets P = exp2(s - lse2) = 0, never NaN), into the workspace (BackwardWorkspace); it also
// zeroes the row's dQ accumulator when there is one. D / 8 threads per row, each one 16-byte chunk of O
// and dO, reduced with shuffles in a fixed order (deterministic).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/attention_params.h"

namespace s2attn::cuda {

constexpr int kRowKernelThreads = 256;

// Element offset of operand row t of head h (s: the operand's strides; a varlen operand has batch stride 0
// and seqlen_q its total rows, so b = 0 and r = t).
__device__ __forceinline__ int64_t operand_row(const SeqStrides& s, int64_t t, int32_t seqlen, int h) {
  const int64_t b = t / seqlen, r = t % seqlen;
  return b * s.batch + r * s.seq + int64_t(h) * s.head;
}

template <typename Elem>
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const Elem* x = reinterpret_cast<const Elem*>(&a);
  const Elem* y = reinterpret_cast<const Elem*>(&b);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(static_cast<float>(x[i]), static_cast<float>(y[i]), s);
  return s;
}

// Grid: ceil(heads * total_q / rows per CTA) CTAs of kRowKernelThreads; row index = h * total_q + t.
template <typename Elem, int kHeadDim>
__global__ void __launch_bounds__(kRowKernelThreads)
    backward_preprocess_sm80(const __grid_constant__ AttentionBwdParams params, float* lse2, float* dsum,
                             float* dq_accum) {
  constexpr int kChunks = kHeadDim / 8;  // threads per row
  static_assert(kChunks <= 32 && 32 % kChunks == 0, "a row's threads within one warp");
  constexpr int kRows = kRowKernelThreads / kChunks;
  const int64_t rows = int64_t(params.num_heads) * params.total_q;
  const int64_t idx = int64_t(blockIdx.x) * kRows + threadIdx.x / kChunks;
  const int ch = threadIdx.x % kChunks;
  const bool valid = idx < rows;  // every lane takes part in the shuffles
  float s = 0.f;
  int h = 0;
  int64_t t = 0;
  if (valid) {
    h = static_cast<int>(idx / params.total_q);
    t = idx % params.total_q;
    const Elem* o = static_cast<const Elem*>(params.out) + operand_row(params.out_stride, t, params.seqlen_q, h);
    const Elem* d = static_cast<const Elem*>(params.dout) + operand_row(params.dout_stride, t, params.seqlen_q, h);
    s = dot8<Elem>(reinterpret_cast<const uint4*>(o)[ch], reinterpret_cast<const uint4*>(d)[ch]);
    if (dq_accum != nullptr) {
      float4* acc = reinterpret_cast<float4*>(dq_accum + idx * kHeadDim + ch * 8);
      acc[0] = make_float4(0.f, 0.f, 0.f, 0.f);
      acc[1] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
#pragma unroll
  for (int off = kChunks / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (valid && ch == 0) {
    const float l = params.lse[operand_row(params.lse_stride, t, params.seqlen_q, h)];
    constexpr float kLog2eF = 1.4426950408889634f;
    lse2[idx] = l == -INFINITY ? INFINITY : l * kLog2eF;
    dsum[idx] = s;
  }
}

}  // namespace s2attn::cuda

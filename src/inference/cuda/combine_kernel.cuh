// LSE-combine kernels: merge attention outputs over disjoint key ranges, lse = log(sum exp(lse_p)),
// out = sum exp(lse_p - lse) out_p. A partition whose lse is -inf contributes nothing (its output is not
// read); a row whose partitions are all -inf gets 0 and -inf. One CTA per (query row, head); threads over
// the head dim (one CTA per row serialised 32 heads x 33 splits: 268 us at batch 1 x 128k, measured).
// Used by split-KV paged attention (partials in the fp32 workspace) and combine_partitions.
#pragma once
#include <cstdint>

#include "cuda/common/dependent_launch.cuh"
#include "inference/cuda/paged_elem.cuh"
#include "inference/paged_params.h"
#include "inference/paged_workspace.h"

namespace s2attn::cuda {

constexpr int kCombineThreads = 128;

// Split-KV: workspace partials [splits, total_q, H, D] / [splits, total_q, H] -> out, lse of q's layout.
// Latency, not bandwidth, is the cost (a few KB per row): every load a thread needs is issued at once — its
// split's LSE and one float4 of each of its splits' partial rows (the CTA's threads are kGroups groups of
// D / 4, group g taking splits g, g + kGroups, ...) — so the CTA waits for one round trip to L2, where a loop
// over the splits four loads at a time waited for nine (10 us at 1 x 128k, 33 splits, measured). The splits'
// weights exp(lse_i - M) / L are computed once in shared memory (a thread per split, one warp reduces), the
// groups' sums are added in shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kCombineThreads) paged_split_combine_kernel(const PagedParams p) {
  static_assert(kMaxPagedSplits <= kCombineThreads && kMaxPagedSplits <= 64, "a thread per split, a warp reduces");
  constexpr int kCols = D / 4;                       // threads of a group: one float4 of the row each
  constexpr int kGroups = kCombineThreads / kCols;   // split groups
  constexpr int kPerGroup = (kMaxPagedSplits + kGroups - 1) / kGroups;
  static_assert(D % 4 == 0 && kCombineThreads % kCols == 0 && kPerGroup <= 16, "float4 columns, <= 16 loads");
  __shared__ float weight[kMaxPagedSplits];
  __shared__ float row_lse;
  __shared__ float4 part[kCombineThreads];
  // Before the wait (nothing here reads the paged kernel's output; cu_seqlens_q was complete when the paged
  // kernel, a plain launch, started): the row's sequence and position in 32-bit arithmetic (a 64-bit division
  // is a call of ~70 instructions: the compiled kernel spent two of them, and a 64-bit address chain per load,
  // before its first load of a partial) and split 0's addresses.
  const int32_t row = blockIdx.x;  // total_q is a 32-bit count
  // varlen rows of no sequence (before the first one's start or past the last one's end): no split wrote
  // them, and the single-split path leaves them untouched too (they return after the wait: a dependent's
  // completion must imply the paged kernel's, launch_kernel_overlapping)
  const bool no_sequence = p.cu_seqlens_q && (row < p.cu_seqlens_q[0] || row >= p.cu_seqlens_q[p.batch]);
  const int32_t b = p.cu_seqlens_q ? 0 : div_nonneg(row, p.q_len);
  const int32_t s = p.cu_seqlens_q ? row : row - b * p.q_len;
  const int S = p.num_splits;
  const PagedWorkspace ws = PagedWorkspace::carve(p.workspace, S, p.total_q, p.num_heads, D);
  const int h = blockIdx.y;
  const int tid = threadIdx.x, grp = tid / kCols, col = tid % kCols;
  const int64_t split_rows = int64_t(p.total_q) * p.num_heads;  // (row, head) pairs of one split's partials
  const int64_t row0 = int64_t(row) * p.num_heads + h;            // this (row, head) in split 0
  const int64_t group_step = kGroups * split_rows * D;  // floats from one of this group's splits to the next
  // split grp's partial row, this thread's float4 (the workspace's start when this group has no split)
  const float* src = ws.out + (grp < S ? (row0 + grp * split_rows) * D + col * 4 : 0);
  grid_dependency_wait();  // launched as the paged kernel's dependent (sm_90): its partials are complete
  if (no_sequence) return;
  const float my_lse = tid < S ? ws.lse[row0 + tid * split_rows] : -INFINITY;
  float4 part_out[kPerGroup];  // every split writes its rows (zeros where it saw nothing): all are readable
#pragma unroll
  for (int k = 0; k < kPerGroup; ++k) {
    const bool has = grp + k * kGroups < S;
    part_out[k] = has ? *reinterpret_cast<const float4*>(src) : make_float4(0.f, 0.f, 0.f, 0.f);
    if (grp + (k + 1) * kGroups < S) src += group_step;  // never past the last split's row
  }
  if (tid < S) weight[tid] = my_lse;
  __syncthreads();
  if (tid < 32) {
    const float x0 = tid < S ? weight[tid] : -INFINITY;
    const float x1 = tid + 32 < S ? weight[tid + 32] : -INFINITY;
    float M = fmaxf(x0, x1);
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    // exp(-inf - M) = 0: a split that saw nothing weighs nothing; M = -inf: the row saw nothing at all
    const float w0 = M > -INFINITY ? expf(x0 - M) : 0.f;
    const float w1 = M > -INFINITY ? expf(x1 - M) : 0.f;
    float L = w0 + w1;
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) L += __shfl_xor_sync(0xffffffffu, L, o);
    const float inv = L > 0.f ? 1.f / L : 0.f;
    if (tid < S) weight[tid] = w0 * inv;
    if (tid + 32 < S) weight[tid + 32] = w1 * inv;
    if (tid == 0) row_lse = L > 0.f ? M + logf(L) : -INFINITY;
  }
  __syncthreads();
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int k = 0; k < kPerGroup; ++k) {
    const int i = grp + k * kGroups;
    const float w = i < S ? weight[i] : 0.f;
    if (w > 0.f) {  // a split of weight 0 adds nothing (and a 0 * inf must not reach the sum)
      acc.x = fmaf(w, part_out[k].x, acc.x);
      acc.y = fmaf(w, part_out[k].y, acc.y);
      acc.z = fmaf(w, part_out[k].z, acc.z);
      acc.w = fmaf(w, part_out[k].w, acc.w);
    }
  }
  part[tid] = acc;
  __syncthreads();
  if (tid < kCols) {
    float4 sum = part[tid];
#pragma unroll
    for (int g = 1; g < kGroups; ++g) {
      const float4 x = part[g * kCols + tid];
      sum.x += x.x;
      sum.y += x.y;
      sum.z += x.z;
      sum.w += x.w;
    }
    T* dst = static_cast<T*>(p.out) + b * p.out_stride.batch + s * p.out_stride.seq + h * p.out_stride.head + tid * 4;
    dst[0] = from_float<T>(sum.x);
    dst[1] = from_float<T>(sum.y);
    dst[2] = from_float<T>(sum.z);
    dst[3] = from_float<T>(sum.w);
  }
  if (tid == 0 && p.lse) p.lse[b * p.lse_stride.batch + h * p.lse_stride.head + s * p.lse_stride.seq] = row_lse;
}

// combine_partitions: row = b * seqlen + s.
template <typename T>
__global__ void __launch_bounds__(kCombineThreads) combine_partitions_kernel(const CombineParams p) {
  const int32_t b = blockIdx.x / p.seqlen;
  const int64_t s = blockIdx.x % p.seqlen;
  const int D = p.head_dim;
  const int h = blockIdx.y;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    auto lse_of = [&](int i) {
      const SeqStrides& ls = p.lse_strides[i];
      return p.lses[i][b * ls.batch + h * ls.head + s * ls.seq];
    };
    float M = -INFINITY;
    for (int i = 0; i < p.num_partitions; ++i) M = fmaxf(M, lse_of(i));
    float L = 0.f, O = 0.f;
    if (M > -INFINITY) {
      for (int i = 0; i < p.num_partitions; ++i) {
        const float x = lse_of(i);
        if (!(x > -INFINITY)) continue;
        const float w = expf(x - M);
        const SeqStrides& os = p.out_strides[i];
        L += w;
        O = fmaf(w, to_float<T>(static_cast<const T*>(p.outs[i])[b * os.batch + s * os.seq + h * os.head + d]), O);
      }
    }
    const bool seen = L > 0.f;
    static_cast<T*>(p.out)[b * p.out_stride.batch + s * p.out_stride.seq + h * p.out_stride.head + d] =
        from_float<T>(seen ? O / L : 0.f);
    if (d == 0 && p.lse) {
      p.lse[b * p.lse_stride.batch + h * p.lse_stride.head + s * p.lse_stride.seq] = seen ? M + logf(L) : -INFINITY;
    }
  }
}

}  // namespace s2attn::cuda

// The last step of both paged kernels: one element of a merged output row, normalised, written to the
// split's fp32 partial (workspace) when the call is split, else to `out` (and the LSE at element 0).
#pragma once
#include <cstdint>

#include "cuda/common/numeric.cuh"
#include "inference/cuda/paged_elem.cuh"
#include "inference/cuda/paged_walk.cuh"
#include "inference/paged_params.h"
#include "inference/paged_workspace.h"

namespace s2attn::cuda {

// Element d (of D) of q head h, query row r (within the sequence) of the CTA's rows c. O, L, M: the row's
// unnormalised output element, its sum and its max (log2 domain); L = 0: the row saw no key (out 0, lse
// -inf). row_base: the sequence's first row in the workspace's [total_q] numbering.
template <typename T>
__device__ __forceinline__ void store_paged_output(const PagedParams& p, const PagedWorkspace& ws, const CtaRows& c,
                                                   int32_t split, int64_t row_base, int32_t h, int32_t r, int d,
                                                   int D, float O, float L, float M) {
  const bool seen = L > 0.f;
  const float out = seen ? O / L : 0.f;
  const float lse = seen ? (M + __log2f(L)) * kLn2 : -INFINITY;
  if (p.num_splits > 1) {
    const int64_t row = (int64_t(split) * p.total_q + row_base + r) * p.num_heads + h;
    ws.out[row * D + d] = out;
    if (d == 0) ws.lse[row] = lse;
  } else {
    T* dst = static_cast<T*>(p.out) + c.b * p.out_stride.batch + (p.q_begin(c.b) + r) * p.out_stride.seq +
             h * p.out_stride.head + d;
    *dst = from_float<T>(out);
    if (d == 0 && p.lse) {
      p.lse[c.b * p.lse_stride.batch + h * p.lse_stride.head + (p.q_begin(c.b) + r) * p.lse_stride.seq] = lse;
    }
  }
}

}  // namespace s2attn::cuda

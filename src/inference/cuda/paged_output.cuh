// The last step of both paged kernels: elements of a merged output row, normalised, written to the split's
// fp32 partial (workspace) when the call is split, else to `out` (and the LSE at element 0).
#pragma once
#include <cstdint>

#include "cuda/common/numeric.cuh"
#include "inference/cuda/paged_elem.cuh"
#include "inference/cuda/paged_walk.cuh"
#include "inference/paged_params.h"
#include "inference/paged_workspace.h"

namespace s2attn::cuda {

// Elements [d, d + kN) (of D) of q head h, query row r (within the sequence) of the CTA's rows c. O, L, M: the
// row's unnormalised output elements, its sum and its max (log2 domain); L = 0: the row saw no key (out 0,
// lse -inf). row_base: the sequence's first row in the workspace's [total_q] numbering. kN = 4 (d a multiple
// of 4): one 16-byte store into the workspace, whose rows are 16-byte aligned.
template <typename T, int kN = 1>
__device__ __forceinline__ void store_paged_output(const PagedParams& p, const PagedWorkspace& ws, const CtaRows& c,
                                                   int32_t split, int64_t row_base, int32_t h, int32_t r, int d,
                                                   int D, const float (&O)[kN], float L, float M) {
  static_assert(kN == 1 || kN == 4, "one element or a 16-byte quad");
  const bool seen = L > 0.f;
  const float inv = seen ? 1.f / L : 0.f;  // one reciprocal for the kN elements
  const float lse = seen ? (M + __log2f(L)) * kLn2 : -INFINITY;
  if (p.num_splits > 1) {
    const int64_t row = (int64_t(split) * p.total_q + row_base + r) * p.num_heads + h;
    float* dst = ws.out + row * D + d;
    if constexpr (kN == 4) {
      *reinterpret_cast<float4*>(dst) = make_float4(O[0] * inv, O[1] * inv, O[2] * inv, O[3] * inv);
    } else {
      *dst = O[0] * inv;
    }
    if (d == 0) ws.lse[row] = lse;
  } else {
    T* dst = static_cast<T*>(p.out) + c.b * p.out_stride.batch + (p.q_begin(c.b) + r) * p.out_stride.seq +
             h * p.out_stride.head + d;
#pragma unroll
    for (int n = 0; n < kN; ++n) dst[n] = from_float<T>(O[n] * inv);
    if (d == 0 && p.lse) {
      p.lse[c.b * p.lse_stride.batch + h * p.lse_stride.head + (p.q_begin(c.b) + r) * p.lse_stride.seq] = lse;
    }
  }
}

}  // namespace s2attn::cuda

// Warpgroup GEMM helpers shared by the Hopper kernels: one call issues a whole wgmma GEMM (all k16 steps)
// through CuTe's atoms and commits it; plus the exp2 and the element-type bridge the epilogues use.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "cuda/common/numeric.cuh"  // kLog2e, kLn2, fast_exp2

namespace s2attn::cuda {

// The CUDA type with the bits of a CuTe element type (for packing and stores).
template <class E>
struct CudaElem;
template <>
struct CudaElem<cutlass::bfloat16_t> {
  using type = __nv_bfloat16;
};
template <>
struct CudaElem<cutlass::half_t> {
  using type = __half;
};

// Issues one warpgroup GEMM (all k16 steps) and commits it; the caller waits (warpgroup_wait).
// kRegA: A in registers (RS), else a shared-memory descriptor (SS).
template <bool kZeroInit, bool kRegA, class Mma, class TA, class TB, class TC>
__device__ __forceinline__ void wgmma_issue(Mma& mma, TA const& a, TB const& b, TC& c) {
  using namespace cute;
  if constexpr (kRegA) warpgroup_fence_operand(const_cast<TA&>(a));
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

}  // namespace s2attn::cuda

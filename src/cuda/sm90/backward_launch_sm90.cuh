// Definitions of run_backward_kv_sm90 and run_backward_dq_sm90: included by the instantiation files only.
#pragma once
#include "cuda/sm90/backward_dq_kernel_sm90.cuh"
#include "cuda/sm90/backward_kernel_sm90.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/launch_sm90.cuh"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim, bool kFusedDq>
void run_backward_kv_sm90(const BackwardParamsSm90& params, const BackwardLaunchSm90& launch) {
  using T = BackwardTraitsSm90<Elem, kHeadDim, kFusedDq>;
  launch_persistent_sm90<backward_kv_kernel_sm90<T>, BwdSharedStorageSm90<T>>(T::kThreads, params, launch);
}

template <typename Elem, int kHeadDim>
void run_backward_dq_sm90(const BackwardDqParamsSm90& params, const BackwardLaunchSm90& launch) {
  using T = DqTraitsSm90<Elem, kHeadDim>;
  // it reads nothing the KV kernel writes: overlapping, its CTAs take the SMs the KV kernel's tail leaves idle
  launch_persistent_sm90<backward_dq_kernel_sm90<T>, DqSharedStorageSm90<T>>(T::kThreads, params, launch,
                                                                             launch.overlap_previous);
}

}  // namespace s2attn::cuda

// One explicit instantiation per (dtype, head dim); use inside namespace s2attn::cuda.
#define S2ATTN_INSTANTIATE_BACKWARD_SM90(ELEM, HEAD_DIM) \
  template void run_backward_kv_sm90<ELEM, HEAD_DIM, false>(const BackwardParamsSm90&, const BackwardLaunchSm90&); \
  template void run_backward_dq_sm90<ELEM, HEAD_DIM>(const BackwardDqParamsSm90&, const BackwardLaunchSm90&);
// The fused-dQ KV kernel (head dim 128 only).
#define S2ATTN_INSTANTIATE_BACKWARD_SM90_FUSED_DQ(ELEM) \
  template void run_backward_kv_sm90<ELEM, 128, true>(const BackwardParamsSm90&, const BackwardLaunchSm90&);

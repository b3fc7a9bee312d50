// Definition of run_forward_sm90: included by the instantiation files only.
#pragma once
#include "cuda/sm90/forward_kernel_sm90.cuh"
#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/launch_sm90.cuh"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim>
void run_forward_sm90(const ForwardParamsSm90& params, const ForwardLaunchSm90& launch) {
  using T = ForwardTraitsSm90<Elem, kHeadDim>;
  launch_persistent_sm90<forward_kernel_sm90<T>, SharedStorageSm90<T>>(T::kThreads, params, launch);
}

}  // namespace s2attn::cuda

// One explicit instantiation per (dtype, head dim); use inside namespace s2attn::cuda.
#define S2ATTN_INSTANTIATE_FORWARD_SM90(ELEM, HEAD_DIM) \
  template void run_forward_sm90<ELEM, HEAD_DIM>(const ForwardParamsSm90&, const ForwardLaunchSm90&);

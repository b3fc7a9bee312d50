// Definition of run_forward_sm90: included by the instantiation files only.
#pragma once
#include "cuda/common/launch.cuh"
#include "cuda/sm90/forward_kernel_sm90.cuh"
#include "cuda/sm90/forward_sm90.h"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim>
void run_forward_sm90(const ForwardParamsSm90& params, const ForwardLaunchSm90& launch) {
  using T = ForwardTraitsSm90<Elem, kHeadDim>;
  constexpr int kSmem = smem_bytes_sm90<T>();
  static_assert(kSmem <= 227 * 1024, "shared memory per block on sm_90: 227 KiB");
  static uint64_t configured = 0;
  launch_kernel(forward_kernel_sm90<T>, launch.grid, T::kThreads, kSmem, launch.stream, launch.device, &configured,
                params);
}

}  // namespace s2attn::cuda

// One explicit instantiation per (dtype, head dim); use inside namespace s2attn::cuda.
#define S2ATTN_INSTANTIATE_FORWARD_SM90(ELEM, HEAD_DIM) \
  template void run_forward_sm90<ELEM, HEAD_DIM>(const ForwardParamsSm90&, const ForwardLaunchSm90&);

// The Hopper (sm_90a) backward's dQ kernel: the forward's persistent, warp-specialised CTA (3 warpgroups,
// the forward's work units and key stages) with dO beside Q and three GEMMs per stage instead of two.
//   warpgroup 0: producer (setmaxnreg down); its warp 0 walks the units and issues the TMA loads
//                (backward_dq_producer_sm90.cuh);
//   warpgroups 1, 2: consumers (setmaxnreg up), 64 query rows each (backward_dq_consumer_sm90.cuh).
// It replaces the portable dQ kernel where the KV kernel leaves dQ out (ordered / deterministic dQ).
// Semantics: as the forward's (forward_kernel_sm90.cuh); dQ = scale * sum over seen keys of dS K.
#pragma once
#include <cutlass/arch/reg_reconfig.h>

#include "cuda/sm90/backward_dq_consumer_sm90.cuh"
#include "cuda/sm90/backward_dq_producer_sm90.cuh"
#include "cuda/sm90/backward_dq_traits_sm90.h"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__global__ void __launch_bounds__(T::kThreads, 1)
    backward_dq_kernel_sm90(const __grid_constant__ BackwardDqParamsSm90 dp) {
  auto& ss = shared_storage_sm90<DqSharedStorageSm90<T>>();
  const int role = warpgroup_role();

  if (threadIdx.x == 0) {
    init_kv_stage_barriers<T::kStages>(ss, T::kConsumerWarpgroups * 4);
    mbar_init(&ss.q_full, 1);
    mbar_init(&ss.q_empty, T::kConsumerWarpgroups * 4);
    fence_barrier_init();
  }
  __syncthreads();

  if (role == 0) {
    cutlass::arch::warpgroup_reg_dealloc<T::kProducerRegs>();
    if (threadIdx.x / 32 == 0) run_dq_producer<T>(dp, ss);
  } else {
    cutlass::arch::warpgroup_reg_alloc<T::kConsumerRegs>();
    run_dq_consumer<T>(dp, ss, role - 1);
  }
  // launched overlapping the KV kernel (run_backward_dq_sm90): finishing after it keeps the stream's order
  grid_dependency_wait();
}

}  // namespace s2attn::cuda

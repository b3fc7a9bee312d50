// The Hopper (sm_90a) S2 backward's KV kernel: a persistent, warp-specialised CTA of 3 warpgroups per SM.
//   warpgroup 0: producer (setmaxnreg down); its warp 0 walks the work units (backward_scheduler_sm90.cuh)
//                and their query steps, and issues the loads (backward_producer_sm90.cuh);
//   warpgroups 1, 2: consumers (setmaxnreg up), 64 keys of the unit's 128-key tile each
//                (backward_consumer_sm90.cuh).
// Shared memory: K and V of the unit (reloaded once the consumers release them: kv_full / kv_empty), a ring
// of kStages query steps (Q, dO, their rows' statistics and the step's metadata; full: 32 producer lanes +
// TMA bytes, empty: the 8 consumer warps). dQ is the dQ kernel's (backward_dq_kernel_sm90.cuh).
//
// Semantics (as the portable backward, backward_kernel_sm80.cuh): query row r of sequence b sits at
// absolute position P = offset + r; it sees key t iff attends(pattern, h, P / bs, t / bs) && (!causal ||
// t <= P) && t < len_k; a row that saw nothing (lse = -inf) contributes nothing.
#pragma once
#include <cutlass/arch/reg_reconfig.h>

#include "cuda/sm90/backward_consumer_sm90.cuh"
#include "cuda/sm90/backward_producer_sm90.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/backward_traits_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__global__ void __launch_bounds__(T::kThreads, 1)
    backward_kv_kernel_sm90(const __grid_constant__ BackwardParamsSm90 fp) {
  auto& ss = shared_storage_sm90<BwdSharedStorageSm90<T>>();
  const int role = warpgroup_role();

  if (threadIdx.x == 0) {
    for (int s = 0; s < T::kStages; ++s) {
      mbar_init(&ss.full[s], 32);                             // the producer warp's lanes (+ TMA bytes)
      mbar_init(&ss.empty[s], T::kConsumerWarpgroups * 128);  // every consumer thread (see the consumer)
    }
    mbar_init(&ss.kv_full, 1);
    mbar_init(&ss.kv_empty, T::kConsumerWarpgroups * 128);
    if constexpr (T::kFusedDq) {
      for (int s = 0; s < 2; ++s) {
        mbar_init(&ss.fdq_bar.ds_full[s], T::kConsumerWarpgroups * 128);
        mbar_init(&ss.fdq_bar.ds_empty[s], T::kConsumerWarpgroups * 128);
      }
    }
    fence_barrier_init();
  }
  __syncthreads();
  grid_launch_dependents();  // the dQ kernel (independent of this one) may take the SMs this grid frees

  if (role == static_cast<int>(BwdWarpGroupRoleSm90::producer)) {
    cutlass::arch::warpgroup_reg_dealloc<T::kProducerRegs>();
    if (threadIdx.x / 32 == 0) run_bwd_producer<T, true>(fp, ss);
  } else {
    cutlass::arch::warpgroup_reg_alloc<T::kConsumerRegs>();
    run_bwd_consumer<T>(fp, ss, role - 1);
  }
}

}  // namespace s2attn::cuda

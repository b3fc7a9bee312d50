// The Hopper (sm_90a) S2 forward kernel: a persistent, warp-specialised CTA of 3 warpgroups.
//   warpgroup 0: producer (setmaxnreg down); its warp 1 walks the work units and their visible key tiles
//                into a plan ring, warp 0 issues the Q and K TMA loads, warp 2 the V loads
//                (forward_producer_sm90.cuh);
//   warpgroups 1, 2: consumers (setmaxnreg up), 64 query rows each (forward_consumer_sm90.cuh).
// Shared memory: the Q tile (1 or 2 buffers, reloaded per unit once the consumers release it after the
// unit's last S GEMM) and a ring of kStages K/V stages, K and V each with full (TMA transaction) and empty
// (8 consumer warps) mbarriers.
//
// Semantics (as every backend): query row r of sequence b sits at absolute position P = offset + r; it sees
// key t iff attends(pattern, h, P / bs, t / bs) && (!causal || t <= P) && t < len_k; rows at P < 0 see
// nothing. A row that sees nothing gets out 0 and lse -inf.
#pragma once
#include <cutlass/arch/reg_reconfig.h>

#include "cuda/sm90/forward_consumer_sm90.cuh"
#include "cuda/sm90/forward_producer_sm90.cuh"
#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/forward_traits_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__global__ void __launch_bounds__(T::kThreads, 1) forward_kernel_sm90(const __grid_constant__ ForwardParamsSm90 fp) {
  auto& ss = shared_storage_sm90<SharedStorageSm90<T>>();
  const int role = warpgroup_role();

  if (threadIdx.x == 0) {
    init_kv_stage_barriers<T::kStages>(ss, T::kConsumerWarpgroups * 4);
    for (int s = 0; s < T::kQStages; ++s) {
      mbar_init(&ss.q_full[s], 1);
      mbar_init(&ss.q_empty[s], T::kConsumerWarpgroups * 4);
    }
    for (int s = 0; s < T::kPlanStages; ++s) {
      mbar_init(&ss.plan_full[s], 1);   // the planner warp's lane 0
      mbar_init(&ss.plan_empty[s], 2);  // lane 0 of the K warp and of the V warp
    }
    fence_barrier_init();
  }
  if (fp.paged.block_table != nullptr) {
    // paged K / V: rows that no box writes (past a context's end in its last box, unmapped pages) must be
    // finite where P = 0 multiplies them: the ring starts zeroed, later rows hold earlier, valid keys
    constexpr int kVecs = static_cast<int>(sizeof(ss.k) / sizeof(uint4));
    for (int i = threadIdx.x; i < kVecs; i += T::kThreads) {
      reinterpret_cast<uint4*>(ss.k)[i] = make_uint4(0, 0, 0, 0);
      reinterpret_cast<uint4*>(ss.v)[i] = make_uint4(0, 0, 0, 0);
    }
    fence_proxy_async_shared();  // before the producer's first TMA into the ring
  }
  __syncthreads();

  if (role == static_cast<int>(WarpGroupRoleSm90::producer)) {
    cutlass::arch::warpgroup_reg_dealloc<T::kProducerRegs>();
    run_producer<T>(fp, ss);  // its warps 0-2: K, plan, V
  } else {
    cutlass::arch::warpgroup_reg_alloc<T::kConsumerRegs>();
    run_consumer<T>(fp, ss, role - 1);
  }
}

}  // namespace s2attn::cuda

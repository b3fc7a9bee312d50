// The producer warp of the Hopper dQ kernel: per work unit (the forward's: sequence, q head, 128-row query
// tile) one TMA load of Q and dO, then the unit's visible key stages (the forward's StageSequenceSm90), K and
// V of each, through a ring whose K and V slots have full / empty mbarriers of their own (V is released
// after dP, K only after the dQ GEMM). Lane 0 issues; all 32 lanes walk (the walk is warp-collective).
#pragma once
#include <cstdint>

#include "cuda/sm90/backward_dq_traits_sm90.h"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/forward_producer_sm90.cuh"  // load_kv_stage
#include "cuda/sm90/ptx_sm90.cuh"
#include "cuda/sm90/stage_sequence_sm90.cuh"
#include "cuda/sm90/tile_scheduler_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__device__ __forceinline__ void run_dq_producer(const BackwardDqParamsSm90& dp, DqSharedStorageSm90<T>& ss) {
  const ForwardParamsSm90& fp = dp.f;
  const AttentionParams& p = fp.p;
  const int lane = threadIdx.x % 32;
  if (lane == 0) {
    prefetch_tensormap(&fp.tma_q);
    prefetch_tensormap(&dp.tma_do);
    prefetch_tensormap(&fp.tma_k);
    prefetch_tensormap(&fp.tma_v);
  }
  const bool varlen = p.cu_seqlens_q != nullptr;
  TileSchedulerSm90<T::kBlockM> sched;
  uint32_t count = 0;  // stages loaded so far: slot count % kStages, phase (count / kStages) & 1
  int unit_count = 0;
  WorkUnitSm90 w;
  for (int u = blockIdx.x; sched.get(fp, u, w); u += gridDim.x) {
    const int hk = w.h / (p.num_heads / p.num_kv_heads);
    const int qb = varlen ? 0 : w.b;  // TMA batch coordinate (varlen: one packed sequence)
    if (lane == 0) {
      mbar_wait(&ss.q_empty, (unit_count & 1) ^ 1);
      mbar_arrive_expect_tx(&ss.q_full, 2 * T::kQBytes);
      // first row; may be negative or past the end: TMA zero-fills and credits the whole box
      const int row0 = static_cast<int>(w.g.q_begin) + (w.t0 - w.g.offset);
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int c = 0; c < T::kChunks; ++c) {
          const int off = half * T::kWgRows * T::kHeadDim + c * T::kWgRows * T::kChunk;
          tma_load_4d(&fp.tma_q, ss.q + off, &ss.q_full, c * T::kChunk, row0 + half * T::kWgRows, w.h, qb);
          tma_load_4d(&dp.tma_do, ss.dout + off, &ss.q_full, c * T::kChunk, row0 + half * T::kWgRows, w.h, qb);
        }
    }
    ++unit_count;

    StageSequenceSm90<T::kBlockM, T::kSubTile> seq;
    seq.init(p.pattern, w);
    const int krow0 = static_cast<int>(w.g.k_begin);
    StageSm90 st;
    while (seq.next(st)) {
      // a missing second box repeats the first: finite data that the consumers mask out
      const int key0 = krow0 + st.k0[0];
      const int key1 = krow0 + (st.boxes > 1 ? st.k0[1] : st.k0[0]);
      if (lane == 0) {
        const uint32_t slot = count % T::kStages, ph = (count / T::kStages) & 1;
        load_kv_stage<T>(&fp.tma_k, ss.k[slot], &ss.k_full[slot], &ss.k_empty[slot], ph, st.boxes, key0, key1, hk, qb);
        load_kv_stage<T>(&fp.tma_v, ss.v[slot], &ss.v_full[slot], &ss.v_empty[slot], ph, st.boxes, key0, key1, hk, qb);
      }
      ++count;
    }
  }
}

}  // namespace s2attn::cuda

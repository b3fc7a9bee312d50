// The producer warp of the Hopper forward: for each work unit, one TMA load of the Q tile, then the unit's
// visible key tiles, two 64-key boxes per stage of a shared-memory ring guarded by full / empty mbarriers.
// Which key tiles: StageSequenceSm90 (the consumers run the same enumeration, so the stages need no
// metadata in shared memory).
#pragma once
#include <cstdint>

#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/forward_traits_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"
#include "cuda/sm90/stage_sequence_sm90.cuh"
#include "cuda/sm90/tile_scheduler_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__device__ __forceinline__ void run_producer(const ForwardParamsSm90& fp, SharedStorageSm90<T>& ss) {
  using Elem = typename T::Elem;
  const AttentionParams& p = fp.p;
  const int lane = threadIdx.x % 32;
  if (lane == 0) {
    prefetch_tensormap(&fp.tma_q);
    prefetch_tensormap(&fp.tma_k);
    prefetch_tensormap(&fp.tma_v);
  }
  const bool varlen = p.cu_seqlens_q != nullptr;
  TileSchedulerSm90<T::kBlockM> sched;
  int stage = 0;
  uint32_t phase = 0;
  int unit_count = 0;
  WorkUnitSm90 w;
  for (int u = blockIdx.x; sched.get(fp, u, w); u += gridDim.x) {
    const int hk = w.h / (p.num_heads / p.num_kv_heads);
    const int qb = varlen ? 0 : w.b;  // TMA batch coordinate (varlen: one packed sequence)
    if (lane == 0) {
      if (unit_count > 0) mbar_wait(&ss.q_empty, (unit_count - 1) & 1);  // consumers are done with Q
      mbar_arrive_expect_tx(&ss.q_full, T::kQBytes);
      const int row0 = static_cast<int>(w.g.q_begin) + (w.t0 - w.g.offset);  // may be negative: zero fill
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int c = 0; c < T::kChunks; ++c) {
          Elem* dst = ss.q + half * T::kWgRows * T::kHeadDim + c * T::kWgRows * T::kChunk;
          tma_load_4d(&fp.tma_q, dst, &ss.q_full, c * T::kChunk, row0 + half * T::kWgRows, w.h, qb);
        }
    }
    ++unit_count;

    StageSequenceSm90<T::kBlockM, T::kSubTile> seq;
    seq.init(p.pattern, w);
    const int krow0 = static_cast<int>(w.g.k_begin);
    StageSm90 st;
    while (seq.next(st)) {
      if (lane == 0) {
        mbar_wait(&ss.empty[stage], phase ^ 1);
        if (st.boxes == 0) {
          mbar_arrive(&ss.full[stage]);  // nothing to load: the consumers only pass through
        } else {
          mbar_arrive_expect_tx(&ss.full[stage], T::kStageBytes);
#pragma unroll
          for (int box = 0; box < 2; ++box) {
            // a missing second box repeats the first: finite data that the consumers mask out
            const int key = krow0 + (box < st.boxes ? st.k0[box] : st.k0[0]);
#pragma unroll
            for (int c = 0; c < T::kChunks; ++c) {
              const int off = c * T::kBlockN * T::kChunk + box * T::kSubTile * T::kChunk;
              tma_load_4d(&fp.tma_k, ss.k[stage] + off, &ss.full[stage], c * T::kChunk, key, hk, qb);
              tma_load_4d(&fp.tma_v, ss.v[stage] + off, &ss.full[stage], c * T::kChunk, key, hk, qb);
            }
          }
        }
      }
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
}

}  // namespace s2attn::cuda

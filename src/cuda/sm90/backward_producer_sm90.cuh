// The producer warp of the Hopper backward's KV kernel. Per work unit: one TMA load of the tile's K and V
// (once the consumers have released the previous unit's), then, per query step that sees the tile (the
// transposed walk of the portable backward, BackwardWalk: the group's q heads in turn, each over the query
// blocks that col_segments says see the tile's key blocks, in 64-row steps), one stage of a shared-memory
// ring: Q and dO by TMA, the rows' lse2 / dsum (workspace, ordinary loads by the 32 lanes; +inf / 0 for
// rows outside the sequence) and the step's metadata. Warp-collective: all 32 lanes run it.
#pragma once
#include <cstdint>

#include "cuda/common/numeric.cuh"
#include "cuda/sm80/backward_query_tiles_sm80.cuh"
#include "cuda/sm90/backward_scheduler_sm90.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/backward_traits_sm90.h"
#include "cuda/sm90/dq_accum_tiles_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

// The walk of unit w, as BackwardWalk reads it (StridedWalkGeometry): the q heads of its KV head's group over
// the query blocks that see its key blocks j0 and j0 + jstride (block size 64; the second only when it holds
// keys of the sequence) or its one block (128). k_half: keys between the two halves' first keys.
// bs: the block size; group: q heads per KV head (the caller's, computed once).
template <int kBlockN, bool kDescending>
__device__ __forceinline__ void set_unit_walk_sm90(const AttentionBwdParams& p, const BwdWorkUnitSm90& w, int bs,
                                                   int group, int k_half, bool varlen, StridedWalkGeometry& geo) {
  const SeqGeometry& g = w.g;
  set_walk_tile(geo, w.hk * group, group, w.k0, g.len_k, bs);
  geo.jstride = w.jstride;
  geo.descending = kDescending != w.reversed ? 1 : 0;
  geo.fold_next = w.folds ? 1 : 0;
  geo.nblocks = bs >= kBlockN ? 1 : (w.k0 + k_half < g.len_k ? 2 : 1);
  set_walk_rows<kBlockN>(geo, g, bs, p.pattern.causal != 0);
  geo.row_base = varlen ? g.q_begin : int64_t(w.b) * p.seqlen_q;
}

// kDescending: the query steps from the last to the first. A vertical key block is seen by every later query
// block, so the CTAs on vertical tiles (pass 1 of the scheduler, started together) all read the same last
// query blocks of their heads first and then move down in near lockstep: Q and dO come from L2 for all but
// the first of them. Ascending, each started at its own block and read the heads' Q / dO at scattered places
// (ncu at 32k V = 8: L2 hit rate 30%, DRAM 56% busy).
template <class T, bool kDescending>
__device__ __forceinline__ void run_bwd_producer(const BackwardParamsSm90& fp, BwdSharedStorageSm90<T>& ss) {
  constexpr int kBlockM = T::kBlockM;
  const AttentionBwdParams& p = fp.p;
  const int lane = threadIdx.x % 32;
  if (lane == 0) {
    prefetch_tensormap(&fp.tma_q);
    prefetch_tensormap(&fp.tma_do);
    prefetch_tensormap(&fp.tma_k);
    prefetch_tensormap(&fp.tma_v);
  }
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int bs = p.pattern.block_size;
  const int group = p.num_heads / p.num_kv_heads;
  BwdTileSchedulerSm90<T::kBlockN> sched;
  int stage = 0;
  uint32_t phase = 0;
  int unit_count = 0;
  BwdWorkUnitSm90 w;
  auto advance = [&]() {
    if (++stage == T::kStages) {
      stage = 0;
      phase ^= 1;
    }
  };
  // The next unit. Dynamic (fp.unit_counter): the first one no CTA has taken yet. The static stride left
  // CTAs with long and with short vertical tiles far apart (a model of the units' query steps puts the
  // busiest CTA 18-30% above the mean at 8k, 9-15% at 32k, 5-8% at 128k; greedy: < 1%). Every CTA's
  // fetches increase, as the scheduler's cursor needs. Fetched once the unit's last step is issued: its
  // latency then hides under the consumers' last steps in flight, which the next unit's K / V load waits for
  // anyway (held across the walk instead, it spilled: the producer has 24 registers).
  auto next_unit = [&](int u) {  // warp-collective; lane 0 decides
    int next = 0;
    if (lane == 0) {
      next = fp.unit_counter != nullptr ? atomicAdd(fp.unit_counter, 1) + static_cast<int>(gridDim.x)
                                        : u + static_cast<int>(gridDim.x);
    }
    return __shfl_sync(0xffffffffu, next, 0);
  };
  // part: 1 while the CTA runs the second unit of a folded pair (the same u; backward_scheduler_sm90.cuh)
  for (int u = blockIdx.x, part = 0; sched.get(fp, u, part, w);) {
    if (!w.valid) {  // a skipped unit (few: past a head's last vertical block or last pair); so is its pair
      part = 0;
      u = next_unit(u);
      continue;
    }
    const int batch_coord = varlen ? 0 : w.b;  // TMA batch coordinate (varlen: one packed sequence)
    const SeqGeometry& g = w.g;
    if (lane == 0) {
      if (unit_count > 0) mbar_wait(&ss.kv_empty, (unit_count - 1) & 1);  // consumers are done with K, V
      // keys between the halves' first keys: block size 64, the tile's two blocks; 128, one block's halves
      const int k_half = bs < T::kBlockN ? w.jstride * bs : T::kWgKeys;
      ss.unit = BwdUnitSm90{0, w.b, w.hk, w.k0, k_half, g.len_q, g.len_k, g.offset, g.k_begin,
                            varlen ? g.q_begin : int64_t(w.b) * p.seqlen_q};
      mbar_arrive_expect_tx(&ss.kv_full, T::kKVBytes);
      const int key0 = static_cast<int>(g.k_begin) + w.k0;  // keys past the tensor are zero-filled
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int c = 0; c < T::kChunks; ++c) {
          const int off = c * 64 * T::kChunk;
          tma_load_4d(&fp.tma_k, ss.k[half] + off, &ss.kv_full, c * T::kChunk, key0 + half * k_half, w.hk,
                      batch_coord);
          tma_load_4d(&fp.tma_v, ss.v[half] + off, &ss.kv_full, c * T::kChunk, key0 + half * k_half, w.hk,
                      batch_coord);
        }
      // the walk's constants (the walk reads them through a pointer: shared memory, not registers)
      set_unit_walk_sm90<T::kBlockN, kDescending>(p, w, bs, group, k_half, varlen, ss.geo);
    }
    __syncwarp();
    ++unit_count;

    BackwardWalk<kBlockM, false, StridedWalkGeometry, kDescending, /*kDirFromGeo=*/true> walk;
    walk.pattern = &p.pattern;
    walk.geo = &ss.geo;
    bool have = walk.first();
    if (!have) {  // no query sees the tile: one stage with no step, so the consumers write dK = dV = 0
      mbar_wait(&ss.empty[stage], phase ^ 1);
      if (lane == 0) ss.meta[stage] = BwdStageMetaSm90{0, 0, 0u, kStepLast};
      mbar_arrive(&ss.full[stage]);
      advance();
    }
    while (have) {
      const int h = walk.head(), p0 = walk.p0();
      const uint32_t vis = walk.vis();
      have = walk.next();
      mbar_wait(&ss.empty[stage], phase ^ 1);  // every lane: the consumers are done with this stage
      // Q and dO first: the statistics below are ordinary loads, and issuing the TMA after their stores
      // put a global load's latency before every step's Q / dO (the consumers' step wait: 9.8% of the KV
      // kernel's stall samples at 32k V32, ncu). Lane 0 arrives with the other lanes, after its stores.
      if (lane == 0) {
        int32_t dq_half0 = 0, halves = 0;
        if constexpr (T::kFusedDq) {  // the accumulator's tile of the step (dq_accum_tiles_sm90.h)
          const bool any_row = p0 + kDqTileRows > g.offset && p0 < g.offset + g.len_q;
          const int tile = static_cast<int>(dq_tile_base(ss.geo.row_base, w.b)) + p0 / kDqTileRows -
                           dq_first_position_tile(g.offset);
          dq_half0 = any_row ? (tile * p.num_heads + h) * 2 : -1;
          halves = static_cast<int32_t>((vis & 1u) | (((vis >> (T::kWgKeys >> ss.geo.bs_shift)) & 1u) << 1));
        }
        ss.meta[stage] = BwdStageMetaSm90{dq_half0, p0, vis,
                                          kStepValid | (have ? 0 : kStepLast) | (halves << kStepHalvesShift)};
        mbar_expect_tx(&ss.full[stage], T::kStepBytes);
        const int row0 = static_cast<int>(g.q_begin) + (p0 - g.offset);  // may be negative: zero fill
#pragma unroll
        for (int c = 0; c < T::kChunks; ++c) {
          const int off = c * 64 * T::kChunk;
          tma_load_4d(&fp.tma_q, ss.q[stage] + off, &ss.full[stage], c * T::kChunk, row0, h, batch_coord);
          tma_load_4d(&fp.tma_do, ss.dout[stage] + off, &ss.full[stage], c * T::kChunk, row0, h, batch_coord);
        }
      }
      // the rows' statistics: lane l holds rows 2 l and 2 l + 1 of the step
      const int64_t stats_row = int64_t(h) * p.total_q + ss.geo.row_base - ss.geo.offset;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int m = 2 * lane + e;
        const int pos = p0 + m;
        const bool in_seq = pos >= g.offset && pos < g.offset + g.len_q;
        ss.lse2[stage][m] = in_seq ? fp.lse2[stats_row + pos] : INFINITY;
        ss.dsum[stage][m] = in_seq ? fp.dsum[stats_row + pos] : 0.f;
      }
      mbar_arrive(&ss.full[stage]);  // each lane's arrival releases its own stores (lane 0's: the meta too)
      advance();
    }
    // a folded pair's second unit (the same u), else the next unit. Lane 0's flag (it wrote it), shuffled to
    // the warp: a lane reading shared memory here could see lane 0's next write of it (no other warp-wide step
    // between this and the next unit's set-up on the way to part 1)
    const int fold_next = __shfl_sync(0xffffffffu, lane == 0 ? ss.geo.fold_next : 0, 0);
    if (part == 0 && fold_next != 0) {
      part = 1;
    } else {
      part = 0;
      u = next_unit(u);
    }
  }
  if (lane == 0) {  // no more units: tell the consumers
    if (unit_count > 0) mbar_wait(&ss.kv_empty, (unit_count - 1) & 1);
    ss.unit.done = 1;
    mbar_arrive(&ss.kv_full);
  }
}

}  // namespace s2attn::cuda

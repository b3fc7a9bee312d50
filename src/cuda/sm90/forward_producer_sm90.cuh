// The producer warps of the Hopper forward: for each work unit, one TMA load of the Q tile, then the unit's
// visible key tiles, two 64-key boxes per stage of a shared-memory ring; K and V of a stage each have a
// full / empty mbarrier pair. A planner warp walks the units and stages (StageSequenceSm90) into a plan ring;
// one warp issues Q and K from it, another V (run_producer). Each K stage's descriptor goes to shared memory
// beside the slot, for the consumers (written before the slot's full barrier arrives, which releases it).
#pragma once
#include <cstdint>

#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/forward_traits_sm90.h"
#include "cuda/sm90/ptx_sm90.cuh"
#include "cuda/sm90/stage_sequence_sm90.cuh"
#include "cuda/sm90/tile_scheduler_sm90.cuh"

namespace s2attn::cuda {

// One K (or V) stage of the ring: waits until the consumers have released the slot, then loads the stage's
// two 64-key boxes (starting at rows key0 and key1 of the operand), or, for a stage without boxes, only
// arrives (the consumers pass through it). Lane 0 of the producer warp only.
// `desc`, when given, is stored (as the slot's stage descriptor) once the slot is free.
template <class T>
__device__ __forceinline__ void load_kv_stage(const CUtensorMap* map, typename T::Elem* dst, uint64_t* full,
                                              uint64_t* empty, uint32_t phase, int boxes, int key0, int key1,
                                              int hk, int qb, StageSm90* desc_slot = nullptr,
                                              const StageSm90* desc = nullptr) {
  mbar_wait(empty, phase ^ 1);
  if (desc_slot != nullptr) *desc_slot = *desc;  // released to the consumers by the arrive below
  if (boxes == 0) {
    mbar_arrive(full);  // nothing to load: the consumers only pass through
    return;
  }
  mbar_arrive_expect_tx(full, T::kTileBytes);
#pragma unroll
  for (int box = 0; box < 2; ++box) {
#pragma unroll
    for (int c = 0; c < T::kChunks; ++c) {
      const int off = c * T::kBlockN * T::kChunk + box * T::kSubTile * T::kChunk;
      tma_load_4d(map, dst + off, full, c * T::kChunk, box == 0 ? key0 : key1, hk, qb);
    }
  }
}

// Paged K / V (fp.paged): where each box of a stage comes from (PagedStageSm90, stage_sm90.h).
__device__ __forceinline__ PagedStageSm90 paged_stage_sm90(const ForwardParamsSm90& fp, StageSm90& st, int b, int hk,
                                                           int len_k) {
  const PagedKvSm90& pg = fp.paged;
  PagedStageSm90 r{};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    r.rows[i] = 0;
    if (i >= st.boxes) continue;
    const int k = st.k0[i];
    const int32_t page = k >> pg.page_shift;
    const int32_t entry =
        pg.block_table[int64_t(b) * pg.bt_batch_stride + int64_t(hk) * pg.bt_head_stride + int64_t(page) * pg.bt_page_stride];
    if (entry < 0 || entry >= pg.num_pages) {
      st.vis[i] = 0u;  // never read: its keys are masked, its (stale, finite) rows meet P = 0
      continue;
    }
    r.entry[i] = entry;
    r.row[i] = k & ((1 << pg.page_shift) - 1);
    r.rows[i] = max(0, min(64, len_k - k));
  }
  return r;
}

// One K (or V) stage of the ring from the pages (paged_stage_sm90's boxes); as load_kv_stage otherwise.
template <class T>
__device__ __forceinline__ void load_paged_kv_stage(const CUtensorMap* map, const CUtensorMap* map_row,
                                                    typename T::Elem* dst, uint64_t* full, uint64_t* empty,
                                                    uint32_t phase, const PagedStageSm90& ps, int head,
                                                    StageSm90* desc_slot = nullptr, const StageSm90* desc = nullptr) {
  mbar_wait(empty, phase ^ 1);
  if (desc_slot != nullptr) *desc_slot = *desc;  // released to the consumers by the arrive below
  const uint32_t bytes = static_cast<uint32_t>((ps.rows[0] + ps.rows[1]) * 128 * T::kChunks);
  if (bytes == 0) {
    mbar_arrive(full);
    return;
  }
  mbar_arrive_expect_tx(full, bytes);
#pragma unroll
  for (int box = 0; box < 2; ++box) {
    const int n = ps.rows[box];
#pragma unroll
    for (int c = 0; c < T::kChunks; ++c) {
      typename T::Elem* d = dst + c * T::kBlockN * T::kChunk + box * T::kSubTile * T::kChunk;
      if (n == 64) {
        tma_load_4d(map, d, full, c * T::kChunk, head, ps.row[box], ps.entry[box]);
      } else {
        for (int r = 0; r < n; ++r) tma_load_4d(map_row, d + r * T::kChunk, full, c * T::kChunk, head, ps.row[box] + r, ps.entry[box]);
      }
    }
  }
}

// The producer warpgroup's three warps (run_producer): the planner walks the work units and their stages
// into the plan ring (SharedStorageSm90::plan, plan_full / plan_empty); the K warp issues each unit's Q and
// each stage's K, the V warp each stage's V, both from the plan. One warp did all three before: the next
// unit's Q and first K then waited behind the previous unit's last V (a V slot frees only when the P V two
// stages back completes) and behind the next unit's set-up (scheduler, the sequence's divisions, on one warp
// at 72 registers), and the consumers waited ~1.4 us for the first K of every unit (ncu, session 20: 4.3-4.5%
// of all stall samples on that one wait). Now K runs ahead of V within the K ring's depth, and the planning
// runs ahead of both within the plan ring's.

// Warp 1: the units and their stages, in the consumers' order, one plan entry per stage; an `end` entry last.
// Lane 0 writes each entry in place, field by field (a whole entry in registers spilled at 72).
template <class T>
__device__ __forceinline__ void run_planner(const ForwardParamsSm90& fp, SharedStorageSm90<T>& ss) {
  const AttentionParams& p = fp.p;
  const int lane = threadIdx.x % 32;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const bool paged = fp.paged.block_table != nullptr;
  TileSchedulerSm90<T::kBlockM> sched;
  uint32_t plans = 0;  // entries written so far: slot plans % kPlanStages, phase (plans / kPlanStages) & 1
  auto wait_slot = [&]() -> ProducerPlanSm90& {  // lane 0: the next entry, once the K and V warps are done with it
    const uint32_t slot = plans % T::kPlanStages;
    mbar_wait(&ss.plan_empty[slot], ((plans / T::kPlanStages) & 1) ^ 1);
    return ss.plan[slot];
  };
  WorkUnitSm90 w;
  int u = blockIdx.x;
  for (int unit_count = 0;; ++unit_count) {
    // Not more than the Q buffers ahead of the consumers: wait (without arriving) until this unit's Q buffer
    // is free, as the K warp will, before taking the next unit from the counter; planning further ahead
    // would take units that other CTAs could start sooner (the short units at the end of the order, where
    // the dynamic schedule evens out the CTAs: a reviewer's simulation had a CTA hold 10-11). Waited before
    // the unit is located, where little is live (72 registers).
    if (lane == 0) mbar_wait(&ss.q_empty[unit_count % T::kQStages], ((unit_count / T::kQStages) & 1) ^ 1);
    if (!sched.get(fp, u, w)) break;
    // The next unit. Dynamic: the first one no CTA has taken yet (CTAs finish their units at different
    // times: the static stride left the SMs 7% apart at 8k, ncu). Every CTA's fetches increase, as the
    // scheduler's cursor needs. Fetched at the unit's start, so that the atomic's latency hides under it.
    int next = u + static_cast<int>(gridDim.x);
    if (fp.unit_counter != nullptr && lane == 0) next = atomicAdd(fp.unit_counter, 1) + gridDim.x;
    // the unit goes into its first stage's entry now, so that none of it stays live through the stages
    if (lane == 0) {
      ProducerPlanSm90& e = wait_slot();
      e.unit = UnitSm90{u, w.b, w.h, w.t0, w.pos_lo, w.pos_hi, w.g.len_k, w.g.offset, w.g.q_begin};
      e.hk = w.h / (p.num_heads / p.num_kv_heads);
      e.qb = varlen ? 0 : w.b;  // TMA batch coordinate (varlen: one packed sequence)
    }
    StageSequenceSm90<T::kBlockM, T::kSubTile> seq;
    seq.init(p.pattern, w);
    const int krow0 = static_cast<int>(w.g.k_begin);
    StageSm90 st;
    int first = 1;
    while (seq.next(st)) {
      PagedStageSm90 pages{};
      if (paged && lane == 0) {  // may clear st.vis
        pages = paged_stage_sm90(fp, st, w.b, w.h / (p.num_heads / p.num_kv_heads), w.g.len_k);
      }
      if (lane == 0) {
        ProducerPlanSm90& e = first ? ss.plan[plans % T::kPlanStages] : wait_slot();  // (the first: waited)
        e.st = st;
        // a missing second box repeats the first: finite data that the consumers mask out
        e.key0 = krow0 + st.k0[0];
        e.key1 = krow0 + (st.boxes > 1 ? st.k0[1] : st.k0[0]);
        e.first = first;
        e.end = 0;
        if (paged) e.pages = pages;
        mbar_arrive(&ss.plan_full[plans % T::kPlanStages]);  // releases the entry to the K and V warps
      }
      ++plans;
      first = 0;
    }
    u = __shfl_sync(0xffffffffu, next, 0);
  }
  if (lane == 0) {
    ProducerPlanSm90& e = wait_slot();
    e.first = 0;
    e.end = 1;
    mbar_arrive(&ss.plan_full[plans % T::kPlanStages]);
  }
}

// Plan entry `n` of the ring, once the planner has filled it. The K or V warp's lane 0 reads its fields in
// place (registers are short at 72) and then releases it: the lane that reads is the one that arrives on the
// empty barrier, which orders the planner's next write of the slot after the reads.
template <class T>
__device__ __forceinline__ const ProducerPlanSm90& wait_plan(SharedStorageSm90<T>& ss, uint32_t n) {
  const uint32_t slot = n % T::kPlanStages;
  mbar_wait(&ss.plan_full[slot], (n / T::kPlanStages) & 1);
  return ss.plan[slot];
}
template <class T>
__device__ __forceinline__ void release_plan(SharedStorageSm90<T>& ss, uint32_t n) {
  mbar_arrive(&ss.plan_empty[n % T::kPlanStages]);
}

// Warp 0 (kK), lane 0: for each plan entry the unit's Q (when it opens one) and the stage's K with its
// descriptor; after the last, an empty Q buffer with unit index -1, which ends the consumers. Warp 2 (!kK),
// lane 0: each plan entry's V, in the same order.
template <class T, bool kK>
__device__ __forceinline__ void run_kv_loader(const ForwardParamsSm90& fp, SharedStorageSm90<T>& ss) {
  using Elem = typename T::Elem;
  if (threadIdx.x % 32 != 0) return;
  const bool paged = fp.paged.block_table != nullptr;
  const CUtensorMap* map = kK ? &fp.tma_k : &fp.tma_v;
  // paged maps: {D, heads, page rows, pages}
  const CUtensorMap* map_row = kK ? &fp.paged.tma_k_row : &fp.paged.tma_v_row;
  if constexpr (kK) prefetch_tensormap(&fp.tma_q);
  prefetch_tensormap(map);
  if (paged) prefetch_tensormap(map_row);
  Elem(*buf)[T::kTileElems] = kK ? ss.k : ss.v;
  uint64_t* full = kK ? ss.k_full : ss.v_full;
  uint64_t* empty = kK ? ss.k_empty : ss.v_empty;
  uint32_t count = 0;  // stages loaded: slot count % kStages, phase (count / kStages) & 1
  int unit_count = 0;
  int hk = 0, qb = 0;  // the current unit's (its first entry has them)
  for (uint32_t n = 0;; ++n) {
    const ProducerPlanSm90& e = wait_plan(ss, n);
    if (e.first) {
      hk = e.hk;
      qb = e.qb;
    }
    if constexpr (kK) {
      if (e.first || e.end) {
        // Q of this unit, and the unit for the consumers, in the next Q buffer once they have released it
        // (after the S GEMM of the last stage of the unit kQStages units back)
        const int slot = unit_count % T::kQStages;
        mbar_wait(&ss.q_empty[slot], ((unit_count / T::kQStages) & 1) ^ 1);
        if (e.end) {
          release_plan(ss, n);
          ss.unit[slot].u = -1;
          mbar_arrive(&ss.q_full[slot]);
          return;
        }
        ss.unit[slot] = e.unit;  // released to the consumers by the arrive below
        mbar_arrive_expect_tx(&ss.q_full[slot], T::kQBytes);
        // first row; may be negative, and a 64-row half may lie wholly past the sequence's end: TMA fills the
        // out-of-range elements with zeros and still credits the whole box to the transaction count
        const int row0 = static_cast<int>(e.unit.q_begin) + (e.unit.t0 - e.unit.offset);
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int c = 0; c < T::kChunks; ++c) {
            Elem* dst = ss.q[slot] + half * T::kWgRows * T::kHeadDim + c * T::kWgRows * T::kChunk;
            tma_load_4d(&fp.tma_q, dst, &ss.q_full[slot], c * T::kChunk, row0 + half * T::kWgRows, e.unit.h, qb);
          }
        ++unit_count;
      }
    } else if (e.end) {
      release_plan(ss, n);
      return;
    }
    const uint32_t stage = count % T::kStages;
    // K's slot also gets the stage's descriptor, for the consumers
    StageSm90* desc_slot = kK ? &ss.stage[stage] : nullptr;
    const StageSm90* desc = kK ? &e.st : nullptr;
    if (paged) {
      load_paged_kv_stage<T>(map, map_row, buf[stage], &full[stage], &empty[stage], (count / T::kStages) & 1,
                             e.pages, fp.paged.head_paged ? 0 : hk, desc_slot, desc);
    } else {
      load_kv_stage<T>(map, buf[stage], &full[stage], &empty[stage], (count / T::kStages) & 1, e.st.boxes,
                       e.key0, e.key1, hk, qb, desc_slot, desc);
    }
    release_plan(ss, n);
    ++count;
  }
}

// The producer warpgroup: warp 0 loads Q and K, warp 1 plans, warp 2 loads V (warp 3 idles).
template <class T>
__device__ __forceinline__ void run_producer(const ForwardParamsSm90& fp, SharedStorageSm90<T>& ss) {
  switch (threadIdx.x / 32) {
    case 0: run_kv_loader<T, true>(fp, ss); break;
    case 1: run_planner<T>(fp, ss); break;
    case 2: run_kv_loader<T, false>(fp, ss); break;
    default: break;
  }
}

}  // namespace s2attn::cuda

// The producer warp of the Hopper forward: for each work unit, one TMA load of the Q tile, then the unit's
// visible key tiles, two 64-key boxes per stage of a shared-memory ring; K and V of a stage each have a
// full / empty mbarrier pair, and are issued in the consumers' order: K(0), K(1), V(0), K(2), V(1), ...
// Which key tiles: StageSequenceSm90; each K stage's descriptor goes to shared memory beside the slot, for
// the consumers (written before the slot's full barrier arrives, which releases it to them).
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

// Paged K / V (fp.paged): where each box of a stage comes from. rows 64: a whole box; fewer: the rows of a
// context's last, partial box (loaded row by row: the page's rest may hold anything); 0: not loaded (past
// the stage's boxes, or a page the table does not map: the box is then marked unseen for the consumers).
struct PagedStageSm90 {
  int32_t entry[2];
  int32_t row[2];   // first row in the page
  int32_t rows[2];
};

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
  const bool paged = fp.paged.block_table != nullptr;
  if (paged && lane == 0) {
    prefetch_tensormap(&fp.paged.tma_k_row);
    prefetch_tensormap(&fp.paged.tma_v_row);
  }
  TileSchedulerSm90<T::kBlockM> sched;
  // K and V rings advance once per stage each; V lags K by one stage inside a unit (the consumers read
  // K(n) together with V(n - 1)), and catches up at the unit's end. Counted in stages loaded so far (slot
  // n % kStages, phase (n / kStages) & 1): two registers instead of four (the producer has 72).
  uint32_t k_count = 0, v_count = 0;
  int unit_count = 0;
  WorkUnitSm90 w;
  for (int u = blockIdx.x; sched.get(fp, u, w);) {
    const int hk = w.h / (p.num_heads / p.num_kv_heads);
    const int qb = varlen ? 0 : w.b;  // TMA batch coordinate (varlen: one packed sequence)
    // Q of this unit, and the unit (index and geometry) for the consumers. The buffer is released after the
    // S GEMM of its previous unit's last stage, while the K ring's next slot frees two stages earlier: the
    // next K load waits behind this one only briefly.
    if (lane == 0) {
      const int slot = unit_count % T::kQStages;
      mbar_wait(&ss.q_empty[slot], ((unit_count / T::kQStages) & 1) ^ 1);
      // released to the consumers by the arrive below
      ss.unit[slot] = UnitSm90{u, w.b, w.h, w.t0, w.pos_lo, w.pos_hi, w.g.len_k, w.g.offset, w.g.q_begin};
      mbar_arrive_expect_tx(&ss.q_full[slot], T::kQBytes);
      // first row; may be negative, and a 64-row half may lie wholly past the sequence's end: TMA fills the
      // out-of-range elements with zeros and still credits the whole box to the transaction count
      const int row0 = static_cast<int>(w.g.q_begin) + (w.t0 - w.g.offset);
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int c = 0; c < T::kChunks; ++c) {
          Elem* dst = ss.q[slot] + half * T::kWgRows * T::kHeadDim + c * T::kWgRows * T::kChunk;
          tma_load_4d(&fp.tma_q, dst, &ss.q_full[slot], c * T::kChunk, row0 + half * T::kWgRows, w.h, qb);
        }
    }
    ++unit_count;
    // The next unit. Dynamic: the first one no CTA has taken yet (CTAs finish their units at different
    // times: the static stride left the SMs 7% apart at 8k, ncu). Every CTA's fetches increase, as the
    // scheduler's cursor needs. Fetched at the unit's start, so that the atomic's latency hides under it.
    int next = u + static_cast<int>(gridDim.x);
    if (fp.unit_counter != nullptr && lane == 0) next = atomicAdd(fp.unit_counter, 1) + gridDim.x;

    StageSequenceSm90<T::kBlockM, T::kSubTile> seq;
    seq.init(p.pattern, w);
    const int krow0 = static_cast<int>(w.g.k_begin);
    StageSm90 st;
    // the previous stage, whose V is loaded after this stage's K
    int v_boxes = -1, v_key0 = 0, v_key1 = 0;  // v_boxes < 0: none pending
    PagedStageSm90 v_pages{};
    const int map_head = fp.paged.head_paged ? 0 : hk;  // paged maps: {D, heads, page rows, pages}
    auto load_v = [&]() {
      if (lane == 0) {
        const uint32_t v_stage = v_count % T::kStages;
        if (paged) {
          load_paged_kv_stage<T>(&fp.tma_v, &fp.paged.tma_v_row, ss.v[v_stage], &ss.v_full[v_stage],
                                 &ss.v_empty[v_stage], (v_count / T::kStages) & 1, v_pages, map_head);
        } else {
          load_kv_stage<T>(&fp.tma_v, ss.v[v_stage], &ss.v_full[v_stage], &ss.v_empty[v_stage],
                           (v_count / T::kStages) & 1, v_boxes, v_key0, v_key1, hk, qb);
        }
      }
      ++v_count;
    };
    while (seq.next(st)) {
      // a missing second box repeats the first: finite data that the consumers mask out
      const int key0 = krow0 + st.k0[0];
      const int key1 = krow0 + (st.boxes > 1 ? st.k0[1] : st.k0[0]);
      PagedStageSm90 pages{};
      if (paged && lane == 0) pages = paged_stage_sm90(fp, st, w.b, hk, w.g.len_k);
      if (lane == 0) {
        const uint32_t k_stage = k_count % T::kStages;
        if (paged) {
          load_paged_kv_stage<T>(&fp.tma_k, &fp.paged.tma_k_row, ss.k[k_stage], &ss.k_full[k_stage],
                                 &ss.k_empty[k_stage], (k_count / T::kStages) & 1, pages, map_head,
                                 &ss.stage[k_stage], &st);
        } else {
          load_kv_stage<T>(&fp.tma_k, ss.k[k_stage], &ss.k_full[k_stage], &ss.k_empty[k_stage],
                           (k_count / T::kStages) & 1, st.boxes, key0, key1, hk, qb, &ss.stage[k_stage], &st);
        }
      }
      ++k_count;
      if (v_boxes >= 0) load_v();
      v_boxes = st.boxes;
      v_key0 = key0;
      v_key1 = key1;
      v_pages = pages;
    }
    load_v();  // every unit has at least one stage
    u = __shfl_sync(0xffffffffu, next, 0);
  }
  // no more units: an empty Q buffer with index -1 ends the consumers
  if (lane == 0) {
    const int slot = unit_count % T::kQStages;
    mbar_wait(&ss.q_empty[slot], ((unit_count / T::kQStages) & 1) ^ 1);
    ss.unit[slot].u = -1;
    mbar_arrive(&ss.q_full[slot]);
  }
}

}  // namespace s2attn::cuda

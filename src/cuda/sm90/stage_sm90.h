// One pipeline stage of the Hopper forward and dQ kernels: up to two 64-key boxes of a work unit's visible
// key tiles (StageSequenceSm90 enumerates them; the forward's producer passes each to its consumers in shared
// memory, the dQ kernel's consumers enumerate them too).
#pragma once
#include <cstdint>
#include <cstring>  // memcpy (load_slot_sm90)

namespace s2attn::cuda {

// A missing second box repeats the first and is masked out. 8-byte aligned: read as 8-byte words
// (load_slot_sm90).
struct alignas(8) StageSm90 {
  int32_t k0[2];    // first key (sequence-relative) of each box
  uint32_t vis[2];  // bit w: consumer warpgroup w's query block sees the box's key block
  int32_t boxes;    // 0 (a unit that sees nothing still has one, empty, stage), 1 or 2
  int32_t last;     // last stage of the unit
};

// A work unit of the Hopper forward as its consumers need it: the producer, which has taken the unit (from the
// counter or the static order) and located it, writes it beside the unit's Q buffer, so that the consumers do
// not locate it again (the scheduler's divisions and its sequence cursor: ~200 instructions a unit and thread,
// on the path between one unit's last GEMM and the next one's first). u < 0: no more units.
struct alignas(8) UnitSm90 {
  int32_t u;
  int32_t b, h;             // sequence, query head
  int32_t t0;               // absolute position of the tile's row 0
  int32_t pos_lo, pos_hi;   // the sequence's rows in the tile: absolute positions [pos_lo, pos_hi)
  int32_t len_k, offset;    // the sequence's keys; absolute position of its query row 0
  int64_t q_begin;          // first query token of the sequence in the operands
};

// Paged K / V (the forward over a paged cache): where each box of a stage comes from. rows 64: a whole box;
// fewer: the rows of a context's last, partial box (loaded row by row: the page's rest may hold anything);
// 0: not loaded (past the stage's boxes, or a page the table does not map: the box is then marked unseen).
struct PagedStageSm90 {
  int32_t entry[2];
  int32_t row[2];   // first row in the page
  int32_t rows[2];
};

// One entry of the forward producer's plan ring: a stage as the planner warp found it, for the warps that load
// its K and its V (forward_producer_sm90.cuh). `first`: the stage opens a unit, whose Q the K warp loads
// first; `end`: no more units (nothing else is valid).
struct alignas(8) ProducerPlanSm90 {
  StageSm90 st;
  UnitSm90 unit;            // first: the unit, as its consumers get it beside its Q buffer
  PagedStageSm90 pages;     // paged K / V only
  int32_t key0, key1;       // TMA row (or, paged, unused) of each box; a missing second box repeats the first
  int32_t hk, qb;           // first: the unit's KV head and TMA batch coordinate (varlen: 0)
  int32_t first, end;
};

#ifdef __CUDACC__
// A slot's contents (a stage descriptor, a unit) after the slot's full-barrier wait. Lane 0 of each warp
// loads it (volatile predicated ld.shared of 8-byte words: they stay below the wait, with no branch around
// them) and broadcasts it: the lane that reads the slot is the one that later arrives on the slot's empty
// barrier, so the producer's next write of the slot is ordered after the read by that barrier alone
// (compute-sanitizer racecheck checks exactly that). Warp-collective.
template <class Slot>
__device__ __forceinline__ Slot load_slot_sm90(const Slot* slot) {
  static_assert(alignof(Slot) == 8 && sizeof(Slot) % 8 == 0, "read as whole 8-byte words");
  constexpr int kWords = static_cast<int>(sizeof(Slot) / 4);
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  const uint32_t lane = threadIdx.x % 32;
  int32_t w[kWords] = {};
#pragma unroll
  for (int i = 0; i < kWords; i += 2) {
    asm volatile("{\n .reg .pred p;\n setp.eq.u32 p, %2, 0;\n @p ld.shared.v2.s32 {%0, %1}, [%3];\n}\n"
                 : "+r"(w[i]), "+r"(w[i + 1])
                 : "r"(lane), "r"(a + 4 * i));
  }
#pragma unroll
  for (int i = 0; i < kWords; ++i) w[i] = __shfl_sync(0xffffffffu, w[i], 0);
  Slot s;
  memcpy(&s, w, sizeof(Slot));
  return s;
}

__device__ __forceinline__ StageSm90 load_stage_sm90(const StageSm90* slot) { return load_slot_sm90(slot); }

// A Q buffer's unit (SharedStorageSm90::unit), as load_stage_sm90.
__device__ __forceinline__ UnitSm90 load_unit_sm90(const UnitSm90* slot) { return load_slot_sm90(slot); }
#endif

}  // namespace s2attn::cuda

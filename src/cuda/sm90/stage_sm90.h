// One pipeline stage of the Hopper forward and dQ kernels: up to two 64-key boxes of a work unit's visible
// key tiles (StageSequenceSm90 enumerates them; the forward's producer passes each to its consumers in shared
// memory, the dQ kernel's consumers enumerate them too).
#pragma once
#include <cstdint>

namespace s2attn::cuda {

// A missing second box repeats the first and is masked out. 8-byte aligned: read as three 8-byte words.
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
static_assert(sizeof(UnitSm90) == 40, "load_unit_sm90 reads five 8-byte words");

#ifdef __CUDACC__
// A descriptor from its shared-memory slot, after the slot's full-barrier wait. Lane 0 of each warp loads
// it (a volatile predicated ld.shared: it stays below the wait, with no branch around it) and broadcasts
// it: the lane that reads the slot is the one that later arrives on the slot's empty barrier, so the
// producer's next write of the slot is ordered after the read by that barrier alone (compute-sanitizer
// racecheck checks exactly that). Warp-collective.
__device__ __forceinline__ StageSm90 load_stage_sm90(const StageSm90* slot) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  const uint32_t lane = threadIdx.x % 32;
  int32_t w[6] = {0, 0, 0, 0, 0, 0};
  asm volatile(
      "{\n .reg .pred p;\n setp.eq.u32 p, %6, 0;\n"
      " @p ld.shared.v2.s32 {%0, %1}, [%7];\n @p ld.shared.v2.s32 {%2, %3}, [%7 + 8];\n"
      " @p ld.shared.v2.s32 {%4, %5}, [%7 + 16];\n}\n"
      : "+r"(w[0]), "+r"(w[1]), "+r"(w[2]), "+r"(w[3]), "+r"(w[4]), "+r"(w[5])
      : "r"(lane), "r"(a));
  StageSm90 s;
  s.k0[0] = __shfl_sync(0xffffffffu, w[0], 0);
  s.k0[1] = __shfl_sync(0xffffffffu, w[1], 0);
  s.vis[0] = static_cast<uint32_t>(__shfl_sync(0xffffffffu, w[2], 0));
  s.vis[1] = static_cast<uint32_t>(__shfl_sync(0xffffffffu, w[3], 0));
  s.boxes = __shfl_sync(0xffffffffu, w[4], 0);
  s.last = __shfl_sync(0xffffffffu, w[5], 0);
  return s;
}

// A Q buffer's unit (SharedStorageSm90::unit) after the buffer's full-barrier wait, read by lane 0 and
// broadcast, for the same reason as load_stage_sm90. Warp-collective.
__device__ __forceinline__ UnitSm90 load_unit_sm90(const UnitSm90* slot) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  const uint32_t lane = threadIdx.x % 32;
  int32_t w[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  asm volatile(
      "{\n .reg .pred p;\n setp.eq.u32 p, %10, 0;\n"
      " @p ld.shared.v2.s32 {%0, %1}, [%11];\n @p ld.shared.v2.s32 {%2, %3}, [%11 + 8];\n"
      " @p ld.shared.v2.s32 {%4, %5}, [%11 + 16];\n @p ld.shared.v2.s32 {%6, %7}, [%11 + 24];\n"
      " @p ld.shared.v2.s32 {%8, %9}, [%11 + 32];\n}\n"
      : "+r"(w[0]), "+r"(w[1]), "+r"(w[2]), "+r"(w[3]), "+r"(w[4]), "+r"(w[5]), "+r"(w[6]), "+r"(w[7]),
        "+r"(w[8]), "+r"(w[9])
      : "r"(lane), "r"(a));
  UnitSm90 un;
  un.u = __shfl_sync(0xffffffffu, w[0], 0);
  un.b = __shfl_sync(0xffffffffu, w[1], 0);
  un.h = __shfl_sync(0xffffffffu, w[2], 0);
  un.t0 = __shfl_sync(0xffffffffu, w[3], 0);
  un.pos_lo = __shfl_sync(0xffffffffu, w[4], 0);
  un.pos_hi = __shfl_sync(0xffffffffu, w[5], 0);
  un.len_k = __shfl_sync(0xffffffffu, w[6], 0);
  un.offset = __shfl_sync(0xffffffffu, w[7], 0);
  const uint32_t lo = static_cast<uint32_t>(__shfl_sync(0xffffffffu, w[8], 0));
  const uint32_t hi = static_cast<uint32_t>(__shfl_sync(0xffffffffu, w[9], 0));
  un.q_begin = static_cast<int64_t>((uint64_t(hi) << 32) | lo);
  return un;
}
#endif

}  // namespace s2attn::cuda

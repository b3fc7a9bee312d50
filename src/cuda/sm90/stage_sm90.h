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

// A Q buffer's unit index (SharedStorageSm90::unit) after the buffer's full-barrier wait, read by lane 0 and
// broadcast, for the same reason as load_stage_sm90. Warp-collective.
__device__ __forceinline__ int load_unit_sm90(const int32_t* slot) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  int32_t u = 0;
  asm volatile("{\n .reg .pred p;\n setp.eq.u32 p, %1, 0;\n @p ld.shared.s32 %0, [%2];\n}\n"
               : "+r"(u)
               : "r"(static_cast<uint32_t>(threadIdx.x % 32)), "r"(a));
  return __shfl_sync(0xffffffffu, u, 0);
}
#endif

}  // namespace s2attn::cuda

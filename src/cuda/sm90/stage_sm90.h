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
// A descriptor from its shared-memory slot, with shared loads (the slot's address comes from a generic
// pointer, which would otherwise compile to generic loads). After the slot's full-barrier wait.
__device__ __forceinline__ StageSm90 load_stage_sm90(const StageSm90* slot) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(slot));
  StageSm90 s;
  asm volatile("ld.shared.v2.s32 {%0, %1}, [%2];\n" : "=r"(s.k0[0]), "=r"(s.k0[1]) : "r"(a));
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2 + 8];\n" : "=r"(s.vis[0]), "=r"(s.vis[1]) : "r"(a));
  asm volatile("ld.shared.v2.s32 {%0, %1}, [%2 + 16];\n" : "=r"(s.boxes), "=r"(s.last) : "r"(a));
  return s;
}
#endif

}  // namespace s2attn::cuda

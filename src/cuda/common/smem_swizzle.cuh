// The shared-memory layout of the mma.sync kernels' tiles (rows of kHeadDim 16-bit elements): 16-byte chunks
// XOR-swizzled by row, so that ldmatrix (8 rows, one chunk) and cp.async (one row, 8 chunks) are both
// bank-conflict free.
#pragma once
#include <cstdint>

namespace s2attn::cuda {

// Element offset of (row, 16-byte chunk) in a swizzled tile with rows of kHeadDim elements.
template <int kHeadDim>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

// Byte offset of (row, chunk 2 ks + c) in such a tile, from offset0 = the byte offset of (row, c). Needs c in
// {0, 1} and ks < kHeadDim / 16: then 2 ks + c = 2 ks ^ c, and the swizzle is an XOR too, so the k16 step ks
// enters as ks << 5 XOR-ed into the chunk field (bits 4 up to the row's, which start at kHeadDim * 2). An
// unrolled loop over ks then needs one LOP3 a step for all the loads that share offset0 (rows 8 apart keep
// row & 7: immediate offsets), where the swizzle's arithmetic per load cost ~3 integer instructions (KV
// kernel, sm_90 SASS at 255 registers).
__device__ __forceinline__ uint32_t k16_step_offset(uint32_t offset0, int ks) {
  return offset0 ^ (static_cast<uint32_t>(ks) << 5);
}

}  // namespace s2attn::cuda

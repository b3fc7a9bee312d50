// The shared-memory layout of the mma.sync kernels' tiles (rows of kHeadDim 16-bit elements): 16-byte chunks
// XOR-swizzled by row, so that ldmatrix (8 rows, one chunk) and cp.async (one row, 8 chunks) are both
// bank-conflict free.
#pragma once

namespace s2attn::cuda {

// Element offset of (row, 16-byte chunk) in a swizzled tile with rows of kHeadDim elements.
template <int kHeadDim>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

}  // namespace s2attn::cuda

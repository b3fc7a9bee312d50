// The fused-dQ accumulator's layout (fp32, in the workspace's dQ section): tiles of 64 query positions, one
// per KV-kernel step, so that each warp's share of a step is one contiguous 4 KiB block in the order of the
// wgmma accumulator's registers: staged with conflict-free 16-byte stores and added by one bulk reduction (no
// swizzle, no tensor map, no row bounds).
//
//   accum[tile][head][half][4096]   half: dQ's columns [64 half, 64 half + 64) (a consumer warpgroup's);
//                                    in a half, float4 number f = 256 warp + 32 j + lane holds the fragment
//                                    elements 4 j .. 4 j + 3 of thread tid = 32 warp + lane (dq_fragment_row /
//                                    dq_fragment_col below).
//
// Tiles are aligned to positions (the steps' first rows are multiples of 64 in position space, the query
// rows are not: bottom-right alignment shifts them by offset = len_k - len_q). Sequence b's tiles start at
// dq_tile_base(q_begin, b) and cover positions from dq_first_position_tile(offset) * 64 on; it has at most
// floor(len_q / 64) + 2 of them, so bases floor(q_begin / 64) + 2 b never overlap and
// dq_tile_count(total_q, sequences) bounds them all.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define S2ATTN_DQ_TILES_HD __host__ __device__ __forceinline__
#else
#define S2ATTN_DQ_TILES_HD inline
#endif

namespace s2attn::cuda {

constexpr int kDqTileRows = 64;
constexpr int kDqHalfFloats = 64 * 64;  // one warpgroup's 64 rows x 64 columns

S2ATTN_DQ_TILES_HD int64_t dq_tile_count(int64_t total_q, int64_t sequences) {
  return total_q / kDqTileRows + 2 * sequences;
}
S2ATTN_DQ_TILES_HD int64_t dq_tile_base(int64_t q_begin, int64_t b) { return q_begin / kDqTileRows + 2 * b; }
// the tile of the sequence's first position that holds a query (positions below 0 hold none)
S2ATTN_DQ_TILES_HD int dq_first_position_tile(int offset) { return (offset > 0 ? offset : 0) / kDqTileRows; }

// Where a fragment element lives (the inverse, for the post-process): element e of thread tid in a half is
// row tid / 32 * 16 + (e / 2 % 2) * 8 + tid % 32 / 4 and column e / 4 * 8 + 2 (tid % 4) + e % 2 (the layout of
// a 64 x 64 fp32 wgmma accumulator).
S2ATTN_DQ_TILES_HD int dq_fragment_row(int tid, int e) { return tid / 32 * 16 + (e / 2 % 2) * 8 + tid % 32 / 4; }
S2ATTN_DQ_TILES_HD int dq_fragment_col(int tid, int e) { return e / 4 * 8 + 2 * (tid % 4) + e % 2; }

}  // namespace s2attn::cuda

#undef S2ATTN_DQ_TILES_HD

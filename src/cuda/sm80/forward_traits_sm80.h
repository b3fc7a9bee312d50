// Tile sizes and shared-memory layout of the portable (sm_80+) forward kernel, in one place, with the
// reason for each choice. Host and device code include it; nothing here is architecture-specific beyond
// the mma.sync m16n8k16 shape.
#pragma once
#include <cstdint>

#ifndef S2ATTN_SM80_FWD_WARP_ROWS
#define S2ATTN_SM80_FWD_WARP_ROWS 32  // query rows per warp of a 128-row forward CTA (sources.cmake)
#endif

namespace s2attn::cuda {

// Keys per tile: the sparse block size up to 64. A visible block is then computed whole (no waste on
// the invisible neighbours a larger tile would drag in), and a 128-token block is two tiles of 64 (a 128
// x 128 fp32 score tile would not fit the registers of 4 warps next to the output accumulator).
constexpr int key_tile_sm80(int block_size) { return block_size < 64 ? block_size : 64; }

// Query rows per CTA of the forward, by key tile (the block size up to 64). 128 = 4 warps x 32 rows (two m16
// tiles per warp, Q re-read from shared memory) halves the K/V shared-memory traffic per FLOP against 64
// rows (one m16 tile per warp, Q in registers): H100 forward -7 to -16% at 32k / 128k, 8k unchanged
// (bench/results/ab_s8_smem_addrspace_and_others_2026-11-25.txt). A CTA spans at most kMaxRowBlocks sparse
// query blocks, so block 16 keeps 64 rows.
constexpr int query_tile_sm80(int key_tile) { return key_tile >= 32 ? 128 : 64; }
// The dQ kernel's query tile and keys per stage, by the forward's key tile (its traits derive from the
// forward's). For blocks >= 64: 128 rows (4 warps x 32 rows, as the forward) in stages of 32 keys, so that
// Q and dO of 128 rows and two K/V stages stay at 96 KiB (2 CTAs per SM); each K / V fragment read from shared
// memory then serves two m16 tiles (ldmatrix.x4 per mma 0.58 -> 0.42 at D = 128). Smaller blocks: 64 rows
// (4 warps x 16 rows, Q in registers), stages of one block.
constexpr int dq_query_tile_sm80(int key_tile) { return key_tile >= 64 ? 128 : 64; }
constexpr int dq_key_tile_sm80(int key_tile) { return key_tile >= 64 ? 32 : key_tile; }

template <typename Elem_, int kHeadDim_, int kBlockM_, int kBlockN_>
struct ForwardTraitsSm80 {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;  // query rows per CTA
  static constexpr int kBlockN = kBlockN_;  // keys per tile
  // 4 warps, except 128-row CTAs with S2ATTN_SM80_FWD_WARP_ROWS = 16: 8 warps of one m16 tile each, Q in
  // registers and no spills (the 4 x 32-row CTA re-reads Q from shared memory and spills 256-356 bytes at
  // D = 128), one CTA per SM for 2. Both halve the K/V shared-memory traffic per FLOP against 64 rows;
  // which is faster is an H100 A/B (docs/cuda_notes.md).
  static constexpr int kWarpRows = kBlockM >= 128 ? S2ATTN_SM80_FWD_WARP_ROWS : 16;
  static constexpr int kWarps = kBlockM / kWarpRows;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMTiles = kWarpRows / 16;  // m16 tiles per warp
  static constexpr int kNTiles = kBlockN / 8;     // n8 tiles of a warp's score tile S
  static constexpr int kDTiles = kHeadDim / 8;    // n8 tiles of a warp's output tile O
  static constexpr int kQkSteps = kHeadDim / 16;  // k16 steps of S = Q K^T
  static constexpr int kPvSteps = kBlockN / 16;   // k16 steps of O += P V
  static constexpr int kChunks = kHeadDim / 8;    // 16-byte chunks of a row in shared memory
  static constexpr bool kQInRegs = kMTiles == 1;  // else Q fragments are re-read from shared memory
  // K/V double buffer: the next tile's cp.async loads fly while this tile is computed.
  static constexpr int kStages = 2;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kTileElems = kBlockN * kHeadDim;
  static constexpr int kSmemBytes = (kQElems + kStages * 2 * kTileElems) * 2;  // 16-bit elements
  // D = 128, kBlockN = 64: 80 KiB, 2 CTAs per SM on A100 (164 KiB) and H100 (228 KiB), so registers may
  // go up to 255. D = 64 (40 KiB) could fit more CTAs, but ptxas spills under a 168-register cap (it
  // hoists a whole tile's K fragments), so it gets 2 as well until measured otherwise.
  static constexpr int kMinBlocksPerSm = kWarps > 4 ? 1 : 2;  // 8 warps x up to 255 registers: one CTA

  static_assert(S2ATTN_SM80_FWD_WARP_ROWS == 16 || S2ATTN_SM80_FWD_WARP_ROWS == 32, "16 or 32 rows per warp");
  static_assert(kBlockM % (16 * kWarps) == 0, "whole m16 tiles per warp");
  static_assert(kMTiles <= 2, "at most 32 rows per warp (registers)");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "whole k16 steps");
  static_assert(kChunks >= 8, "the XOR swizzle spans 8 chunks: head_dim >= 64");
  static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                "whole cp.async chunks per thread");
};

}  // namespace s2attn::cuda

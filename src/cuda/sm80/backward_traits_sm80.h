// Tile sizes and shared-memory layouts of the portable (sm_80+) backward kernels, with the reason for each
// choice. Host and device code include it.
//
//  - KV kernel (backward_kernel_sm80.cuh): one CTA of 4 warps per (key tile of 64 keys, KV head,
//    sequence); each warp owns 16 keys and keeps their dK and dV in fp32 registers for the whole walk.
//  - KV kernel on 2 x 2 warp tiles (backward_kv_2x2_kernel_sm80.cuh; D = 128, 64-row steps): the same
//    CTAs, the step in two phases with P^T and dS^T through shared memory (H100: 4.6-5.4% faster, session 19).
//  - dQ kernel (backward_dq_kernel_sm80.cuh, deterministic mode only): the forward's geometry
//    (dq_query_tile_sm80 rows per CTA: 128 for blocks >= 64, in stages of 32 keys, else 64 rows and key tiles
//    of one block), dQ in registers, written once.
#pragma once
#include "cuda/sm80/forward_traits_sm80.h"

namespace s2attn::cuda {

// Keys per CTA of the KV kernel: 4 warps x 16 keys (one m16 tile each). A warp holds dK and dV of its keys
// (16 x D fp32 each: 64 + 64 registers at D = 128) next to one step's S^T and dP^T (16 x kBlockM each).
// 128 keys (8 warps, FA2's choice) would halve the Q/dO shared-memory traffic per FLOP, but a
// vertical-stride key block's neighbour is mostly not visible: by our count +37% (V = 32) to +68% (V = 8)
// visited work at 32k. The 2 x 2 kernel gets FA2's per-warp tiles on 64 keys instead (docs/cuda_notes.md,
// session 19).
constexpr int bwd_key_tile_sm80() { return 64; }

// Query rows per step of the KV kernel: the block size up to 64. A step then never spans two query blocks
// (which may see different key blocks), so visibility is per key sub-block only (a key tile spans 64 / bs
// key blocks when bs < 64); a block of 128 rows is two steps. Where a CTA may not have the 64-row kernel's
// 105 KiB at D = 128 (sm_86 / sm_89: 99 KiB), backward_sm80.cu takes 32-row steps (two or four a block).
// NOTE: at block 16 / 32 a step of 64 rows spanning several query blocks (a row-block x key-block
// visibility mask) would feed the tensor cores better; measure.
constexpr int bwd_query_tile_sm80(int block_size) { return block_size < 64 ? block_size : 64; }

template <typename Elem_, int kHeadDim_, int kBlockM_>
struct BackwardTraitsSm80 {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;  // query rows per step
  static constexpr int kBlockN = bwd_key_tile_sm80();
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kKeyRows = kBlockN / kWarps;  // keys per warp: one m16 tile
  // S^T and dP^T (16 keys x kQChunk queries per warp) are computed a chunk of queries at a time: at
  // D = 128, dK and dV take 128 registers and whole 64-query S^T and dP^T tiles (64 more) spill. Each chunk
  // re-reads the warp's K and V fragments: 16-query chunks issue 0.75 ldmatrix.x4 per mma (48 per 64),
  // which at one x4 per 4 cycles of shared-memory bandwidth per SM is more than the mma pipe's 2 cycles:
  // the step is bound by shared memory. 32-query chunks: 0.625 (80 per 128; SASS: 184 LDSM, 288 HMMA),
  // and ptxas (CUDA 13.0, sm_90) keeps them within 255 registers at 64-row steps: spills 8 -> 12 bytes
  // (analytic rules), 0 -> 4 (block-mask lists), reloaded once per step outside the MMA loops. 32-row steps
  // keep 16-query chunks (32 spill 36 bytes with block-mask lists).
  static constexpr int kQChunk = kHeadDim < 128 ? kBlockM : kBlockM >= 64 ? 32 : 16;
  static constexpr int kChunkTiles = kQChunk / 8;    // n8 tiles (queries) of a chunk
  static constexpr int kDTiles = kHeadDim / 8;       // n8 tiles of a warp's dK and dV
  static constexpr int kQkSteps = kHeadDim / 16;     // k16 steps of S^T = K Q^T and dP^T = V dO^T
  static constexpr int kChunks = kHeadDim / 8;       // 16-byte chunks of a row of Q, dO, K, V
  // dQ (kBlockM x D) = dS (kBlockM x 64) K: the warps split it into kBlockM / 16 row tiles x column groups,
  // each column group done in passes of at most 32 columns (16 accumulator registers).
  static constexpr int kDqRowTiles = kBlockM / 16;
  static constexpr int kDqColGroups = kWarps / kDqRowTiles;
  static constexpr int kDqCols = kHeadDim / kDqColGroups;
  static constexpr int kDqPassTiles = kDqCols < 32 ? kDqCols / 8 : 4;  // n8 tiles per pass
  static constexpr int kDqPasses = kDqCols / (kDqPassTiles * 8);
  static constexpr int kDqSteps = kBlockN / 16;  // k16 steps (keys) of dQ
  // Q and dO double-buffered: the next step's cp.async loads fly while this one is computed.
  static constexpr int kStages = 2;
  static constexpr int kKeyElems = kBlockN * kHeadDim;  // sK, sV
  static constexpr int kRowElems = kBlockM * kHeadDim;  // sQ, sdO per stage
  static constexpr int kDsElems = kBlockN * kBlockM;    // dS^T, [key][query]
  // [K][V][Q0][dO0][Q1][dO1][dS^T] (16-bit) then per stage [lse2][dsum] (fp32, kBlockM each).
  static constexpr int kStatsOffsetBytes = (2 * kKeyElems + kStages * 2 * kRowElems + kDsElems) * 2;
  static constexpr int kSmemBytes = kStatsOffsetBytes + kStages * 2 * kBlockM * 4;
  // D = 128, kBlockM = 64: 105 KiB, 2 CTAs per SM on H100 (228 KiB; 1 on A100) with up to 255 registers.
  // At D = 128 the kernel sits at the 255-register limit (sm_90 SASS of kBlockM = 64: 12 bytes of spilled
  // loop-invariant addresses). There the 2 x 2 kernel runs instead where a CTA may have 112.5 KiB; this one
  // serves D = 64, 16- and 32-row steps, and GPUs with less shared memory a CTA.
  static constexpr int kMinBlocksPerSm = 2;

  static_assert(kBlockM % 16 == 0 && kBlockM <= 64, "whole m16 tiles, at most one per warp");
  static_assert(kBlockM % kQChunk == 0, "whole query chunks per step");
  static_assert(kDqColGroups >= 1 && kDqCols % 16 == 0 && kDqPassTiles % 2 == 0, "whole x4 ldmatrix loads");
  static_assert(kChunks >= 8, "the XOR swizzle spans 8 chunks: head_dim >= 64");
  static_assert((kBlockM * kChunks) % kThreads == 0 && (kBlockN * kChunks) % kThreads == 0,
                "whole cp.async chunks per thread");
  static_assert(kBlockM <= kThreads, "one thread per row loads the row statistics");
};

// The KV kernel on 2 x 2 warp tiles (backward_kv_2x2_kernel_sm80.cuh): the same 64-key tiles and 64-row
// steps; phase 1 warps own 32 keys x 32 queries, phase 2 warps 32 keys x D/2 columns of dK and dV (64 + 64
// fp32 registers at D = 128). P^T and dS^T go through shared memory; lse2 / dsum single-buffered.
template <typename Elem_, int kHeadDim_>
struct BackwardKv2x2TraitsSm80 : BackwardTraitsSm80<Elem_, kHeadDim_, 64> {
  using Base = BackwardTraitsSm80<Elem_, kHeadDim_, 64>;
  static constexpr int kKeyWarpRows = 32;                 // keys of a warp: two m16 tiles
  static constexpr int kQueryWarpCols = 32;               // phase 1: queries of a warp (four n8 tiles)
  static constexpr int kDCols = kHeadDim_ / 2;            // phase 2: head-dim columns of a warp
  static constexpr int kDColTiles = kDCols / 8;           // n8 tiles of a warp's dK and dV per m16 tile
  static constexpr int kPsChunks = Base::kBlockM / 8;     // 16-byte chunks of a P^T / dS^T row
  static constexpr int kPsElems = Base::kBlockN * Base::kBlockM;
  // [K][V][Q0][dO0][Q1][dO1][P^T][dS^T] (16-bit), then [lse2][dsum] (fp32, kBlockM each)
  static constexpr int kStatsOffsetBytes =
      (2 * Base::kKeyElems + Base::kStages * 2 * Base::kRowElems + 2 * kPsElems) * 2;
  static constexpr int kSmemBytes = kStatsOffsetBytes + 2 * Base::kBlockM * 4;
  static_assert(Base::kBlockN == 2 * kKeyWarpRows && Base::kBlockM == 2 * kQueryWarpCols && Base::kWarps == 4,
                "2 x 2 warps over a 64-key tile and a 64-row step");
  static_assert(kDColTiles % 2 == 0, "whole x4 transposed loads of dO / Q");
};

// The deterministic dQ kernel: the forward's tiles (kBlockM = dq_query_tile_sm80 rows, kBlockN =
// dq_key_tile_sm80 keys a stage), plus a dO tile next to Q and the rows' statistics in registers. With one
// m16 tile a warp (64 rows) Q fragments stay in registers, with two (128 rows) they are re-read from shared
// memory as in the forward; dO fragments are re-read. A warp holds dQ (rows x D fp32) and S and dP (rows x
// kKeyChunk fp32 each).
template <typename Elem_, int kHeadDim_, int kBlockN_, int kBlockM_ = 64>
struct DqTraitsSm80 : ForwardTraitsSm80<Elem_, kHeadDim_, kBlockM_, kBlockN_> {
  using Base = ForwardTraitsSm80<Elem_, kHeadDim_, kBlockM_, kBlockN_>;
  // [Q][dO][K0][V0][K1][V1]; D = 128: 64 rows x 64 keys and 128 rows x 32 keys both 96 KiB, 2 CTAs per SM.
  static constexpr int kSmemBytes = (2 * Base::kQElems + Base::kStages * 2 * Base::kTileElems) * 2;
  // S and dP (rows x kKeyChunk keys per warp) a chunk of keys at a time: at D = 128 a whole 64-key tile
  // of both next to dQ and Q spills.
  static constexpr int kKeyChunk = kHeadDim_ >= 128 && kBlockN_ > 32 ? 32 : kBlockN_;
  static constexpr int kChunkTiles = kKeyChunk / 8;
};

}  // namespace s2attn::cuda

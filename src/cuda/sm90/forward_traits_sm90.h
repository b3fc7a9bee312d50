// Tile sizes, warp roles and shared-memory layout of the Hopper (sm_90a) forward kernel, in one place, with
// the reason for each choice. Included by the sm_90a translation units only (it needs CuTe).
#pragma once
#include <cstdint>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "cuda/sm90/gemm_sm90.cuh"  // CudaElem

namespace s2attn::cuda {

// Keys per TMA box: one 64-key block, or half of a 128-key block. A stage holds two boxes that need not be
// adjacent: with block 64 the visible blocks of a query tile are mostly isolated vertical blocks, and
// pairing two of them gives every GEMM N = 128 keys (S = Q K^T at 64 x 128) instead of 64.
constexpr int kSubTileSm90 = 64;

// Warp roles: warpgroup 0 is the producer (its warp 0 issues every TMA load; the other three idle), warpgroups
// 1 and 2 are the consumers, each owning 64 query rows of the 128-row tile.
enum class WarpGroupRoleSm90 : int { producer = 0, consumer0 = 1, consumer1 = 2 };

// Named hardware barriers (ids 1..15; 0 is __syncthreads). Ping-pong: consumer w waits on kWgTurn + w before
// issuing its GEMMs and lets the other warpgroup go once its own are issued.
enum class NamedBarrierSm90 : int { wg_turn = 1 };

template <typename Elem_, int kHeadDim_>
struct ForwardTraitsSm90 {
  using Elem = Elem_;  // cutlass::bfloat16_t or cutlass::half_t
  static constexpr int kHeadDim = kHeadDim_;
  // 128 query rows = 2 consumer warpgroups x 64 rows (one wgmma M = 64 each). With block 64 the two
  // warpgroups hold two different query blocks; they share the union of their key tiles and each masks
  // the boxes its own block does not see (Merge-Q with per-row-block masking).
  static constexpr int kBlockM = 128;
  static constexpr int kWgRows = 64;
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
  static constexpr int kSubTile = kSubTileSm90;
  static constexpr int kBlockN = 2 * kSubTile;  // keys per stage
  static constexpr int kChunk = 64;             // elements of one 128-byte swizzled row segment (a TMA box row)
  static constexpr int kChunks = kHeadDim / kChunk;
  // K + V of one stage: 64 KiB at D = 128, 32 KiB at D = 64; Q takes 32 / 16 KiB. A consumer holds two
  // stages at once (S of stage n and P V of stage n - 1 in flight together), so 3 stages let the producer
  // fill the next one meanwhile: 224 KiB of 227 at D = 128; 5 stages (176 KiB) at D = 64.
  static constexpr int kStages = kHeadDim == 128 ? 3 : 5;
  // setmaxnreg: the consumers hold O (64 x D fp32 per warpgroup), S (64 x 128 fp32) and P (64 x 128 16-bit)
  // at once (P V of one stage overlaps the softmax of the next); the producer warp runs the scheduler and
  // the key-tile enumeration (72 is the least it needs without spilling, ptxas -v). 72 x 128 + 216 x 256 =
  // 64512 <= 65536. Both without spills at D = 128 (checked in the resource report).
  static constexpr int kProducerRegs = 72;
  static constexpr int kConsumerRegs = 216;

  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kTileElems = kBlockN * kHeadDim;   // one K (or V) stage
  static constexpr int kBoxElems = kSubTile * kChunk;     // one TMA box: 64 rows x 64 elements = 8 KiB
  static constexpr uint32_t kQBytes = kQElems * 2;
  static constexpr uint32_t kStageBytes = 2 * kTileElems * 2;  // K and V

  static_assert(kHeadDim % kChunk == 0, "head dim: whole 128-byte swizzle rows");
  static_assert(kWgRows * kConsumerWarpgroups == kBlockM, "one 64-row slice per consumer warpgroup");

  // CuTe layouts. K-major 128-byte swizzle atom (8 rows x 64 elements), tiled M-first: the tile is stored as
  // kChunks column chunks, each rows x 64 elements, rows 1024-byte atoms of 8. A 64-row TMA box of one chunk
  // is then one contiguous 8 KiB piece, at chunk * rows * 64 + first_row * 64 elements.
  using SmemAtom = decltype(cute::GMMA::Layout_K_SW128_Atom<Elem>{});
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kWgRows>, cute::Int<kHeadDim>>{}));
  using SmemLayoutKV =
      decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  // V as the B operand of O = P V: (D, keys), D contiguous (MN-major for the wgmma)
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_ordered_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{},
                                                cute::Step<cute::_2, cute::_1>{})));
  // S = Q K^T: 64 x 128 per warpgroup, both operands from shared memory
  using MmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Elem, Elem, float, cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>>()));
  // O += P V: P from registers (the S accumulators converted in place), V from shared memory
  using MmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Elem, Elem, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));
};

template <class T>
struct SharedStorageSm90 {
  alignas(1024) typename T::Elem q[T::kQElems];                  // [consumer wg][chunk][64 rows][64]
  alignas(1024) typename T::Elem k[T::kStages][T::kTileElems];   // [chunk][128 rows][64]
  alignas(1024) typename T::Elem v[T::kStages][T::kTileElems];
  alignas(8) uint64_t full[T::kStages];
  uint64_t empty[T::kStages];
  uint64_t q_full;
  uint64_t q_empty;
};

template <class T>
constexpr int smem_bytes_sm90() {
  return static_cast<int>(sizeof(SharedStorageSm90<T>)) + 1024;  // + alignment slack of the dynamic base
}

}  // namespace s2attn::cuda

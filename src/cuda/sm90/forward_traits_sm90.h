// Tile sizes, warp roles and shared-memory layout of the Hopper (sm_90a) forward kernel, in one place, with
// the reason for each choice. Included by the sm_90a translation units only (it needs CuTe).
#pragma once
#include <cstdint>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "cuda/sm90/gemm_sm90.cuh"  // CudaElem
#include "cuda/sm90/register_pool_sm90.h"
#include "cuda/sm90/stage_sm90.h"

#ifndef S2ATTN_SM90_D128_STAGES
#define S2ATTN_SM90_D128_STAGES 2  // K/V ring depth at D = 128 (sm90.cmake)
#endif

namespace s2attn::cuda {

// Keys per TMA box: one 64-key block, or half of a 128-key block. A stage holds two boxes that need not be
// adjacent: with block 64 the visible blocks of a query tile are mostly isolated vertical blocks, and
// pairing two of them gives every GEMM N = 128 keys (S = Q K^T at 64 x 128) instead of 64.
constexpr int kSubTileSm90 = 64;

// Warp roles: warpgroup 0 is the producer (warp 1 plans the units and stages, warp 0 issues the Q and K loads,
// warp 2 the V loads, warp 3 idles: forward_producer_sm90.cuh), warpgroups 1 and 2 are the consumers, each
// owning 64 query rows of the 128-row tile.
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
  // fill the next one meanwhile: 224 KiB of 227 at D = 128 (with the barriers, descriptors and plan ring,
  // ~1 KiB short of the limit); 5 stages (+ 2 Q buffers: 192 KiB) at D = 64.
  // S2ATTN_SM90_D128_STAGES (sm90.cmake) = 2, the default, is FA3's depth at D = 128: with K and V on
  // barriers of their own, K(n + 1) refills the slot of K(n - 1) once S(n - 1) is done and V(n) that of
  // V(n - 2), still one stage ahead, and the 64 KiB freed hold a second Q buffer: -2 to -4% against 3 on
  // the H100 (bench/results/ab_s8_bwd_descending_fwd_stages_2026-11-25.txt).
  static constexpr int kStages = kHeadDim == 128 ? S2ATTN_SM90_D128_STAGES : 5;
  // Q buffers. The consumers release Q as soon as the S GEMM of a unit's last stage completes, so the next
  // unit's Q loads under the last softmax, the last P V and the epilogue. D = 64 (and D = 128 with 2 stages)
  // has room for a second buffer (192 KiB in all): the next unit's Q is then loaded a whole unit ahead.
  static constexpr int kQStages = (kHeadDim == 64 || kStages <= 2) ? 2 : 1;
  static_assert(kStages >= 2, "the consumers hold K(n) and V(n - 1) at once");
  // The producer's plan ring (forward_producer_sm90.cuh): stages planned ahead of the K and V loads, 112
  // bytes each; at least the K ring's depth plus one, so that planning does not hold up the K loads while
  // the V warp lags (a 1-entry ring is still deadlock-free: a reviewer's simulation of the barriers).
  static constexpr int kPlanStages = 6;
  // setmaxnreg: the consumers hold O (64 x D fp32 per warpgroup), S (64 x 128 fp32) and P (64 x 128 16-bit)
  // at once (P V of one stage overlaps the softmax of the next); the producer's planner warp runs the
  // scheduler and the key-tile enumeration (72 is the least it needs without spilling, ptxas -v). 72 x 128 + 216 x 256 =
  // 64512, the whole pool (cta_register_pool_sm90). Both without spills at D = 128 (the resource report).
  static constexpr int kProducerRegs = 72;
  static constexpr int kConsumerRegs = 216;
  static_assert(setmaxnreg_fits_sm90(kProducerRegs, kConsumerRegs, kConsumerWarpgroups, kThreads),
                "setmaxnreg shares out the CTA's registers at launch");

  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kTileElems = kBlockN * kHeadDim;   // one K (or V) stage
  static constexpr int kBoxElems = kSubTile * kChunk;     // one TMA box: 64 rows x 64 elements = 8 KiB
  static constexpr uint32_t kQBytes = kQElems * 2;
  static constexpr uint32_t kTileBytes = kTileElems * 2;  // K (or V) of one stage

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
  alignas(1024) typename T::Elem q[T::kQStages][T::kQElems];     // [consumer wg][chunk][64 rows][64]
  alignas(1024) typename T::Elem k[T::kStages][T::kTileElems];   // [chunk][128 rows][64]
  alignas(1024) typename T::Elem v[T::kStages][T::kTileElems];
  // K and V have barriers of their own: K of a stage is consumed (S = Q K^T) one stage before its V
  // (O += P V), so K is released as soon as its S GEMM completes and the producer refills it while the
  // stage's V is still being read. The producer's K and V warps issue them independently, each in order.
  alignas(8) uint64_t k_full[T::kStages];
  uint64_t k_empty[T::kStages];
  uint64_t v_full[T::kStages];
  uint64_t v_empty[T::kStages];
  uint64_t q_full[T::kQStages];
  uint64_t q_empty[T::kQStages];
  // Each K slot's stage descriptor, written by the producer before the slot's full barrier arrives: the
  // consumers read it after their wait instead of enumerating the pattern themselves (~90 instructions per
  // stage and warp, on the path between P and the next GEMMs).
  StageSm90 stage[T::kStages];
  // The unit of each Q buffer (its index in the scheduler's order and its geometry; index -1: no more units).
  // Written by the producer before the buffer's full barrier arrives; under dynamic scheduling only the
  // producer knows it.
  UnitSm90 unit[T::kQStages];
  // The producer warps' plan ring: the planner fills an entry (plan_full: 1 arrival), the K and V warps each
  // read it (plan_empty: 2 arrivals).
  ProducerPlanSm90 plan[T::kPlanStages];
  uint64_t plan_full[T::kPlanStages];
  uint64_t plan_empty[T::kPlanStages];
};

}  // namespace s2attn::cuda

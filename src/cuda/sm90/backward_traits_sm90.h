// Tile sizes, warp roles and shared-memory layout of the Hopper (sm_90a) backward's KV kernel, in one place,
// with the reason for each choice. Included by the sm_90a translation units only (it needs CuTe).
#pragma once
#include <cstdint>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "cuda/sm80/backward_query_tiles_sm80.cuh"  // WalkGeometry
#include "cuda/sm90/register_pool_sm90.h"

namespace s2attn::cuda {

// Warp roles as in the forward: warpgroup 0 the producer (its warp 0 walks the query steps and issues the
// loads), warpgroups 1 and 2 the consumers, each owning 64 keys of the 128-key tile.
enum class BwdWarpGroupRoleSm90 : int { producer = 0, consumer0 = 1, consumer1 = 2 };

// What the producer tells the consumers about one stage (written before its arrival on the stage's full
// barrier, whose release / acquire orders it): no metadata enumeration in the consumers' registers.
struct BwdStageMetaSm90 {
  int32_t dq_half0;  // fused dQ: the step's accumulator half tile of consumer warpgroup 0, in kDqHalfFloats
                     // (warpgroup 1's is the next; -1: the step holds no query of the sequence); else 0
  int32_t p0;        // absolute position of the step's first query row
  uint32_t vis;      // bit c: the step's query block sees key block c of the tile
  int32_t flags;     // kStepValid | kStepLast | key halves seen << kStepHalvesShift
};
// The current work unit, as the producer publishes it with the K / V load (kv_full's arrival orders it): the
// consumers run no scheduler and keep none of its state in registers; they read these where they need them.
struct BwdUnitSm90 {
  int32_t done;    // 1: no more units (the consumers exit)
  int32_t b, hk;   // sequence, KV head
  int32_t k0;      // first key of the tile (sequence-relative): key half 0's
  int32_t k_half;  // key half 1's first key is k0 + k_half (the scheduler pairs non-adjacent blocks)
  int32_t len_q, len_k, offset;  // the sequence's geometry (SeqGeometry)
  int64_t k_begin;   // first key token of the sequence in the operands
  int64_t row_base;  // workspace row of the sequence's query row 0
};

constexpr int32_t kStepValid = 1;  // a step to compute (a unit with no step has one invalid stage)
constexpr int32_t kStepLast = 2;   // the unit's last stage
// bit h of (flags >> kStepHalvesShift): some query of the step sees the tile's key half h (fused dQ only:
// which halves its GEMM reads). The producer derives it and dq_half0 once per step, in its own warp, so that
// the consumers' step loop holds no such bookkeeping (it was 41 instructions a step in each consumer warp).
constexpr int kStepHalvesShift = 2;

template <typename Elem_, int kHeadDim_, bool kFusedDq_ = false>
struct BackwardTraitsSm90 {
  using Elem = Elem_;  // cutlass::bfloat16_t or cutlass::half_t
  static constexpr int kHeadDim = kHeadDim_;
  // Fused dQ (non-deterministic mode, the default; S2ATTN_SM90_FUSED_DQ=0: off): each step also computes
  // dQ = dS K for its 64 queries and reduce-adds it into the fp32 accumulator of the workspace, in place of
  // the dQ kernel. Warpgroup w computes dQ's columns [64 w, 64 w + 64) over all 128 keys of the tile, from
  // both warpgroups' dS^T (shared memory): 32 accumulator registers, live only after S^T / dP^T are dead.
  static constexpr bool kFusedDq = kFusedDq_;
  static_assert(!kFusedDq || kHeadDim_ == 128, "fused dQ: one 64-column chunk of dQ per consumer warpgroup");
  // 128 keys per CTA tile = 2 consumer warpgroups x 64 keys (one wgmma M = 64 each: S^T = K Q^T and
  // dP^T = V dO^T with the warpgroup's keys as M, so P^T and dS^T are the A operands of dV += P^T dO and
  // dK += dS^T Q straight from the accumulators, as P is in the forward). Each warpgroup keeps dK and dV of
  // its 64 keys (64 x 128 fp32 each: 64 + 64 registers per thread at D = 128) for the whole work unit.
  static constexpr int kBlockN = 128;
  static constexpr int kWgKeys = 64;
  // 64 query rows per step: S^T and dP^T are 64 x 64 (32 + 32 registers); a step never spans two query
  // blocks (block size >= 64), so visibility is per key block of the tile.
  static constexpr int kBlockM = 64;
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
  static constexpr int kChunk = 64;  // elements of one 128-byte swizzled row segment (a TMA box row)
  static constexpr int kChunks = kHeadDim / kChunk;
  // K + V of the tile: 64 KiB at D = 128; a stage (Q + dO of one step) 32 KiB. 3 stages: 160 KiB of 227
  // (a fourth measured no faster, bench/results/ab_s9_2026-11-25.txt). At D = 64 a step is half the work and
  // half the bytes (K + V 32 KiB, a stage 16 KiB): 5 stages keep as many bytes in flight (112 KiB in all).
  static constexpr int kStages = kHeadDim == 64 ? 5 : 3;
  // setmaxnreg: the consumers hold dK, dV (128 registers for the whole unit), then S^T (32) -> P^T (16) and
  // dP^T (32) -> dS^T (16), the GEMMs of a step in flight together. The producer then gets 24: its
  // transposed walk (col_segments' lists at a unit's start) spills there, which costs it L1-resident local
  // traffic off the consumers' critical path. 24 x 128 + 240 x 256 = 64512, the whole pool
  // (168 registers x 384 threads at launch; cta_register_pool_sm90).
  // NOTE: a leaner producer walk (or the walk's segment lists built once per unit in shared memory) would
  // remove the producer's spills.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static_assert(setmaxnreg_fits_sm90(kProducerRegs, kConsumerRegs, kConsumerWarpgroups, kThreads),
                "setmaxnreg shares out the CTA's registers at launch");

  static constexpr int kRowsElems = 64 * kHeadDim;  // a 64-row tile of Q, dO, or half of K / V
  static constexpr uint32_t kKVBytes = 2 * kBlockN * kHeadDim * 2;  // K and V of the tile
  static constexpr uint32_t kStepBytes = 2 * kRowsElems * 2;        // Q and dO of a step

  static_assert(kHeadDim % kChunk == 0, "head dim: whole 128-byte swizzle rows");
  static_assert(kWgKeys * kConsumerWarpgroups == kBlockN, "one 64-key slice per consumer warpgroup");
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dims 64 and 128");

  // CuTe layouts. K-major 128-byte swizzle atom (8 rows x 64 elements). A 64-row tile (Q, dO, a key half of
  // K or V) is kChunks column chunks of 64 rows x 64 elements: each TMA box is one contiguous 8 KiB piece.
  using SmemAtom = decltype(cute::GMMA::Layout_K_SW128_Atom<Elem>{});
  using SmemLayoutRows =
      decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<64>, cute::Int<kHeadDim>>{}));  // (64, D)
  // (D, 64): a 64-row tile seen transposed, D contiguous (MN-major B operand of dV += P^T dO, dK += dS^T Q)
  using SmemLayoutRowsT = decltype(cute::composition(
      SmemLayoutRows{}, cute::make_ordered_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<64>>{},
                                                  cute::Step<cute::_2, cute::_1>{})));
  // S^T = K Q^T and dP^T = V dO^T: 64 keys x 64 queries per warpgroup, both operands K-major in shared memory
  using MmaSdP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Elem, Elem, float, cute::Shape<cute::_64, cute::_64, cute::Int<kHeadDim>>>()));
  // dV += P^T dO and dK += dS^T Q: A from registers (the 16-bit accumulators), B = dO / Q transposed
  using MmaDKV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Elem, Elem, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::_64>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>()));

  // Fused dQ. One 64 x 64 swizzled chunk ([row][64 elements], as a TMA box lands) and its transposed view.
  // dS^T is stored [key][query] in a chunk; as dQ's A operand (queries x keys) that is the transposed view
  // (MN-major), and B (d x keys) is the K half's chunk of this warpgroup's columns, transposed likewise.
  using SmemLayoutChunk = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::_64, cute::_64>{}));
  using SmemLayoutChunkT = decltype(cute::composition(
      SmemLayoutChunk{}, cute::make_ordered_layout(cute::Shape<cute::_64, cute::_64>{}, cute::Step<cute::_2, cute::_1>{})));
  using MmaDq = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Elem, Elem, float, cute::Shape<cute::_64, cute::_64, cute::_64>,
                                 cute::GMMA::Major::MN, cute::GMMA::Major::MN>()));
};

// The fused-dQ kernel's shared memory (empty otherwise): 32 + 32 KiB next to the 160 of the KV kernel.
// dS^T is double-buffered by step so that a warpgroup computes dQ of its previous step while the other one may
// still be in the current one: neither waits for the other in the steady state (a single buffer made the two
// warpgroups run in lockstep, session 14: the KV kernel took twice as long).
template <class T, bool kFused = T::kFusedDq>
struct BwdFusedDqStorageSm90 {};
template <class T>
struct BwdFusedDqStorageSm90<T, true> {
  alignas(1024) typename T::Elem ds[2][2][64 * 64];  // [step slot][key half][key][query] (SmemLayoutChunk)
  // each consumer warp's share of its warpgroup's dQ (16 rows x 64 columns fp32, fragment order), staged for
  // its bulk reduction into the accumulator (dq_accum_tiles_sm90.h)
  alignas(128) float dq_stage[2 * 4][16 * 64];  // [warpgroup * 4 + warp]
};
// Its barriers, beside the KV kernel's.
template <class T, bool kFused = T::kFusedDq>
struct BwdFusedDqBarriersSm90 {};
template <class T>
struct BwdFusedDqBarriersSm90<T, true> {
  uint64_t ds_full[2];   // slot's dS^T written by both warpgroups (256 thread arrivals)
  uint64_t ds_empty[2];  // slot's dS^T read by both warpgroups' dQ GEMMs (256 thread arrivals)
};

template <class T>
struct BwdSharedStorageSm90 {
  alignas(1024) typename T::Elem k[2][T::kRowsElems];  // [key half][chunk][64 rows][64]
  alignas(1024) typename T::Elem v[2][T::kRowsElems];
  alignas(1024) typename T::Elem q[T::kStages][T::kRowsElems];     // [chunk][64 rows][64]
  alignas(1024) typename T::Elem dout[T::kStages][T::kRowsElems];
  float lse2[T::kStages][T::kBlockM];  // the step's rows; +inf for rows outside the sequence (P = 0)
  float dsum[T::kStages][T::kBlockM];
  BwdStageMetaSm90 meta[T::kStages];
  StridedWalkGeometry geo;  // the producer's walk of the current unit
  BwdUnitSm90 unit;
  alignas(8) uint64_t full[T::kStages];
  uint64_t empty[T::kStages];
  uint64_t kv_full;
  uint64_t kv_empty;
  BwdFusedDqBarriersSm90<T> fdq_bar;
  BwdFusedDqStorageSm90<T> fdq;
};

}  // namespace s2attn::cuda

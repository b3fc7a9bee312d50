// A consumer warpgroup of the Hopper backward's KV kernel: 64 keys (key half `wg` of the 128-key tile; at
// block size 64 the halves are two key blocks the scheduler paired, not necessarily adjacent).
// Per query step (64 rows, one stage of the ring):
//   S^T = K Q^T,  dP^T = V dO^T                     (wgmma, both operands in shared memory, M = keys)
//   P^T = exp2(S^T * scale * log2e - lse2)          (lse2: the forward's lse in log2 units; +inf: P = 0)
//   dS^T = P^T * (dP^T - dsum)                      (dsum = rowsum(dO * O), the pre-pass)
//   dV += P^T dO,  dK += dS^T Q                     (wgmma, A = the 16-bit accumulators in registers)
// dQ is the dQ kernel's (backward_dq_kernel_sm90.cuh). dK is scaled by `scale` once at the end of the unit,
// as on the portable path. A step is element-masked
// only when the warpgroup's key block is not visible to it, it crosses the end of the keys, or (causal) the
// diagonal; rows outside the sequence have lse2 = +inf (the producer's statistics), so P = 0 there.
//
// Register fragments (wgmma m64nNk16, per thread): accumulator element e of a 64 x N tile sits at row
// warp * 16 + r * 8 + lane / 4 and column 8 * t + 2 * (lane % 4) + c, with e = c + 2 r + 4 t. Here rows are
// keys and columns queries for S^T / dP^T, keys and d for dK / dV. The A operand of a
// k16 step in registers has the same order, so P^T and dS^T are the accumulators converted in place.
//
// Order within a step (registers: dK and dV hold 128 for the whole unit): at D = 128 S^T and dP^T are issued
// together and P^T's exp2 runs under dP^T; at D = 64 S^T alone, P^T, then dP^T and dV += P^T dO together;
// then dS^T (from the fp32 P^T) and dK += dS^T Q.
// dQ is normally the dQ kernel's: measured on the H100 (session 9), a first fused try (dS through shared
// memory, dQ = dS K, then per-thread atomics or a bulk TMA reduce-add of a staged tile) took 16.8 ms at 32k,
// V = 8, against 6.0 + 4.6 ms for this kernel and the dQ kernel; it spilled around its GEMMs. The fused mode
// here (T::kFusedDq: non-deterministic mode at D = 128, S2ATTN_SM90_FUSED_DQ=0 off) keeps dQ's accumulator out
// of the step's S^T / dP^T registers: after dK, both warpgroups store dS^T; each computes 64 columns of dQ
// over all 128 keys (32 registers) and adds it into the workspace's fp32 accumulator (bulk reductions).
// A warpgroup computes dQ of its previous step (dS^T double-buffered by step, mbarriers per slot), so that
// it does not wait for the other warpgroup to finish the current one: with one buffer and a 256-thread
// barrier per step the warpgroups ran in lockstep and the kernel took 2.1x as long (ncu, session 14).
// That GEMM is issued right behind the step's dK GEMM and drained by the same wait (session 22, H100: KV
// kernel -3.1 to -4.4%, one pipeline drain a step fewer).
// Session 15 (ncu, 32k V = 8): staging dQ for a TMA reduce-add and storing dS^T element by element doubled
// the kernel's instructions (2.54 G against 1.27 G) and its time; hence stmatrix for dS^T and an accumulator
// laid out in fragment order (dq_accum_tiles_sm90.h), each warp's part contiguous: the warp stages it with
// 16-byte stores and one bulk reduction adds it (16-byte atomics from registers measured slower: the warps
// stalled on the atomics' operand reads).
// NOTE (performance): the two warpgroups do not ping-pong and a step's GEMMs are not overlapped with the
// previous step's exp2 / dS math (FA3 overlaps both).
#pragma once
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "cuda/common/numeric.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/backward_traits_sm90.h"
#include "cuda/sm90/dq_accum_tiles_sm90.h"
#include "cuda/sm90/forward_consumer_sm90.cuh"  // ConsumerSm90::store_row: 16-byte row stores
#include "cuda/sm90/gemm_sm90.cuh"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

// Fused dQ helpers (used only where T::kFusedDq).

// Step slot `slot`'s dS^T buffer of key half h (null without fused dQ, where the storage has none).
template <class T>
__device__ __forceinline__ typename T::Elem* fused_ds(BwdSharedStorageSm90<T>& ss, int slot, int h) {
  if constexpr (T::kFusedDq) {
    return ss.fdq.ds[slot][h];
  } else {
    return nullptr;
  }
}

// This thread's index in its warpgroup, read afresh where it is called: the fused-dQ stores' addresses are
// computed from it at each use instead of being hoisted out of the step loop as 16 loop-invariant registers
// each (ptxas kept them live across the step's GEMMs and spilled the K / V descriptors for them).
__device__ __forceinline__ int fresh_thread_in_warpgroup() {
  uint32_t t;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
  return static_cast<int>(t % 128u);
}

// This warpgroup's dS^T (64 keys x 64 queries, 16-bit pairs in the A-fragment registers of dK += dS^T Q:
// pair r + 2 t is key row warp * 16 + r * 8 + lane / 4, queries 8 t + 2 (lane % 4) + 0, 1) into its half of
// the step slot's buffer, [key][query] in a swizzled chunk (SmemLayoutChunk: 128-byte rows, 16-byte chunk
// q / 8 at chunk (q / 8) ^ (key % 8), 1024-byte aligned buffer). Four stmatrix.x4 per thread: instruction j
// stores matrices (r, t) = (0, 2 j), (1, 2 j), (0, 2 j + 1), (1, 2 j + 1), i.e. registers 4 j .. 4 j + 3;
// lane l addresses row l % 8 of matrix l / 8, whose chunk (2 j + (l / 16)) ^ (l % 8) is the lane's base
// chunk XOR-ed with 2 j. Only where the warpgroup saw the step: the dQ GEMM skips a half no query sees.
template <class T, class TdS32>
__device__ __forceinline__ void store_ds_t(BwdSharedStorageSm90<T>& ss, int slot, int wg, const TdS32& ds32,
                                           int tid) {
  if constexpr (T::kFusedDq) {
    const int warp = tid / 32, lane = tid % 32;
    const int key = warp * 16 + (lane / 8 % 2) * 8 + lane % 8;
    const uint32_t base = smem_u32(ss.fdq.ds[slot][wg]) + key * 128 +
                          (((lane / 16) ^ (lane % 8)) << 4);
    CUTE_UNROLL
    for (int j = 0; j < 4; ++j)
      stmatrix_x4(base ^ (j << 5), ds32(4 * j), ds32(4 * j + 1), ds32(4 * j + 2), ds32(4 * j + 3));
  }
}

// This warp's share of its warpgroup's dQ (the accumulator fragment: 32 floats a thread) added into its part of
// an accumulator half tile (dq_accum_tiles_sm90.h: a warp's 4 KiB are contiguous): staged in shared memory in
// the same order (8 16-byte stores a thread, conflict-free), then, after the caller's proxy fence, added by
// one bulk reduction that the TMA unit runs asynchronously. Warp-local: lane 0 issues it and, before the next
// step's stores, waits until it has read the staging buffer (issued a step earlier: normally done). No
// barrier between warps. Two halves so that the step's dS^T stores and these share one fence.
template <class T, class TdQ>
__device__ __forceinline__ void stage_dq(BwdSharedStorageSm90<T>& ss, int wg, const TdQ& dq, int tid) {
  if constexpr (T::kFusedDq) {
    const int warp = tid / 32, lane = tid % 32;
    float* stage = ss.fdq.dq_stage[wg * 4 + warp];
    if (lane == 0) bulk_wait_read_all();
    __syncwarp();
    float4* s = reinterpret_cast<float4*>(stage) + lane;
    CUTE_UNROLL
    for (int j = 0; j < 8; ++j) s[32 * j] = make_float4(dq(4 * j), dq(4 * j + 1), dq(4 * j + 2), dq(4 * j + 3));
  }
}
// After stage_dq and a fence.proxy.async of every lane's stores (generic proxy, read by the bulk copy): the
// reduction into half tile `half` of the accumulator (in units of kDqHalfFloats).
template <class T>
__device__ __forceinline__ void issue_dq_reduction(const BackwardParamsSm90& fp, BwdSharedStorageSm90<T>& ss, int wg,
                                                   int half, int tid) {
  if constexpr (T::kFusedDq) {
    const int warp = tid / 32, lane = tid % 32;
    float* half_tile = fp.dq_accum + int64_t(half) * kDqHalfFloats;
    __syncwarp();
    if (lane == 0) {
      bulk_reduce_add_f32(half_tile + warp * 16 * 64, smem_u32(ss.fdq.dq_stage[wg * 4 + warp]), 16 * 64 * 4);
      bulk_commit_group();
    }
  }
}

template <class T>
__device__ __forceinline__ void run_bwd_consumer(const BackwardParamsSm90& fp, BwdSharedStorageSm90<T>& ss,
                                                 int wg) {
  using namespace cute;
  using Elem = typename T::Elem;
  using CElem = typename CudaElem<Elem>::type;
  constexpr int kD = T::kHeadDim;
  // S^T and dP^T in flight together where it pays: at D = 128 the KV kernel went 10.14 -> 8.12 ms (32k,
  // V = 8, H100); at D = 64 it measured 3% slower (6.03 -> 6.20 ms)
  constexpr bool kSdPTogether = kD == 128;
  const AttentionBwdParams& p = fp.p;
  const int tid = threadIdx.x % 128;  // thread in the warpgroup
  const int warp = tid / 32, lane = tid % 32;
  const bool causal = p.pattern.causal != 0;
  const float scale_log2 = p.scale * kLog2e;
  // the tile's key block holding this warpgroup's keys (block size >= 64: one per warpgroup)
  const int bs_shift = __ffs(p.pattern.block_size) - 1;
  const int wg_block = (wg * T::kWgKeys) >> bs_shift;

  typename T::MmaSdP mma_sdp;
  typename T::MmaDKV mma_dkv;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_dkv = mma_dkv.get_thread_slice(tid);

  Tensor sK = make_tensor(make_smem_ptr(ss.k[wg]), typename T::SmemLayoutRows{});  // (64 keys, D)
  Tensor sV = make_tensor(make_smem_ptr(ss.v[wg]), typename T::SmemLayoutRows{});
  Tensor tSrK = thr_sdp.partition_fragment_A(sK);
  Tensor tSrV = thr_sdp.partition_fragment_A(sV);
  // Fused dQ: K's and V's descriptors built at each step from an address the compiler cannot see through.
  // Hoisted out of the loop (as the ordered kernel has them) they hold 16 uniform registers that the fused
  // step's other descriptors need: ptxas then kept them in vector registers and moved each with R2UR before
  // its HGMMA (SASS: the step loop 758 -> 684 instructions with the producer's step meta, R2UR 80 -> 12).
  // The ordered kernel keeps the hoisted ones (built per step its loop grows, 464 -> 486).
  [[maybe_unused]] auto opaque_rows_operand = [&](Elem* rows) {
    asm volatile("" : "+l"(rows));
    return thr_sdp.partition_fragment_A(make_tensor(make_smem_ptr(rows), typename T::SmemLayoutRows{}));
  };

  Tensor tSrS = partition_fragment_C(mma_sdp, Shape<_64, _64>{});   // S^T, then P^T (keys, queries) fp32
  Tensor tSrdP = partition_fragment_C(mma_sdp, Shape<_64, _64>{});  // dP^T, then dS^T
  Tensor tVrdV = partition_fragment_C(mma_dkv, Shape<_64, Int<kD>>{});  // (keys, d) fp32
  Tensor tKrdK = partition_fragment_C(mma_dkv, Shape<_64, Int<kD>>{});
  Tensor tVrP = make_tensor<Elem>(partition_shape_A(mma_dkv, Shape<_64, _64>{}));
  Tensor tKrdS = make_tensor<Elem>(partition_shape_A(mma_dkv, Shape<_64, _64>{}));
  Tensor tVrP32 = recast<uint32_t>(tVrP);
  Tensor tKrdS32 = recast<uint32_t>(tKrdS);

  // Fused dQ (T::kFusedDq): this warpgroup's 64 columns of dQ = dS K over both key halves. The operands'
  // descriptors: dS^T of a step slot's key half h and the K half's chunk of this warpgroup's columns.
  [[maybe_unused]] typename T::MmaDq mma_dq;
  [[maybe_unused]] auto thr_dq = mma_dq.get_thread_slice(tid);
  [[maybe_unused]] auto fused_dq_operands = [&](int slot, int h) {
    Tensor sA = make_tensor(make_smem_ptr(fused_ds(ss, slot, h)), typename T::SmemLayoutChunkT{});  // (64 q, 64 keys)
    Tensor sB = make_tensor(make_smem_ptr(ss.k[h] + wg * 64 * 64), typename T::SmemLayoutChunkT{});  // (64 d, keys)
    return cute::make_tuple(thr_dq.partition_fragment_A(sA), thr_dq.partition_fragment_B(sB));
  };
  // Steps both warpgroups took part in so far (the same steps in the same order for both: the slots' barrier
  // phases pair up), whether the last one's dQ is still to do, and which key halves that step saw.
  // Packed into one register (the consumer is at its register limit): fdq = n << 3 | halves << 1 | pending,
  // halves' bit h: some query of that step sees key half h. fdq_half: the pending step's half tile of the
  // accumulator, in units of kDqHalfFloats (-1: the step holds no query of the sequence, nothing to add).
  [[maybe_unused]] uint32_t fdq = 0;
  [[maybe_unused]] int fdq_half = -1;
  // The previous step's dQ GEMM and its staging; the caller fences and issues the reduction (fdq_half >= 0).
  // In a step it is issued right behind dK += dS^T Q, so that its wait drains both (its operands are shared
  // memory only; its accumulator takes S^T's dead registers).
  [[maybe_unused]] auto fused_dq_previous_step = [&](int tid_now) {
    if constexpr (T::kFusedDq) {
      const uint32_t n = (fdq >> 3) - 1, slot = n & 1u, halves = (fdq >> 1) & 3u;
      mbar_wait(&ss.fdq_bar.ds_full[slot], (n >> 1) & 1u);  // the slot's (n / 2)-th fill
      Tensor tQrdQ = partition_fragment_C(mma_dq, Shape<_64, _64>{});  // (64 q, 64 d) fp32
      if (halves == 3u) {
        const auto half0 = fused_dq_operands(slot, 0);
        wgmma_issue<true, false>(mma_dq, get<0>(half0), get<1>(half0), tQrdQ);
        const auto half1 = fused_dq_operands(slot, 1);
        wgmma_issue<false, false>(mma_dq, get<0>(half1), get<1>(half1), tQrdQ);
      } else {  // one key half seen (vertical strides: most steps of a tile)
        const auto half = fused_dq_operands(slot, halves == 2u ? 1 : 0);
        wgmma_issue<true, false>(mma_dq, get<0>(half), get<1>(half), tQrdQ);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(tQrdQ);
      mbar_arrive(&ss.fdq_bar.ds_empty[slot]);  // this thread's share of the GEMM's reads is done
      if (fdq_half >= 0) stage_dq<T>(ss, wg, tQrdQ, tid_now);
    }
  };

  int stage = 0;
  uint32_t phase = 0;
  int unit_count = 0;
  const BwdUnitSm90& unit = ss.unit;  // read at each use (after a barrier wait): no registers held
  for (;;) {
    mbar_wait(&ss.kv_full, unit_count & 1);
    ++unit_count;
    if (unit.done) break;
    clear(tVrdV);
    clear(tKrdK);

    for (;;) {
      mbar_wait(&ss.full[stage], phase);
      const BwdStageMetaSm90 meta = ss.meta[stage];
      if (meta.flags & kStepValid) {
        Tensor sQ = make_tensor(make_smem_ptr(ss.q[stage]), typename T::SmemLayoutRows{});      // (64 q, D)
        Tensor sdO = make_tensor(make_smem_ptr(ss.dout[stage]), typename T::SmemLayoutRows{});
        Tensor sQt = make_tensor(make_smem_ptr(ss.q[stage]), typename T::SmemLayoutRowsT{});    // (D, 64 q)
        Tensor sdOt = make_tensor(make_smem_ptr(ss.dout[stage]), typename T::SmemLayoutRowsT{});
        // Which key halves the step's queries see. A half they do not see skips its GEMMs (its warpgroup
        // idles and the other one has the tensor cores): with vertical strides most steps of a tile see
        // one of its two 64-key blocks only.
        const bool seen = (meta.vis >> wg_block) & 1u;
        if (seen) {
          const auto tSrK_step = T::kFusedDq ? opaque_rows_operand(ss.k[wg]) : tSrK;
          const auto tSrV_step = T::kFusedDq ? opaque_rows_operand(ss.v[wg]) : tSrV;
          const float* sl = ss.lse2[stage];
          const float* sd = ss.dsum[stage];
          // The rows' lse2 (this thread's 16 query columns) and the unit's geometry are read while S^T runs:
          // read after its wait, the first exp2's operands waited on the shared loads (~5% of the fused KV
          // kernel's stall samples at 32k / 128k V32 on those FFMAs, ncu session 23).
          // this thread's 16 query columns (8 t + 2 (lane % 4) + c) of a stage's per-row statistic
          auto load_row_stats = [&](const float* rows, float2 (&v)[8]) {
            CUTE_UNROLL
            for (int t = 0; t < 8; ++t) v[t] = *reinterpret_cast<const float2*>(rows + 8 * t + 2 * (lane % 4));
          };
          float2 l2[8];
          if constexpr (kSdPTogether) {
            // dP^T runs under P^T's exp2
            wgmma_issue<true, false>(mma_sdp, tSrK_step, thr_sdp.partition_fragment_B(sQ), tSrS);
            wgmma_issue<true, false>(mma_sdp, tSrV_step, thr_sdp.partition_fragment_B(sdO), tSrdP);
          } else {
            // S^T first, alone (measured faster at D = 64)
            wgmma_issue<true, false>(mma_sdp, tSrK_step, thr_sdp.partition_fragment_B(sQ), tSrS);
          }
          load_row_stats(sl, l2);
          const int k0w = unit.k0 + wg * unit.k_half;  // this warpgroup's first key
          const int len_k = unit.len_k;
          const bool full = k0w + T::kWgKeys <= len_k && (!causal || k0w + T::kWgKeys - 1 <= meta.p0);
          if constexpr (kSdPTogether) {
            warpgroup_wait<1>();
          } else {
            warpgroup_wait<0>();
          }
          warpgroup_fence_operand(tSrS);

          // P^T (in S^T's registers), then 0 where the step needs the mask. Element e = c + 2 r + 4 t is key
          // row r of this thread and query column 8 t + 2 (lane % 4) + c; its 16-bit pair (c = 0, 1) is
          // A-fragment register r + 2 t.
          CUTE_UNROLL
          for (int t = 0; t < 8; ++t) {
            CUTE_UNROLL
            for (int r = 0; r < 2; ++r)
              CUTE_UNROLL
              for (int c = 0; c < 2; ++c) {
                const int e = c + 2 * r + 4 * t;
                tSrS(e) = fast_exp2(fmaf(tSrS(e), scale_log2, -(c ? l2[t].y : l2[t].x)));
              }
          }
          // Branch-free (as the forward's mask; a per-element && chain had cost the dQ kernel 0.46 us a masked
          // warpgroup-stage, and its selects were issued on every stage): per key row, the first visible
          // query column relative to this thread's first column; a key past len_k sees none.
          if (!full) {
            CUTE_UNROLL
            for (int r = 0; r < 2; ++r) {
              const int key = k0w + warp * 16 + r * 8 + lane / 4;
              const int first = key >= len_k ? (1 << 30) : (causal ? key - meta.p0 - 2 * (lane % 4) : -(1 << 30));
              CUTE_UNROLL
              for (int t = 0; t < 8; ++t)
                CUTE_UNROLL
                for (int c = 0; c < 2; ++c) {
                  if (8 * t + c < first) tSrS(c + 2 * r + 4 * t) = 0.f;
                }
            }
          }
          CUTE_UNROLL
          for (int i = 0; i < size(tVrP32); ++i) tVrP32(i) = pack2<CElem>(tSrS(2 * i), tSrS(2 * i + 1));
          // dP^T and dV += P^T dO together; dS^T needs only dP^T (groups complete in order: wait<1> leaves
          // the dV GEMM running)
          if constexpr (!kSdPTogether) {
            wgmma_issue<true, false>(mma_sdp, tSrV_step, thr_sdp.partition_fragment_B(sdO), tSrdP);
          }
          wgmma_issue<false, true>(mma_dkv, tVrP, thr_dkv.partition_fragment_B(sdOt), tVrdV);
          // the rows' dsum, read under the GEMMs as lse2 above where registers allow (the ordered kernel then
          // spilled in its step loop: it reads them after the wait)
          constexpr bool kDsumEarly = T::kFusedDq;
          float2 dsv[8];
          if constexpr (kDsumEarly) load_row_stats(sd, dsv);
          warpgroup_wait<1>();
          warpgroup_fence_operand(tSrdP);
          if constexpr (!kDsumEarly) load_row_stats(sd, dsv);
          // dS^T = P^T (dP^T - dsum), from the fp32 P^T still in S^T's registers (as the portable path does).
          // From the 16-bit P (the value dV uses) it took ~60 more instructions per step and warp to unpack it
          // (PRMT / IMAD: the step loop 464 -> 412 static instructions at D = 128, 421 -> 357 at D = 64)
          CUTE_UNROLL
          for (int t = 0; t < 8; ++t) {
            CUTE_UNROLL
            for (int r = 0; r < 2; ++r) {
              const int e = 2 * r + 4 * t;
              tKrdS32(r + 2 * t) =
                  pack2<CElem>(tSrS(e) * (tSrdP(e) - dsv[t].x), tSrS(e + 1) * (tSrdP(e + 1) - dsv[t].y));
            }
          }
          wgmma_issue<false, true>(mma_dkv, tKrdS, thr_dkv.partition_fragment_B(sQt), tKrdK);
        }
        // Fused dQ: the previous step's dQ GEMM behind dK's, drained by the same wait, and staged (its
        // accumulator lives inside fused_dq_previous_step only: no value of it merges with another path)
        [[maybe_unused]] const bool dq_now = T::kFusedDq && meta.vis != 0u && (fdq & 1u);
        // the thread index for the fused-dQ stores below, read here so that its latency passes under the
        // GEMM wait (read at each store, three S2R a step each held up the address arithmetic after it: ~3%
        // of the fused KV kernel's stall samples, ncu session 23); one register across the wait
        [[maybe_unused]] const int tid_now = T::kFusedDq ? fresh_thread_in_warpgroup() : 0;
        if (dq_now) {
          fused_dq_previous_step(tid_now);
        } else {
          warpgroup_wait<0>();
        }
        warpgroup_fence_operand(tVrdV);
        warpgroup_fence_operand(tKrdK);
        // Every thread arrives for the reads it made (Q, dO, statistics, meta): a one-lane arrival after a
        // warp sync is just as ordered, but compute-sanitizer's racecheck cannot see that and reports it.
        mbar_arrive(&ss.empty[stage]);
        // Fused dQ: both warpgroups take part in every step some warpgroup computed (the one that did not see
        // it stores nothing: the GEMM skips that half). This step's dS^T goes into its slot (free once both
        // warpgroups' dQ of the step two back is done); the previous step's dQ was issued and staged above.
        if constexpr (T::kFusedDq) {
          if (meta.vis != 0u) {
            const uint32_t n = fdq >> 3, slot = n & 1u;
            if (n >= 2) mbar_wait(&ss.fdq_bar.ds_empty[slot], ((n >> 1) - 1) & 1u);
            // after dK's wait: PTX leaves reading a wgmma's A registers while it runs undefined (session 15's
            // v3b / v4 stored them under the dK GEMM; measured fine, not relied on)
            if (seen) store_ds_t<T>(ss, slot, wg, tKrdS32, tid_now);
            // one proxy fence covers both stores: this step's dS^T (read by the other warpgroup's wgmma) and
            // the previous step's dQ staged above (read by the bulk copy)
            const bool add = dq_now && fdq_half >= 0;
            fence_proxy_async_shared();  // generic-proxy stores, read by the async proxy
            mbar_arrive(&ss.fdq_bar.ds_full[slot]);
            if (add) issue_dq_reduction<T>(fp, ss, wg, fdq_half, tid_now);
            // the step's accumulator half tile and key halves, as the producer derived them (a step with no
            // query of the sequence, which the walk does not emit, adds nothing: a guard)
            fdq_half = meta.dq_half0 >= 0 ? meta.dq_half0 + wg : -1;
            const uint32_t halves = (static_cast<uint32_t>(meta.flags) >> kStepHalvesShift) & 3u;
            fdq = ((n + 1) << 3) | (halves << 1) | 1u;
          }
        }
      } else {
        mbar_arrive(&ss.empty[stage]);
      }
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
      if (meta.flags & kStepLast) break;
    }
    // the unit's last fused step: its dQ reads K, which the release below lets the producer overwrite
    if constexpr (T::kFusedDq) {
      if (fdq & 1u) {
        const int tid_now = fresh_thread_in_warpgroup();
        fused_dq_previous_step(tid_now);
        if (fdq_half >= 0) {
          fence_proxy_async_shared();
          issue_dq_reduction<T>(fp, ss, wg, fdq_half, tid_now);
        }
        fdq &= ~1u;
      }
    }
    // the unit's geometry into registers before the unit is released
    const int k0w = unit.k0 + wg * unit.k_half, len_k = unit.len_k;
    CElem* dk = static_cast<CElem*>(p.dk) + unit.b * p.dk_stride.batch + unit.k_begin * p.dk_stride.seq +
                unit.hk * p.dk_stride.head;
    CElem* dv = static_cast<CElem*>(p.dv) + unit.b * p.dv_stride.batch + unit.k_begin * p.dv_stride.seq +
                unit.hk * p.dv_stride.head;
    mbar_arrive(&ss.kv_empty);  // every GEMM reading K and V (and this thread's reads of the unit) completed

    // Epilogue: dK * scale and dV of this warpgroup's keys < len_k, 16-byte stores after a transpose in each
    // quad (the forward's O store; rows 16-byte aligned: rows_ok_sm90). The 4-byte stores before (64 a thread
    // and unit, each writing half sectors of 8 rows) held 9.6% of the fused KV kernel's stall samples at 32k
    // V32, where units are short (ncu, session 20).
    using C = ConsumerSm90<T>;
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int key = k0w + warp * 16 + r * 8 + lane / 4;
      const bool keep = key < len_k;
      C::template store_row<CElem>(tKrdK, r, p.scale, keep ? dk + int64_t(key) * p.dk_stride.seq : dk, keep);
      C::template store_row<CElem>(tVrdV, r, 1.f, keep ? dv + int64_t(key) * p.dv_stride.seq : dv, keep);
    }
  }
  if constexpr (T::kFusedDq) {
    if (lane == 0) bulk_wait_all();  // this warp's bulk reductions complete before its shared memory goes
  }
}

}  // namespace s2attn::cuda

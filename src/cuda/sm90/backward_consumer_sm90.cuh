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
// then dS^T (from the 16-bit P^T) and dK += dS^T Q.
// Why no dQ here (FA3 reduces it from this kernel into an fp32 accumulator): measured on the H100, this
// kernel with dQ (dS through shared memory, dQ = dS K, then per-thread atomics or a bulk TMA reduce-add of
// a staged tile, branch sm90-bwd-bulk-dq) took 16.8 ms at 32k, V = 8, against 6.0 + 4.6 ms for this kernel
// and the dQ kernel; 14.3 ms even with the reduce left out. Dense too: 5.1 against 3.5 ms (8k).
// NOTE (performance): the two warpgroups do not ping-pong and a step's GEMMs are not overlapped with the
// previous step's exp2 / dS math (FA3 overlaps both); dS^T uses the rounded P^T (the portable path the fp32
// one: same order of error as dS^T's own rounding).
#pragma once
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "cuda/common/numeric.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/backward_traits_sm90.h"
#include "cuda/sm90/gemm_sm90.cuh"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

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

  Tensor tSrS = partition_fragment_C(mma_sdp, Shape<_64, _64>{});   // S^T, then P^T (keys, queries) fp32
  Tensor tSrdP = partition_fragment_C(mma_sdp, Shape<_64, _64>{});  // dP^T, then dS^T
  Tensor tVrdV = partition_fragment_C(mma_dkv, Shape<_64, Int<kD>>{});  // (keys, d) fp32
  Tensor tKrdK = partition_fragment_C(mma_dkv, Shape<_64, Int<kD>>{});
  Tensor tVrP = make_tensor<Elem>(partition_shape_A(mma_dkv, Shape<_64, _64>{}));
  Tensor tKrdS = make_tensor<Elem>(partition_shape_A(mma_dkv, Shape<_64, _64>{}));
  Tensor tVrP32 = recast<uint32_t>(tVrP);
  Tensor tKrdS32 = recast<uint32_t>(tKrdS);

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
          if constexpr (kSdPTogether) {
            // dP^T runs under P^T's exp2
            wgmma_issue<true, false>(mma_sdp, tSrK, thr_sdp.partition_fragment_B(sQ), tSrS);
            wgmma_issue<true, false>(mma_sdp, tSrV, thr_sdp.partition_fragment_B(sdO), tSrdP);
            warpgroup_wait<1>();
          } else {
            // S^T first, alone (measured faster at D = 64)
            wgmma_issue<true, false>(mma_sdp, tSrK, thr_sdp.partition_fragment_B(sQ), tSrS);
            warpgroup_wait<0>();
          }
          warpgroup_fence_operand(tSrS);

          const int k0w = unit.k0 + wg * unit.k_half;  // this warpgroup's first key
          const int len_k = unit.len_k;
          const bool full = k0w + T::kWgKeys <= len_k && (!causal || k0w + T::kWgKeys - 1 <= meta.p0);
          const float* sl = ss.lse2[stage];
          const float* sd = ss.dsum[stage];
          // P^T (in S^T's registers), then 0 where the step needs the mask. Element e = c + 2 r + 4 t is key
          // row r of this thread and query column 8 t + 2 (lane % 4) + c; its 16-bit pair (c = 0, 1) is
          // A-fragment register r + 2 t.
          CUTE_UNROLL
          for (int t = 0; t < 8; ++t) {
            const float2 l2 = *reinterpret_cast<const float2*>(sl + 8 * t + 2 * (lane % 4));
            CUTE_UNROLL
            for (int r = 0; r < 2; ++r)
              CUTE_UNROLL
              for (int c = 0; c < 2; ++c) {
                const int e = c + 2 * r + 4 * t;
                tSrS(e) = fast_exp2(fmaf(tSrS(e), scale_log2, -(c ? l2.y : l2.x)));
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
            wgmma_issue<true, false>(mma_sdp, tSrV, thr_sdp.partition_fragment_B(sdO), tSrdP);
          }
          wgmma_issue<false, true>(mma_dkv, tVrP, thr_dkv.partition_fragment_B(sdOt), tVrdV);
          warpgroup_wait<1>();
          warpgroup_fence_operand(tSrdP);
          // dS^T = P^T (dP^T - dsum), from the 16-bit P (the value dV uses)
          CUTE_UNROLL
          for (int t = 0; t < 8; ++t) {
            const int m0 = 8 * t + 2 * (lane % 4);
            const float2 dsv = *reinterpret_cast<const float2*>(sd + m0);
            CUTE_UNROLL
            for (int r = 0; r < 2; ++r) {
              const float2 pv = unpack2<CElem>(tVrP32(r + 2 * t));
              const int e = 2 * r + 4 * t;
              tKrdS32(r + 2 * t) = pack2<CElem>(pv.x * (tSrdP(e) - dsv.x), pv.y * (tSrdP(e + 1) - dsv.y));
            }
          }
          wgmma_issue<false, true>(mma_dkv, tKrdS, thr_dkv.partition_fragment_B(sQt), tKrdK);
        }
        warpgroup_wait<0>();
        warpgroup_fence_operand(tVrdV);
        warpgroup_fence_operand(tKrdK);
        // Every thread arrives for the reads it made (Q, dO, statistics, meta): a one-lane arrival after a
        // warp sync is just as ordered, but compute-sanitizer's racecheck cannot see that and reports it.
        mbar_arrive(&ss.empty[stage]);
      } else {
        mbar_arrive(&ss.empty[stage]);
      }
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
      if (meta.flags & kStepLast) break;
    }
    // the unit's geometry into registers before the unit is released
    const int k0w = unit.k0 + wg * unit.k_half, len_k = unit.len_k;
    CElem* dk = static_cast<CElem*>(p.dk) + unit.b * p.dk_stride.batch + unit.k_begin * p.dk_stride.seq +
                unit.hk * p.dk_stride.head;
    CElem* dv = static_cast<CElem*>(p.dv) + unit.b * p.dv_stride.batch + unit.k_begin * p.dv_stride.seq +
                unit.hk * p.dv_stride.head;
    mbar_arrive(&ss.kv_empty);  // every GEMM reading K and V (and this thread's reads of the unit) completed

    // Epilogue: dK * scale and dV of this warpgroup's keys, 4-byte pairs of the keys < len_k.
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int key = k0w + warp * 16 + r * 8 + lane / 4;
      if (key < len_k) {
        CElem* dk_row = dk + int64_t(key) * p.dk_stride.seq + 2 * (lane % 4);
        CElem* dv_row = dv + int64_t(key) * p.dv_stride.seq + 2 * (lane % 4);
        CUTE_UNROLL
        for (int t = 0; t < kD / 8; ++t) {
          *reinterpret_cast<uint32_t*>(dk_row + 8 * t) =
              pack2<CElem>(tKrdK(4 * t + 2 * r) * p.scale, tKrdK(4 * t + 2 * r + 1) * p.scale);
          *reinterpret_cast<uint32_t*>(dv_row + 8 * t) = pack2<CElem>(tVrdV(4 * t + 2 * r), tVrdV(4 * t + 2 * r + 1));
        }
      }
    }
  }
}

}  // namespace s2attn::cuda

// A consumer warpgroup of the Hopper dQ kernel: 64 query rows of the unit's tile. Per key stage (128 keys):
//   S = Q K^T                                  (wgmma, both operands in shared memory)
//   P = exp2(S * scale * log2e - lse2)         (in S's registers; lse2: the forward's lse in log2 units,
//                                               +inf: P = 0), masked
//   dP = dO V^T                                (wgmma into registers of its own)
//   dS = P (dP - dsum)                         (16-bit, from the fp32 P; dsum = rowsum(dO * O), the pre-pass)
//   dQ += dS K                                 (wgmma, A = dS in registers, K read as (D, keys))
// Epilogue: dQ * scale, 16-bit rows (the forward's quad transpose and 16-byte stores). Each row of the
// output is written by exactly one warpgroup: no accumulator, no atomics, deterministic.
// The rows' statistics are loaded once per unit (global, 2 rows per thread).
// Ping-pong (dp.pingpong; S2ATTN_SM90_DQ_PINGPONG, read per call, while it is measured): the two warpgroups
// take turns on named barriers, as the forward's do, twice a stage: [dQ GEMM of the last stage, S] and
// [dP]. One warpgroup's exp2 and dS math then runs under the other's GEMMs instead of both warpgroups
// waiting in phase on the same stage. Both walk the same stages (a stage without boxes takes no turn on
// either), so the turns stay paired.
#pragma once
#include <cstdint>

#include <cute/tensor.hpp>

#include "cuda/common/numeric.cuh"
#include "cuda/sm90/backward_dq_traits_sm90.h"
#include "cuda/sm90/backward_sm90.h"
#include "cuda/sm90/forward_consumer_sm90.cuh"  // ConsumerSm90: quad_transpose, release
#include "cuda/sm90/gemm_sm90.cuh"
#include "cuda/sm90/ptx_sm90.cuh"
#include "cuda/sm90/stage_sequence_sm90.cuh"
#include "cuda/sm90/tile_scheduler_sm90.cuh"

namespace s2attn::cuda {

template <class T>
__device__ __forceinline__ void run_dq_consumer(const BackwardDqParamsSm90& dp, DqSharedStorageSm90<T>& ss,
                                                int wg) {
  using namespace cute;
  using Elem = typename T::Elem;
  using CElem = typename CudaElem<Elem>::type;
  using C = ConsumerSm90<T>;
  constexpr int kD = T::kHeadDim;
  constexpr int kSN8 = T::kBlockN / 8;  // n8 tiles of S per row
  const ForwardParamsSm90& fp = dp.f;
  const AttentionParams& p = fp.p;
  const int tid = threadIdx.x % 128;  // thread in the warpgroup
  const int warp = tid / 32, lane = tid % 32;
  const bool causal = p.pattern.causal != 0;
  const float scale_log2 = p.scale * kLog2e;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const bool pingpong = dp.pingpong != 0;
  constexpr int kMmaThreads = 128 * T::kConsumerWarpgroups;
  const int turn_mine = static_cast<int>(NamedBarrierSm90::wg_turn) + wg;
  const int turn_other = static_cast<int>(NamedBarrierSm90::wg_turn) + (1 - wg);
  if (pingpong && wg == 1) named_barrier_arrive(turn_other, kMmaThreads);  // warpgroup 0 takes the first turn

  typename T::MmaS mma_s;
  typename T::MmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_o = mma_o.get_thread_slice(tid);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<Int<T::kWgRows>, Int<T::kBlockN>>{});   // S, then P (fp32)
  Tensor tSrdP = partition_fragment_C(mma_s, Shape<Int<T::kWgRows>, Int<T::kBlockN>>{});  // dP (fp32)
  Tensor tOrdQ = partition_fragment_C(mma_o, Shape<Int<T::kWgRows>, Int<kD>>{});         // (64, D) fp32
  Tensor tOrP = make_tensor<Elem>(partition_shape_A(mma_o, Shape<Int<T::kWgRows>, Int<T::kBlockN>>{}));  // dS
  Tensor tOrP32 = recast<uint32_t>(tOrP);

  Tensor sQ = make_tensor(make_smem_ptr(ss.q + wg * T::kWgRows * kD), typename T::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout + wg * T::kWgRows * kD), typename T::SmemLayoutQ{});
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);    // (64, D)
  Tensor tSrdO = thr_s.partition_fragment_A(sdO);

  TileSchedulerSm90<T::kBlockM> sched;
  int stage = 0;
  uint32_t phase = 0;
  int unit_count = 0;
  WorkUnitSm90 w;
  for (int u = blockIdx.x; sched.get(fp, u, w); u += gridDim.x) {
    // this thread's rows (absolute positions) and their statistics; rows outside the sequence get
    // lse2 = +inf (P = 0) and are not stored
    int pos[2];
    float lse2[2], dsum[2];
    const int64_t row_base = varlen ? w.g.q_begin : int64_t(w.b) * p.seqlen_q;
    const int64_t stats = int64_t(w.h) * dp.total_q + row_base - w.g.offset;  // + position
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      pos[r] = w.t0 + wg * T::kWgRows + warp * 16 + r * 8 + lane / 4;
      const bool in_seq = pos[r] >= w.pos_lo && pos[r] < w.pos_hi;
      lse2[r] = in_seq ? dp.lse2[stats + pos[r]] : INFINITY;
      dsum[r] = in_seq ? dp.dsum[stats + pos[r]] : 0.f;
    }
    const int pos_min = w.t0 + wg * T::kWgRows;  // first row of the warpgroup
    const int len_k = w.g.len_k;
    clear(tOrdQ);

    StageSequenceSm90<T::kBlockM, T::kSubTile> seq;
    seq.init(p.pattern, w);
    mbar_wait(&ss.q_full, unit_count & 1);
    ++unit_count;
    StageSm90 st;
    // A stage's dQ GEMM is not waited for alone: the next stage's S GEMM queues behind it on the tensor cores,
    // and S's wait (groups complete in order) completes both; only then is the K it read released. Issued
    // at the stage's end, or with ping-pong on the next stage's turn (after the unit's last stage for the
    // last one).
    int pending_k = -1;
    bool dq_issued = true;
    auto issue_dq = [&]() {  // dQ += dS K of the pending stage
      Tensor sKt = make_tensor(make_smem_ptr(ss.k[pending_k]), typename T::SmemLayoutVt{});  // (D, 128)
      wgmma_issue<false, true>(mma_o, tOrP, thr_o.partition_fragment_B(sKt), tOrdQ);
    };
    while (seq.next(st)) {
      mbar_wait(&ss.k_full[stage], phase);
      if (st.boxes > 0) {
        Tensor sK = make_tensor(make_smem_ptr(ss.k[stage]), typename T::SmemLayoutKV{});   // (128, D)
        Tensor sV = make_tensor(make_smem_ptr(ss.v[stage]), typename T::SmemLayoutKV{});
        if (pingpong) named_barrier_sync(turn_mine, kMmaThreads);
        if (!dq_issued) issue_dq();  // ping-pong: on this turn; waited for below, under the same wait as S
        wgmma_issue<true, false>(mma_s, tSrQ, thr_s.partition_fragment_B(sK), tSrS);
        if (pingpong) named_barrier_arrive(turn_other, kMmaThreads);
        warpgroup_wait<0>();  // S, and the previous stage's dQ
        warpgroup_fence_operand(tSrS);
        warpgroup_fence_operand(tOrdQ);
        if (pending_k >= 0) C::release(&ss.k_empty[pending_k]);
        pending_k = -1;

        // P, then 0 where the stage needs the mask (the forward's branch-free mask, one compare and select per
        // element, applied to P: it holds for a negative scale too, and replaces whatever exp2 gave there).
        // Element e = c + 2 r + 4 t of the accumulator; its 16-bit pair (c = 0, 1) is A-fragment register
        // r + 2 t.
        const uint32_t seen = ((st.vis[0] >> wg) & 1u) | (((st.vis[1] >> wg) & 1u) << 1);
        const int k_hi = max(st.k0[0], st.k0[1]) + T::kSubTile;  // one past the last key of the stage
        const bool full = seen == 3u && k_hi <= len_k && (!causal || k_hi - 1 <= pos_min);
        CUTE_UNROLL
        for (int e = 0; e < size(tSrS); ++e) tSrS(e) = fast_exp2(fmaf(tSrS(e), scale_log2, -lse2[(e >> 1) & 1]));
        if (!full) C::mask(tSrS, st, seen, len_k, causal, pos, 0.f);

        mbar_wait(&ss.v_full[stage], phase);
        if (pingpong) named_barrier_sync(turn_mine, kMmaThreads);
        wgmma_issue<true, false>(mma_s, tSrdO, thr_s.partition_fragment_B(sV), tSrdP);  // dP
        if (pingpong) named_barrier_arrive(turn_other, kMmaThreads);
        warpgroup_wait<0>();
        warpgroup_fence_operand(tSrdP);
        C::release(&ss.v_empty[stage]);
        if (st.last) C::release(&ss.q_empty);  // Q and dO read for the unit's last time (warp-uniform)

        CUTE_UNROLL
        for (int t = 0; t < kSN8; ++t)
          CUTE_UNROLL
          for (int r = 0; r < 2; ++r) {
            const int e = 2 * r + 4 * t;
            tOrP32(r + 2 * t) = pack2<CElem>(tSrS(e) * (tSrdP(e) - dsum[r]), tSrS(e + 1) * (tSrdP(e + 1) - dsum[r]));
          }
        pending_k = stage;
        dq_issued = !pingpong;
        if (dq_issued) issue_dq();
      } else {  // a unit that sees nothing: pass the (empty) stage through
        mbar_wait(&ss.v_full[stage], phase);
        C::release(&ss.k_empty[stage]);
        C::release(&ss.v_empty[stage]);
        C::release(&ss.q_empty);
      }
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }

    if (!dq_issued) issue_dq();  // ping-pong: the unit's last dQ GEMM (outside the turns)
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrdQ);
    if (pending_k >= 0) C::release(&ss.k_empty[pending_k]);
    // Epilogue: dQ * scale as 16-bit rows of the sequence (16-byte stores after the quad transpose).
    CElem* dq = static_cast<CElem*>(dp.dq) + w.b * dp.dq_stride.batch + w.g.q_begin * dp.dq_stride.seq +
                w.h * dp.dq_stride.head;
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const bool keep = pos[r] >= w.pos_lo && pos[r] < w.pos_hi;
      C::store_row(tOrdQ, r, p.scale, keep ? dq + int64_t(pos[r] - w.g.offset) * dp.dq_stride.seq : dq, keep);
    }
  }
}

}  // namespace s2attn::cuda

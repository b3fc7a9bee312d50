// A consumer warpgroup of the Hopper forward: 64 query rows of the tile. Per stage: S = Q K^T (wgmma, both
// operands in shared memory), the mask where the stage needs one, the online softmax in fp32 registers
// (log2 domain), O += P V (wgmma, P from registers). Epilogue: normalise, store O (16-bit, 16-byte stores
// after a transpose inside each quad) and the LSE (fp32) with predicates (rows outside the sequence are not
// stored).
//
// Overlap (FA3's two schedules):
//  - inside a warpgroup, stage n's S = Q K^T and stage n-1's O += P V are issued together; the softmax of
//    stage n runs while P V of stage n-1 is still on the tensor cores (O is rescaled by stage n's factor
//    just before the next P V is issued);
//  - between the two warpgroups, ping-pong on named barriers: a warpgroup issues its GEMMs only on its
//    turn and hands the turn over once they are issued, so one warpgroup's softmax overlaps the other's
//    GEMMs. Both warpgroups walk the same stages (a box one of them does not see is computed and masked out),
//    so the turns stay paired.
//
// Register fragments (wgmma m64nNk16, per thread): accumulator element e of a 64 x N tile sits at row
// warp * 16 + r * 8 + lane / 4 and column 8 * t + 2 * (lane % 4) + c, with e = c + 2 r + 4 t. The A operand
// of a k16 step in registers has the same order for two adjacent n8 tiles, so P is the S accumulator
// converted element by element.
#pragma once
#include <cstdint>

#include <cute/tensor.hpp>

#include "cuda/common/numeric.cuh"
#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/forward_traits_sm90.h"
#include "cuda/sm90/gemm_sm90.cuh"
#include "cuda/sm90/ptx_sm90.cuh"
#include "cuda/sm90/stage_sequence_sm90.cuh"

namespace s2attn::cuda {

template <class T>
struct ConsumerSm90 {
  using Elem = typename T::Elem;
  static constexpr int kD = T::kHeadDim;
  static constexpr int kSN8 = T::kBlockN / 8;  // n8 tiles of S per row
  static constexpr int kON8 = kD / 8;          // n8 tiles of O per row

  // Per-element visibility of the S tile of a stage that needs masking. Rows at absolute positions pos[r];
  // box (64 keys) h starts at key st.k0[h] and is seen by this warpgroup's query block iff bit h of `seen`.
  // Branch-free: per box and row, the last visible key relative to this thread's first column of the box;
  // element (t, c) is then visible iff its compile-time column offset is <= that bound (one compare and one
  // select each). The boolean chain this replaces compiled to a branch per element (BSSY / BRA / BSYNC):
  // a masked warpgroup-stage cost +0.83 us against a whole stage's 1.7 us (tools/forward_cost_probe.py).
  // `fill`: what an invisible element becomes (-inf on S; the dQ kernel masks P, with 0).
  template <class TS>
  __device__ __forceinline__ static void mask(TS& s, const StageSm90& st, uint32_t seen, int len_k, bool causal,
                                              const int (&pos)[2], float fill = -INFINITY) {
    constexpr int kBoxN8 = kSN8 / 2;  // n8 tiles per box
    const int col0 = 2 * (threadIdx.x % 4);
    int lim[2][2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int last = causal ? min(len_k - 1, pos[r]) : len_k - 1;
      CUTE_UNROLL
      for (int h = 0; h < 2; ++h) lim[h][r] = ((seen >> h) & 1u) ? last - st.k0[h] - col0 : -1;
    }
    CUTE_UNROLL
    for (int t = 0; t < kSN8; ++t) {
      const int h = t / kBoxN8;
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r)
        CUTE_UNROLL
        for (int c = 0; c < 2; ++c) {
          if ((t % kBoxN8) * 8 + c > lim[h][r]) s(c + 2 * r + 4 * t) = fill;
        }
    }
  }

  // Online softmax over one S tile (masked; `scale` > 0 takes it to the log2 domain): updates each row's
  // reference max m (log2 domain) and this thread's partial row sums, returns in alpha the factor by which O
  // must be rescaled before the next P V, leaves the probabilities in s. The reference moves only when the
  // row's max passes it by more than kRescaleSlack: P = exp2(s - m) then stays below 2^8, O and l keep their
  // scale, and most stages need no rescale of O once the rows have seen their large keys (lse = m + log2(l)
  // is exact whatever the reference). Returns whether any reference of the warp moved (warp-uniform): when
  // none did, every alpha of the warp is exactly 1 (exp2(0)), or 0 on a row that has seen nothing yet and
  // whose O is still 0, so the rescale of O can be skipped.
  static constexpr float kRescaleSlack = 8.f;
  template <class TS>
  __device__ __forceinline__ static bool softmax(TS& s, float scale, float (&m)[2], float (&l)[2],
                                                 float (&alpha)[2]) {
    bool changed = false;
    // Both rows' maxima first, each as a tree (depth 5 over 32 values: the serial chain it replaces was 17
    // dependent FMNMX before the first exp2 of the stage could issue), then their quad shuffles together.
    static_assert((kSN8 & (kSN8 - 1)) == 0, "the max tree halves the tiles");
    float mx[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      float v[kSN8];
      CUTE_UNROLL
      for (int t = 0; t < kSN8; ++t) v[t] = fmaxf(s(4 * t + 2 * r), s(4 * t + 2 * r + 1));
      CUTE_UNROLL
      for (int w = kSN8 / 2; w > 0; w >>= 1)  // (bounds known after unrolling: v stays in registers)
        CUTE_UNROLL
        for (int t = 0; t < kSN8 / 2; ++t) {
          if (t < w) v[t] = fmaxf(v[t], v[t + w]);
        }
      mx[r] = v[0];
    }
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float m_seen = mx[r] * scale;
      // (a difference, not m + slack: that sum rounds, and past 2^27 the slack doubled; m = -inf: any finite
      // max moves it, a -inf one does not, -inf - -inf being NaN)
      const bool move = m_seen - m[r] > kRescaleSlack;
      const float m_new = move ? m_seen : m[r];
      const float ref = m_new == -INFINITY ? 0.f : m_new;  // a row that has seen nothing stays at 0
      alpha[r] = fast_exp2(m[r] - ref);
      changed |= move;
      m[r] = m_new;
      float sum = 0.f;
      CUTE_UNROLL
      for (int t = 0; t < kSN8; ++t)
        CUTE_UNROLL
        for (int c = 0; c < 2; ++c) {
          const float pr = fast_exp2(fmaf(s(4 * t + 2 * r + c), scale, -ref));
          s(4 * t + 2 * r + c) = pr;
          sum += pr;
        }
      l[r] = l[r] * alpha[r] + sum;
    }
    return __any_sync(0xffffffffu, changed);
  }

  template <class TO>
  __device__ __forceinline__ static void rescale(TO& o, const float (&alpha)[2]) {
    CUTE_UNROLL
    for (int t = 0; t < kON8; ++t)
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        o(4 * t + 2 * r) *= alpha[r];
        o(4 * t + 2 * r + 1) *= alpha[r];
      }
  }

  // Transposes x[j] (lane q of the quad: word j of a row) to x[j] = lane j's word q, in two exchanges of
  // 2 x 2 blocks (lanes differing in bit 1, then in bit 0); constant register indices only (selects).
  __device__ __forceinline__ static void quad_transpose(uint32_t* x) {
    const int lane = threadIdx.x % 32;
    const bool hi = (lane & 2) != 0, lo = (lane & 1) != 0;
    {
      const uint32_t s0 = hi ? x[0] : x[2], s1 = hi ? x[1] : x[3];
      const uint32_t r0 = __shfl_xor_sync(0xffffffffu, s0, 2), r1 = __shfl_xor_sync(0xffffffffu, s1, 2);
      x[0] = hi ? r0 : x[0];
      x[1] = hi ? r1 : x[1];
      x[2] = hi ? x[2] : r0;
      x[3] = hi ? x[3] : r1;
    }
    {
      const uint32_t s0 = lo ? x[0] : x[1], s1 = lo ? x[2] : x[3];
      const uint32_t r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
      x[0] = lo ? r0 : x[0];
      x[2] = lo ? r1 : x[2];
      x[1] = lo ? x[1] : r0;
      x[3] = lo ? x[3] : r1;
    }
  }

  // Row r (0, 1) of this thread's accumulator rows, times `scale`, stored as 16-bit values at `row` (the row's
  // first element, 16-byte aligned) when `keep`. Lane q of a quad holds columns 8 t + 2 q, 8 t + 2 q + 1 of
  // its row for every n8 tile t; a 4 x 4 transpose of 4-byte words inside the quad (all lanes, before the
  // predicate) gives lane q all 8 columns of tile 4 g + q: 16-byte stores. The output and dQ epilogues.
  template <class CElem, class TAcc>
  __device__ __forceinline__ static void store_row(const TAcc& acc, int r, float scale, CElem* row, bool keep) {
    uint32_t o16[kON8];
    CUTE_UNROLL
    for (int t = 0; t < kON8; ++t) o16[t] = pack2<CElem>(acc(4 * t + 2 * r) * scale, acc(4 * t + 2 * r + 1) * scale);
    CUTE_UNROLL
    for (int g = 0; g < kON8 / 4; ++g) quad_transpose(o16 + 4 * g);
    if (keep) {
      row += 8 * (threadIdx.x % 4);
      CUTE_UNROLL
      for (int g = 0; g < kON8 / 4; ++g) {
        *reinterpret_cast<uint4*>(row + 32 * g) = make_uint4(o16[4 * g], o16[4 * g + 1], o16[4 * g + 2], o16[4 * g + 3]);
      }
    }
  }

  // One arrival per warp (8 per barrier phase): this warp's part of the GEMMs reading the buffer is done.
  __device__ __forceinline__ static void release(uint64_t* empty) {
    __syncwarp();
    if (threadIdx.x % 32 == 0) mbar_arrive(empty);
  }
};

template <class T>
__device__ __forceinline__ void run_consumer(const ForwardParamsSm90& fp, SharedStorageSm90<T>& ss, int wg) {
  using namespace cute;
  using Elem = typename T::Elem;
  using C = ConsumerSm90<T>;
  constexpr int kD = T::kHeadDim;
  constexpr int kMmaThreads = 128 * T::kConsumerWarpgroups;
  const int turn_mine = static_cast<int>(NamedBarrierSm90::wg_turn) + wg;
  const int turn_other = static_cast<int>(NamedBarrierSm90::wg_turn) + (1 - wg);
  const AttentionParams& p = fp.p;
  const int tid = threadIdx.x % 128;  // thread in the warpgroup
  const int warp = tid / 32, lane = tid % 32;
  const bool causal = p.pattern.causal != 0;
  // softmax scale into the log2 domain; a negative scale is applied to S first (the running max needs a
  // monotone map), a positive one is folded into the exponent's FFMA
  const float scale_log2 = p.scale * kLog2e;
  const bool prescale = scale_log2 < 0.f;
  const float fold_scale = prescale ? 1.f : scale_log2;

  typename T::MmaS mma_s;
  typename T::MmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_o = mma_o.get_thread_slice(tid);
  Tensor tSrS = partition_fragment_C(mma_s, Shape<Int<T::kWgRows>, Int<T::kBlockN>>{});  // (64, 128) fp32
  Tensor tOrO = partition_fragment_C(mma_o, Shape<Int<T::kWgRows>, Int<kD>>{});          // (64, D) fp32
  Tensor tOrP = make_tensor<Elem>(partition_shape_A(mma_o, Shape<Int<T::kWgRows>, Int<T::kBlockN>>{}));
  Tensor tOrP32 = recast<uint32_t>(tOrP);
  using CElem = typename CudaElem<Elem>::type;

  if (wg == 1) named_barrier_arrive(turn_other, kMmaThreads);  // warpgroup 0 takes the first turn

  int stage = 0;
  uint32_t phase = 0;
  int unit_count = 0;
  for (;;) {
    // The unit of the next Q buffer (the producer's choice and its geometry; -1: no more), read after the
    // buffer's wait. Q is released after the S GEMM of the unit's last stage.
    const int q_slot = unit_count % T::kQStages;
    mbar_wait(&ss.q_full[q_slot], (unit_count / T::kQStages) & 1);
    ++unit_count;
    const UnitSm90 w = load_unit_sm90(&ss.unit[q_slot]);
    if (w.u < 0) break;
    // this thread's rows: absolute positions
    int pos[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) pos[r] = w.t0 + wg * T::kWgRows + warp * 16 + r * 8 + lane / 4;
    const int pos_min = w.t0 + wg * T::kWgRows;  // first row of the warpgroup
    const int len_k = w.len_k;

    clear(tOrO);
    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.f, 0.f};
    float alpha[2];  // rescale of O for the latest stage's reference max
    bool rescale_o = true;  // some reference of the warp moved in the latest stage (else alpha is a no-op)

    // S of a stage: scale (when negative), mask where needed, online softmax; then P from S.
    // Stages this warpgroup's query block does not see (a box of the other block, the filler box of an odd
    // count) are computed like the others and masked out: the main loop has no branch around a wgmma
    // (ptxas serialises wgmma issued under one branch and waited under another, C7514 / C7518).
    auto softmax_stage = [&](const StageSm90& st) {
      const uint32_t seen = ((st.vis[0] >> wg) & 1u) | (((st.vis[1] >> wg) & 1u) << 1);
      if (prescale) {
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i) tSrS(i) *= scale_log2;
      }
      const int k_hi = max(st.k0[0], st.k0[1]) + T::kSubTile;  // one past the last key of the stage
      const bool full = seen == 3u && k_hi <= len_k && (!causal || k_hi - 1 <= pos_min);
      if (!full) C::mask(tSrS, st, seen, len_k, causal, pos);
      rescale_o = C::softmax(tSrS, fold_scale, m, l, alpha);
    };
    auto make_p = [&]() {  // P: the S accumulators as 16-bit A fragments of O += P V
      CUTE_UNROLL
      for (int i = 0; i < size(tOrP32); ++i) tOrP32(i) = pack2<CElem>(tSrS(2 * i), tSrS(2 * i + 1));
    };
    auto advance = [&]() {
      if (++stage == T::kStages) {
        stage = 0;
        phase ^= 1;
      }
    };

    Tensor sQ = make_tensor(make_smem_ptr(ss.q[q_slot] + wg * T::kWgRows * kD), typename T::SmemLayoutQ{});
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);  // (64, D)
    // every unit has at least one stage; its descriptor is the producer's, in the K slot's shared memory
    mbar_wait(&ss.k_full[stage], phase);
    StageSm90 st = load_stage_sm90(&ss.stage[stage]);
    if (st.boxes == 0) {  // a unit that sees nothing: pass the stage (and the turn) through
      mbar_wait(&ss.v_full[stage], phase);  // (keeps the V ring's phases paired with the producer's)
      named_barrier_sync(turn_mine, kMmaThreads);
      named_barrier_arrive(turn_other, kMmaThreads);
      C::release(&ss.k_empty[stage]);
      C::release(&ss.v_empty[stage]);
      C::release(&ss.q_empty[q_slot]);  // (waited for above: the buffer's load is complete)
      advance();
    } else {
      // first stage: S only
      named_barrier_sync(turn_mine, kMmaThreads);
      {
        Tensor sK = make_tensor(make_smem_ptr(ss.k[stage]), typename T::SmemLayoutKV{});  // (128, D)
        wgmma_issue<true, false>(mma_s, tSrQ, thr_s.partition_fragment_B(sK), tSrS);
      }
      named_barrier_arrive(turn_other, kMmaThreads);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
      C::release(&ss.k_empty[stage]);  // K is read by S only
      if (st.last) C::release(&ss.q_empty[q_slot]);  // Q too (warp-uniform; no wgmma in the branch)
      softmax_stage(st);
      make_p();
      int held = stage;  // the stage whose V the pending P V reads
      uint32_t held_phase = phase;
      advance();
      // steady state: S of this stage and P V of the last one issued together, on this warpgroup's turn
      while (!st.last) {
        mbar_wait(&ss.k_full[stage], phase);
        st = load_stage_sm90(&ss.stage[stage]);
        named_barrier_sync(turn_mine, kMmaThreads);
        Tensor sK = make_tensor(make_smem_ptr(ss.k[stage]), typename T::SmemLayoutKV{});   // (128, D)
        Tensor sVt = make_tensor(make_smem_ptr(ss.v[held]), typename T::SmemLayoutVt{});  // (D, 128)
        wgmma_issue<true, false>(mma_s, tSrQ, thr_s.partition_fragment_B(sK), tSrS);
        // V(n - 1) is issued after K(n): S starts as soon as K has landed, P V once V has
        mbar_wait(&ss.v_full[held], held_phase);
        wgmma_issue<false, true>(mma_o, tOrP, thr_o.partition_fragment_B(sVt), tOrO);
        named_barrier_arrive(turn_other, kMmaThreads);
        warpgroup_wait<1>();  // S done; P V may still run
        warpgroup_fence_operand(tSrS);
        C::release(&ss.k_empty[stage]);
        if (st.last) C::release(&ss.q_empty[q_slot]);  // the unit's last S: the next unit's Q may load
        softmax_stage(st);
        block_boundary_after(l[0], l[1]);  // the row sums need every exp2: the softmax stays under P V
        warpgroup_wait<0>();
        warpgroup_fence_operand(tOrO);
        C::release(&ss.v_empty[held]);
        // O to this stage's reference max, before its P V is issued; skipped (warp-uniform branch, no wgmma in
        // it) when no reference of the warp moved, the common case once the rows have seen their largest keys
        if (rescale_o) C::rescale(tOrO, alpha);
        make_p();
        held = stage;
        held_phase = phase;
        advance();
      }
      // the last P V, outside the turns (both warpgroups do it)
      mbar_wait(&ss.v_full[held], held_phase);
      Tensor sVt = make_tensor(make_smem_ptr(ss.v[held]), typename T::SmemLayoutVt{});
      wgmma_issue<false, true>(mma_o, tOrP, thr_o.partition_fragment_B(sVt), tOrO);
      warpgroup_wait<0>();
      warpgroup_fence_operand(tOrO);
      C::release(&ss.v_empty[held]);
    }

    // Epilogue: row sums across the quad, normalise, store.
    float lse[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      float s = l[r];
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      const float inv = s > 0.f ? 1.f / s : 0.f;
      lse[r] = s > 0.f ? (m[r] + __log2f(s)) * kLn2 : -INFINITY;
      CUTE_UNROLL
      for (int t = 0; t < C::kON8; ++t) {
        tOrO(4 * t + 2 * r) *= inv;
        tOrO(4 * t + 2 * r + 1) *= inv;
      }
    }
    CElem* out = static_cast<CElem*>(p.out) + w.b * p.out_stride.batch + w.q_begin * p.out_stride.seq +
                 w.h * p.out_stride.head;
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int P = pos[r];
      const bool keep = P >= w.pos_lo && P < w.pos_hi;  // rows are 16-byte aligned (rows_ok, forward_sm90.cu)
      C::store_row(tOrO, r, 1.f, keep ? out + int64_t(P - w.offset) * p.out_stride.seq : out, keep);
      if (keep && p.lse != nullptr && lane % 4 == 0) {
        p.lse[w.b * p.lse_stride.batch + w.h * p.lse_stride.head + (w.q_begin + P - w.offset) * p.lse_stride.seq] =
            lse[r];
      }
    }
  }
}

}  // namespace s2attn::cuda

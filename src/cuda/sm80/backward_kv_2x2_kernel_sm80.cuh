// The portable (sm_80+) KV kernel of the backward on warp tiles of 2 x 2 (64-key tiles, 64-row steps): the
// same walk, semantics and dQ as backward_kernel_sm80.cuh, with the step split in two phases so that each
// warp's mma fragments serve two m16 tiles instead of one:
//   phase 1, warp (kw, qw) = (w % 2, w / 2): keys [32 kw, +32) x queries [32 qw, +32) of the step:
//            S^T = K Q^T -> P^T (fp32, kept), dP^T = V dO^T -> dS^T = P^T (dP^T - dsum);
//            P^T and dS^T (16-bit, [key][query]) into shared memory; barrier
//   phase 2, warp (kw, dw) = (w % 2, w / 2): keys [32 kw, +32) x head-dim columns [D/2 dw, +D/2):
//            dV += P^T dO, dK += dS^T Q (fp32 registers: 2 x 32 x D/2 per warp, the whole walk)
// ldmatrix.x4 per mma: 112 per 256 (0.44) against the 4-warp x 16-key kernel's 0.625, which left that kernel
// bound by shared-memory reads (docs/cuda_notes.md, sessions 18-19). Shared memory (16-bit elements):
// [K][V][Q0][dO0][Q1][dO1][P^T][dS^T], then fp32 [lse2][dsum] of one step: 112.5 KiB at D = 128, two CTAs
// per SM on sm_90 (228 KiB; with 1 KiB reserved and 64 B static a CTA, 0.9 KiB to spare). The statistics
// are single-buffered (the Q / dO stages are not): the next step's are loaded after the phase barrier, when
// no warp reads this step's.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cuda/sm80/backward_kernel_sm80.cuh"
#include "cuda/sm80/backward_traits_sm80.h"

namespace s2attn::cuda {

// acc = A B^T for this warp's 32 rows of A (keys from key0: two m16 tiles) and 32 rows of B (queries from q0:
// four n8 tiles), k = D; A and B tiles [row][d], swizzled. S^T = K Q^T and dP^T = V dO^T.
template <class T>
__device__ __forceinline__ void kv2x2_warp_products(float (&acc)[2][4][4], const typename T::Elem* sA,
                                                    const typename T::Elem* sB, int key0, int q0) {
  constexpr int kD = T::kHeadDim;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nn = 0; nn < 4; ++nn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nn][e] = 0.f;
  // this lane's ldmatrix byte offsets at k16 step 0: A rows key0 + (lane & 15), chunk lane >> 4; B rows q0 +
  // 8 (lane >> 4) + (lane & 7), chunk (lane >> 3) & 1. Other m16 / n16 tiles: + 16 rows.
  constexpr uint32_t kRows16 = 16 * kD * 2;
  const uint32_t a_off0 = static_cast<uint32_t>(swizzle<kD>(key0 + (lane & 15), lane >> 4)) * 2;
  const uint32_t b_off0 = static_cast<uint32_t>(swizzle<kD>(q0 + (lane >> 4) * 8 + (lane & 7), (lane >> 3) & 1)) * 2;
#pragma unroll
  for (int ks = 0; ks < T::kQkSteps; ++ks) {
    const uint32_t a_at = smem_addr(sA) + k16_step_offset(a_off0, ks);
    const uint32_t b_at = smem_addr(sB) + k16_step_offset(b_off0, ks);
    uint32_t a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) ldmatrix_x4(a[mt], a_at + mt * kRows16);
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t b[4];  // B fragments of n8 tiles 2np ([0..1]) and 2np+1 ([2..3])
      ldmatrix_x4(b, b_at + np * kRows16);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_16816<typename T::Elem>(acc[mt][2 * np], a[mt], b[0], b[1]);
        mma_16816<typename T::Elem>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Row tile mt, n8 tile nn of a kv2x2_warp_products accumulator, 16-bit, into dst [key][query] (P^T, dS^T).
template <class T>
__device__ __forceinline__ void kv2x2_store_tile(typename T::Elem* dst, const float (&acc)[2][4][4], int mt, int nn,
                                                 int key0, int q0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int n = key0 + mt * 16 + (lane >> 2) + 8 * hf;
    *reinterpret_cast<uint32_t*>(dst + swizzle_short<T::kPsChunks>(n, (q0 >> 3) + nn) + 2 * (lane & 3)) =
        pack2<typename T::Elem>(acc[mt][nn][2 * hf], acc[mt][nn][2 * hf + 1]);
  }
}

// Phase 1 of a step for this warp: P^T and dS^T of its 32 keys x 32 queries into sP / sdS.
template <class T, bool kMask>
__device__ __forceinline__ void kv2x2_scores(const typename T::Elem* sK, const typename T::Elem* sV,
                                             const typename T::Elem* sQ, const typename T::Elem* sdO,
                                             typename T::Elem* sP, typename T::Elem* sdS, const float* sL,
                                             const float* sD, float scale_log2, const int (&lo)[4], int hi) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int key0 = (warp & 1) * T::kKeyWarpRows, q0 = (warp >> 1) * T::kQueryWarpCols;

  // S^T = K Q^T, then P^T. Accumulator element (mt, nn, e): key n = key0 + mt * 16 + lane / 4 + 8 * (e / 2)
  // of the tile, query m = q0 + nn * 8 + 2 * (lane % 4) + e % 2 of the step.
  float s[2][4][4];
  kv2x2_warp_products<T>(s, sK, sQ, key0, q0);
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) {
    const int m0 = q0 + nn * 8 + 2 * (lane & 3);
    const float2 l2 = *reinterpret_cast<const float2*>(sL + m0);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = fast_exp2(s[mt][nn][e] * scale_log2 - ((e & 1) ? l2.y : l2.x));
        if constexpr (kMask) {
          const int m = m0 + (e & 1);
          if (m < lo[mt * 2 + (e >> 1)] || m >= hi) p = 0.f;
        }
        s[mt][nn][e] = p;
      }
      kv2x2_store_tile<T>(sP, s, mt, nn, key0, q0);
    }
  }

  // dP^T = V dO^T, then dS^T = P^T (dP^T - dsum) from the fp32 P^T
  float dp[2][4][4];
  kv2x2_warp_products<T>(dp, sV, sdO, key0, q0);
#pragma unroll
  for (int nn = 0; nn < 4; ++nn) {
    const int m0 = q0 + nn * 8 + 2 * (lane & 3);
    const float2 ds = *reinterpret_cast<const float2*>(sD + m0);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[mt][nn][e] = s[mt][nn][e] * (dp[mt][nn][e] - ((e & 1) ? ds.y : ds.x));
      kv2x2_store_tile<T>(sdS, dp, mt, nn, key0, q0);
    }
  }
}

// Phase 2 of a step for this warp: dV += P^T dO and dK += dS^T Q over the step's 64 queries, for its 32
// keys (A: P^T / dS^T rows, [key][query]) and D/2 columns (B: dO / Q, [query][d]: transposed loads).
template <class T>
__device__ __forceinline__ void kv2x2_grads(const typename T::Elem* sQ, const typename T::Elem* sdO,
                                            const typename T::Elem* sP, const typename T::Elem* sdS,
                                            float (&dk)[2][T::kDColTiles][4], float (&dv)[2][T::kDColTiles][4]) {
  using Elem = typename T::Elem;
  constexpr int kD = T::kHeadDim;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int key0 = (warp & 1) * T::kKeyWarpRows, chunk0 = (warp >> 1) * (T::kDCols / 8);
#pragma unroll
  for (int kk = 0; kk < T::kBlockM / 16; ++kk) {
    uint32_t pa[2][4], da[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int at = swizzle_short<T::kPsChunks>(key0 + mt * 16 + (lane & 15), kk * 2 + (lane >> 4));
      ldmatrix_x4(pa[mt], smem_addr(sP + at));
      ldmatrix_x4(da[mt], smem_addr(sdS + at));
    }
    const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int dd = 0; dd < T::kDColTiles / 2; ++dd) {
      uint32_t ob[4], qb[4];  // B fragments of n8 tiles 2dd ([0..1]) and 2dd+1 ([2..3])
      ldmatrix_x4_trans(ob, smem_addr(sdO + swizzle<kD>(row, chunk0 + dd * 2 + (lane >> 4))));
      ldmatrix_x4_trans(qb, smem_addr(sQ + swizzle<kD>(row, chunk0 + dd * 2 + (lane >> 4))));
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_16816<Elem>(dv[mt][2 * dd], pa[mt], ob[0], ob[1]);
        mma_16816<Elem>(dv[mt][2 * dd + 1], pa[mt], ob[2], ob[3]);
        mma_16816<Elem>(dk[mt][2 * dd], da[mt], qb[0], qb[1]);
        mma_16816<Elem>(dk[mt][2 * dd + 1], da[mt], qb[2], qb[3]);
      }
    }
  }
}

// Grid, CTA order and walk as backward_kv_kernel_sm80.
template <class T, bool kList>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocksPerSm)
    backward_kv_2x2_kernel_sm80(const __grid_constant__ AttentionBwdParams params, const KvTileOrder order,
                                const float* lse2, const float* dsum, float* dq_accum) {
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kD = T::kHeadDim;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  Elem* sK = reinterpret_cast<Elem*>(smem_raw);
  Elem* sV = sK + T::kKeyElems;
  Elem* sRows = sV + T::kKeyElems;  // stage s: Q at sRows + 2s * kRowElems, dO right after
  Elem* sP = sRows + T::kStages * 2 * T::kRowElems;
  Elem* sdS = sP + T::kPsElems;
  float* sL = reinterpret_cast<float*>(reinterpret_cast<char*>(smem_raw) + T::kStatsOffsetBytes);
  float* sD = sL + kBlockM;

  const KvCta cta = kv_cta(params, order, kBlockN);
  const int b = cta.b, hk = cta.hk, k0 = cta.k0;
  const SeqGeometry& g = cta.g;
  if (k0 >= g.len_k) return;

  __shared__ WalkGeometry geo;
  BackwardWalk<kBlockM, kList> walk = kv_cta_walk<kBlockN, kBlockM, kList>(geo, params, cta);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t total_q = params.total_q;

  // Prologue: K and V of the tile with the first step in flight.
  load_key_tile<T>(sK, sV, params, cta);
  bool have = walk.first();
  if (have) {
    load_step_rows<T>(sRows, params, cta, geo, walk.head(), walk.p0());
    load_step_stats<kBlockM>(sL, sD, lse2, dsum, total_q, geo, walk.head(), walk.p0());
  }
  cp_async_commit();

  float dk[2][T::kDColTiles][4], dv[2][T::kDColTiles][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int dn = 0; dn < T::kDColTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[mt][dn][e] = dv[mt][dn][e] = 0.f;

  const float scale_log2 = params.scale * kLog2e;
  const int key0 = (warp & 1) * T::kKeyWarpRows;  // this warp's keys in both phases
  int stage = 0;
  while (have) {
    const int h = walk.head(), p0 = walk.p0();
    const uint32_t vis = walk.vis();
    cp_async_wait<0>();
    __syncthreads();  // this step's rows and statistics have landed; every warp is done with the last step
    have = walk.next();
    if (have) load_step_rows<T>(sRows + (stage ^ 1) * 2 * T::kRowElems, params, cta, geo, walk.head(), walk.p0());
    cp_async_commit();
    const Elem* sQ = sRows + stage * 2 * T::kRowElems;
    const Elem* sdO = sQ + T::kRowElems;
    const bool full = vis == geo.all_blocks && geo.k0 + kBlockN <= geo.len_k && p0 >= geo.pos_lo &&
                      p0 + kBlockM <= geo.pos_hi && (!geo.causal || geo.k0 + kBlockN - 1 <= p0);
    if (full) {
      const int none[4] = {0, 0, 0, 0};
      kv2x2_scores<T, false>(sK, sV, sQ, sdO, sP, sdS, sL, sD, scale_log2, none, kBlockM);
    } else {
      // query m of the step sees this thread's key row (mt, hf) iff lo[2 mt + hf] <= m < hi (see StepMask)
      int lo[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int n = key0 + (i >> 1) * 16 + (lane >> 2) + 8 * (i & 1);
        const int t = geo.k0 + n;
        const bool key_ok = ((vis >> (n >> geo.bs_shift)) & 1u) && t < geo.len_k;
        lo[i] = key_ok ? max(geo.pos_lo - p0, geo.causal ? t - p0 : 0) : INT_MAX;
      }
      kv2x2_scores<T, true>(sK, sV, sQ, sdO, sP, sdS, sL, sD, scale_log2, lo, min(geo.pos_hi - p0, kBlockM));
    }
    __syncthreads();  // P^T and dS^T complete; no warp reads this step's statistics any more
    if (have) load_step_stats<kBlockM>(sL, sD, lse2, dsum, total_q, geo, walk.head(), walk.p0());
    cp_async_commit();
    kv2x2_grads<T>(sQ, sdO, sP, sdS, dk, dv);
    if (!params.deterministic) {
      add_step_dq<T>(sK, sdS, p0, geo, dq_accum + (int64_t(h) * total_q + geo.row_base + (p0 - geo.offset)) * kD);
    }
    stage ^= 1;
  }

  // Epilogue: dK * scale and dV through sK / sV (a row's columns come from two warps), then 16-byte stores
  // of the keys < len_k.
  cp_async_wait<0>();  // an empty walk leaves the K / V loads in flight
  __syncthreads();     // every warp is past its last read of sK / sV
  const int chunk0 = (warp >> 1) * (T::kDCols / 8);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = key0 + mt * 16 + (lane >> 2) + 8 * hf;
#pragma unroll
      for (int dn = 0; dn < T::kDColTiles; ++dn) {
        const int at = swizzle<kD>(row, chunk0 + dn) + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(sK + at) =
            pack2<Elem>(dk[mt][dn][2 * hf] * params.scale, dk[mt][dn][2 * hf + 1] * params.scale);
        *reinterpret_cast<uint32_t*>(sV + at) = pack2<Elem>(dv[mt][dn][2 * hf], dv[mt][dn][2 * hf + 1]);
      }
    }
  __syncthreads();
  Elem* dkp = seq_rows(static_cast<Elem*>(params.dk), params.dk_stride, b, g.k_begin, hk);
  Elem* dvp = seq_rows(static_cast<Elem*>(params.dv), params.dv_stride, b, g.k_begin, hk);
  constexpr int kPerThread = kBlockN * T::kChunks / T::kThreads;
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    const int idx = tid + it * T::kThreads;
    const int row = idx / T::kChunks, ch = idx % T::kChunks;
    const int t = k0 + row;
    if (t < g.len_k) {
      *reinterpret_cast<uint4*>(dkp + int64_t(t) * params.dk_stride.seq + ch * 8) =
          *reinterpret_cast<const uint4*>(sK + swizzle<kD>(row, ch));
      *reinterpret_cast<uint4*>(dvp + int64_t(t) * params.dv_stride.seq + ch * 8) =
          *reinterpret_cast<const uint4*>(sV + swizzle<kD>(row, ch));
    }
  }
}

}  // namespace s2attn::cuda

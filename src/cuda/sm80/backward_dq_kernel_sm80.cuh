// dQ of the portable backward in deterministic mode: Q-stationary, the forward's geometry and key-tile walk
// (forward_kernel_sm80.cuh, key_tiles_sm80.cuh). One CTA per (query tile of 64 or 128 rows:
// dq_query_tile_sm80, head, sequence), of the forward's warps (4 x 16 or 4 x 32 rows; 8 x 16 with
// S2ATTN_SM80_FWD_WARP_ROWS = 16); per visible key tile, each warp recomputes
//   S = Q K^T,  P = exp2(S * scale * log2e - lse2),  dP = dO V^T,  dS = P * (dP - dsum)
// and accumulates dQ += dS K in fp32 registers; dQ * scale is written once. Each dQ element is then the
// sum of its terms in one fixed order (key tiles ascending, in one thread), whatever the schedule:
// bitwise repeatable, with no atomics and no dQ workspace, for the price of recomputing S and dP (the
// KV kernel skips its dQ part in this mode: 7 GEMMs per visible tile instead of 5).
//
// Shared memory: [Q][dO][K0][V0][K1][V1], rows of D XOR-swizzled as in the forward.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/ptx_sm80.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm80/backward_traits_sm80.h"
#include "cuda/sm80/forward_kernel_sm80.cuh"  // swizzle, load_rows, fast_exp2, kLog2e
#include "cuda/sm80/key_tiles_sm80.cuh"
#include "cuda/sm80/query_tile_sm80.cuh"

namespace s2attn::cuda {

// One key tile: S, P, dP, dS, dQ += dS K. l2, ds: lse2 and dsum of this thread's rows (mi, hf). qf: Q's
// fragments where they stay in registers (one m16 tile a warp), else read from sQ.
template <class T, bool kMask>
__device__ __forceinline__ void dq_tile(const uint32_t (&qf)[T::kQInRegs ? T::kQkSteps : 1][4],
                                        const typename T::Elem* sQ, const typename T::Elem* sdO,
                                        const typename T::Elem* sK, const typename T::Elem* sV,
                                        float (&dq)[T::kMTiles][T::kDTiles][4], const float (&l2)[T::kMTiles][2],
                                        const float (&ds)[T::kMTiles][2], float scale_log2, int k0, int len_k,
                                        bool causal, uint32_t vis, const int (&pos)[T::kMTiles][2],
                                        const uint32_t (&rowbit)[T::kMTiles][2]) {
  using Elem = typename T::Elem;
  constexpr int kD = T::kHeadDim, kM = T::kMTiles;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // The tile's keys in chunks of kKeyChunk (registers: S and dP of one chunk at a time); per chunk,
  // S = Q K^T and dP = dO V^T (m16 = the warp's rows, n = the chunk's keys, k = D), P and dS, dQ += dS K.
  // Each K / V fragment serves the warp's kM m16 tiles.
  // this lane's ldmatrix byte offsets at k16 step 0 (k16_step_offset; other m16 / n16 tiles: + 16 rows):
  // A (Q, dO) rows warp * kWarpRows + (lane & 15), chunk lane >> 4; B (K, V) rows 8 (lane >> 4) + (lane & 7)
  // of the chunk, chunk (lane >> 3) & 1; B of dQ += dS K (K transposed) rows (lane & 7) + 8 ((lane >> 3) & 1),
  // chunk lane >> 4.
  constexpr uint32_t kRows16 = 16 * kD * 2;
  const uint32_t a_off0 = static_cast<uint32_t>(swizzle<kD>(warp * T::kWarpRows + (lane & 15), lane >> 4)) * 2;
  const uint32_t b_off0 = static_cast<uint32_t>(swizzle<kD>((lane >> 4) * 8 + (lane & 7), (lane >> 3) & 1)) * 2;
  const uint32_t t_off0 = static_cast<uint32_t>(swizzle<kD>((lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4)) * 2;
#pragma unroll 1  // one chunk's registers at a time (unrolled, ptxas interleaves the chunks and spills)
  for (int kc = 0; kc < T::kBlockN / T::kKeyChunk; ++kc) {
    const uint32_t chunk_rows = static_cast<uint32_t>(kc * T::kKeyChunk * kD * 2);  // the chunk's first key
    float s[kM][T::kChunkTiles][4], dp[kM][T::kChunkTiles][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi)
#pragma unroll
      for (int nn = 0; nn < T::kChunkTiles; ++nn)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][nn][e] = dp[mi][nn][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < T::kQkSteps; ++ks) {
      const uint32_t a_off = k16_step_offset(a_off0, ks), b_off = chunk_rows + k16_step_offset(b_off0, ks);
      uint32_t qa[kM][4], oa[kM][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        if constexpr (T::kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mi][e] = qf[ks][e];
        } else {
          ldmatrix_x4(qa[mi], smem_addr(sQ) + a_off + mi * kRows16);
        }
        ldmatrix_x4(oa[mi], smem_addr(sdO) + a_off + mi * kRows16);
      }
#pragma unroll
      for (int np = 0; np < T::kChunkTiles / 2; ++np) {
        uint32_t kb[4], vb[4];  // B fragments of n8 tiles 2np ([0..1]) and 2np+1 ([2..3])
        ldmatrix_x4(kb, smem_addr(sK) + b_off + np * kRows16);
        ldmatrix_x4(vb, smem_addr(sV) + b_off + np * kRows16);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          mma_16816<Elem>(s[mi][2 * np], qa[mi], kb[0], kb[1]);
          mma_16816<Elem>(s[mi][2 * np + 1], qa[mi], kb[2], kb[3]);
          mma_16816<Elem>(dp[mi][2 * np], oa[mi], vb[0], vb[1]);
          mma_16816<Elem>(dp[mi][2 * np + 1], oa[mi], vb[2], vb[3]);
        }
      }
    }

    // P and dS; element (mi, nn, e): row (mi, hf = e / 2) of this thread, key k0 + kc * kKeyChunk + nn * 8 +
    // 2 * (lane % 4) + e % 2. Masked chunks: one bound per row (row_mask_bound_sm80, as the forward).
    int lim[kM][2] = {};
    if constexpr (kMask) {
      const int col = k0 + kc * T::kKeyChunk + (lane & 3) * 2;
#pragma unroll
      for (int mi = 0; mi < kM; ++mi)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
          lim[mi][hf] = row_mask_bound_sm80((vis & rowbit[mi][hf]) != 0, len_k, causal, pos[mi][hf], col);
    }
#pragma unroll
    for (int mi = 0; mi < kM; ++mi)
#pragma unroll
      for (int nn = 0; nn < T::kChunkTiles; ++nn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hf = e >> 1;
          float p = fast_exp2(s[mi][nn][e] * scale_log2 - l2[mi][hf]);
          if constexpr (kMask) p = nn * 8 + (e & 1) <= lim[mi][hf] ? p : 0.f;
          dp[mi][nn][e] = p * (dp[mi][nn][e] - ds[mi][hf]);
        }

    // dQ += dS K: the accumulators of n8 tiles 2kk and 2kk+1 are the A fragment of k16 step kk (keys);
    // K ([key][d] in shared memory) is the B operand: transposed loads.
#pragma unroll
    for (int kk = 0; kk < T::kChunkTiles / 2; ++kk) {
      uint32_t da[kM][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) accum_to_a_frag<Elem>(da[mi], dp[mi][2 * kk], dp[mi][2 * kk + 1]);
#pragma unroll
      for (int dd = 0; dd < T::kDTiles / 2; ++dd) {
        uint32_t kb[4];  // the n16 column pair dd enters as the k16 step does (k16_step_offset)
        ldmatrix_x4_trans(kb, smem_addr(sK) + chunk_rows + k16_step_offset(t_off0, dd) + kk * kRows16);
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) {
          mma_16816<Elem>(dq[mi][2 * dd], da[mi], kb[0], kb[1]);
          mma_16816<Elem>(dq[mi][2 * dd + 1], da[mi], kb[2], kb[3]);
        }
      }
    }
  }
}

// Grid: as the forward's, ((b * Hkv + hk) * query_tiles + x) * G + g for q head h = hk * G + g, x counting
// query tiles from the sequence's last one.
// kList: a block-mask pattern, its row lists walked (KeyTiles<.., true>); else the analytic rules.
template <class T, bool kList>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocksPerSm)
    backward_dq_kernel_sm80(const __grid_constant__ AttentionBwdParams params, int query_tiles, const float* lse2,
                            const float* dsum) {
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kD = T::kHeadDim;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  Elem* sQ = reinterpret_cast<Elem*>(smem_raw);
  Elem* sdO = sQ + T::kQElems;
  Elem* sKV = sdO + T::kQElems;  // stage s: K at sKV + 2s * kTileElems, V right after

  QueryTileSm80 qt;
  if (!query_tile_sm80<kBlockM>(params, query_tiles, qt)) return;
  const int b = qt.b, h = qt.h, hk = qt.hk;
  const SeqGeometry& g = qt.g;
  const int t0 = qt.t0, pos_lo = qt.pos_lo, pos_hi = qt.pos_hi;  // row 0's position; the sequence's rows
  const PatternRules& pattern = params.pattern;
  const bool causal = pattern.causal != 0;
  // Row-blocks: the CTA's rows fall in kBlockM / rb_rows sparse query blocks (host: at most 4).
  const int rb_rows = qt.rb_rows, first_block = qt.first_block;
  const uint32_t active = qt.active;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const Elem* q = seq_rows(static_cast<const Elem*>(params.q), params.q_stride, b, g.q_begin, h);
  const Elem* dout = seq_rows(static_cast<const Elem*>(params.dout), params.dout_stride, b, g.q_begin, h);
  const Elem* k = seq_rows(static_cast<const Elem*>(params.k), params.k_stride, b, g.k_begin, hk);
  const Elem* v = seq_rows(static_cast<const Elem*>(params.v), params.v_stride, b, g.k_begin, hk);

  KeyTiles<kBlockN, kList> tiles;
  tiles.init(pattern, h, first_block, active, g.len_k, pos_hi - 1);

  // Prologue: Q and dO (group 1) and the first K/V tile (group 2) in flight together.
  const int r0 = t0 - g.offset, r_lo = pos_lo - g.offset, r_hi = pos_hi - g.offset;
  load_rows<T, kBlockM>(sQ, q, params.q_stride.seq, r0, r_lo, r_hi, params.q);
  load_rows<T, kBlockM>(sdO, dout, params.dout_stride.seq, r0, r_lo, r_hi, params.dout);
  cp_async_commit();
  bool have = tiles.first();
  if (have) {
    const int k1 = tiles.key_start();
    load_rows<T, kBlockN>(sKV, k, params.k_stride.seq, k1, 0, g.len_k, params.k);
    load_rows<T, kBlockN>(sKV + T::kTileElems, v, params.v_stride.seq, k1, 0, g.len_k, params.v);
  }
  cp_async_commit();

  // This thread's rows (mi, hf): tile row warp * kWarpRows + mi * 16 + hf * 8 + lane / 4; their statistics
  // (a row outside the sequence gets lse2 = +inf: P = 0).
  constexpr int kM = T::kMTiles;
  int pos[kM][2];
  uint32_t rowbit[kM][2];
  float l2[kM][2], ds[kM][2];
  const int64_t row_base = params.cu_seqlens_q != nullptr ? g.q_begin : int64_t(b) * params.seqlen_q;
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = warp * T::kWarpRows + mi * 16 + hf * 8 + lane / 4;
      pos[mi][hf] = t0 + row;
      rowbit[mi][hf] = 1u << (row / rb_rows);
      const bool valid = pos[mi][hf] >= pos_lo && pos[mi][hf] < pos_hi;
      const int64_t at = int64_t(h) * params.total_q + row_base + (pos[mi][hf] - g.offset);
      l2[mi][hf] = valid ? lse2[at] : INFINITY;
      ds[mi][hf] = valid ? dsum[at] : 0.f;
    }

  cp_async_wait<1>();
  __syncthreads();
  uint32_t qf[T::kQInRegs ? T::kQkSteps : 1][4];
  if constexpr (T::kQInRegs) {
#pragma unroll
    for (int ks = 0; ks < T::kQkSteps; ++ks) {
      ldmatrix_x4(qf[ks], smem_addr(sQ + swizzle<kD>(warp * T::kWarpRows + (lane & 15), ks * 2 + (lane >> 4))));
    }
  }

  float dq[kM][T::kDTiles][4];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
#pragma unroll
    for (int dn = 0; dn < T::kDTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) dq[mi][dn][e] = 0.f;

  const float scale_log2 = params.scale * kLog2e;
  int stage = 0;
  while (have) {
    const int k0 = tiles.key_start();
    const uint32_t vis = tiles.vis;
    cp_async_wait<0>();
    __syncthreads();  // this tile has landed; every warp is done with the other stage
    have = tiles.next();
    if (have) {
      Elem* next = sKV + (stage ^ 1) * 2 * T::kTileElems;
      const int k1 = tiles.key_start();
      load_rows<T, kBlockN>(next, k, params.k_stride.seq, k1, 0, g.len_k, params.k);
      load_rows<T, kBlockN>(next + T::kTileElems, v, params.v_stride.seq, k1, 0, g.len_k, params.v);
    }
    cp_async_commit();
    const Elem* sK = sKV + stage * 2 * T::kTileElems;
    const bool full =
        (vis & active) == active && k0 + kBlockN <= g.len_k && (!causal || k0 + kBlockN - 1 <= pos_lo);
    if (full) {
      dq_tile<T, false>(qf, sQ, sdO, sK, sK + T::kTileElems, dq, l2, ds, scale_log2, k0, g.len_k, causal, vis, pos,
                        rowbit);
    } else {
      dq_tile<T, true>(qf, sQ, sdO, sK, sK + T::kTileElems, dq, l2, ds, scale_log2, k0, g.len_k, causal, vis, pos,
                       rowbit);
    }
    stage ^= 1;
  }

  // Epilogue: dQ * scale through this warp's rows of the Q tile, 16-byte stores of the sequence's rows.
  cp_async_wait<0>();
  __syncthreads();  // all warps are past their last read of shared memory
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = warp * T::kWarpRows + mi * 16 + hf * 8 + lane / 4;
#pragma unroll
      for (int dn = 0; dn < T::kDTiles; ++dn) {
        *reinterpret_cast<uint32_t*>(sQ + swizzle<kD>(row, dn) + (lane & 3) * 2) =
            pack2<Elem>(dq[mi][dn][2 * hf] * params.scale, dq[mi][dn][2 * hf + 1] * params.scale);
      }
    }
  __syncwarp();
  // open-coded, not seq_rows: as the forward's output rows (forward_kernel_sm80.cuh)
  Elem* dqp = static_cast<Elem*>(params.dq) + b * params.dq_stride.batch + g.q_begin * params.dq_stride.seq +
              h * params.dq_stride.head;
  constexpr int kPerLane = T::kWarpRows * T::kChunks / 32;
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const int idx = lane + it * 32;
    const int row = warp * T::kWarpRows + idx / T::kChunks, ch = idx % T::kChunks;
    const int p = t0 + row;
    if (p >= pos_lo && p < pos_hi) {
      *reinterpret_cast<uint4*>(dqp + int64_t(p - g.offset) * params.dq_stride.seq + ch * 8) =
          *reinterpret_cast<const uint4*>(sQ + swizzle<kD>(row, ch));
    }
  }
}

}  // namespace s2attn::cuda

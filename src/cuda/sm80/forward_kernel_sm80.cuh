// The portable (sm_80+) S2 forward kernel, FlashAttention-2 style: one CTA of 4 warps per (query tile,
// head, sequence); Q tile in shared memory then registers, K/V tiles double-buffered with cp.async,
// S = Q K^T and O += P V on mma.sync m16n8k16 tensor cores, online softmax in fp32 registers (log2
// domain). Only the visible key tiles are visited (key_tiles_sm80.cuh); a tile is element-masked only when
// it crosses the causal diagonal, the end of the keys, or a row-block that does not see it.
//
// Shared memory (16-bit elements, rows of D, 16-byte chunks XOR-swizzled by row so that ldmatrix and
// cp.async are bank-conflict free): [Q: kBlockM rows][K0][V0][K1][V1] (kBlockN rows each).
//
// Semantics (as the CPU backend): query row r of sequence b sits at absolute position
// P = offset + r; it sees key t iff attends(pattern, h, P / bs, t / bs) && (!causal || t <= P) &&
// t < len_k; rows at P < 0 see nothing. A row that sees nothing gets out 0 and lse -inf.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/ptx_sm80.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/common/smem_swizzle.cuh"
#include "cuda/sm80/forward_traits_sm80.h"
#include "cuda/sm80/key_tiles_sm80.cuh"
#include "cuda/sm80/query_tile_sm80.cuh"

namespace s2attn::cuda {

// cp.async of tile rows [0, kRows): tile row x <- operand row row0 + x (row stride `stride` elements from
// `base`); rows outside [lo, hi) are zero-filled (`safe` is any valid global address for them).
// A thread copies the same 16-byte chunk of rows x0, x0 + kRowsPerPass, ...: one source address and one
// bound test set up per call, then a 64-bit add per row. (From a signed `(tid + it * kThreads) % kChunks`
// per copy, ptxas kept one 64-bit source address per copy and spilled them, ~23 instructions per copy: sm_90
// build of the forward at D = 128, 272 bytes of spills then, 124 with this and the softmax changes below.)
template <class T, int kRows>
__device__ __forceinline__ void load_rows(typename T::Elem* tile, const typename T::Elem* base, int64_t stride,
                                          int row0, int lo, int hi, const void* safe) {
  constexpr int kPerThread = kRows * T::kChunks / T::kThreads, kRowsPerPass = T::kThreads / T::kChunks;
  static_assert(T::kThreads % T::kChunks == 0, "a thread copies the same chunk of each of its rows");
  const int c = static_cast<int>(threadIdx.x % T::kChunks), x0 = static_cast<int>(threadIdx.x / T::kChunks);
  // the address as an integer: rows before `base` (zero-filled, never read) are formed without pointer UB
  uintptr_t src = reinterpret_cast<uintptr_t>(base) +
                  static_cast<uintptr_t>((int64_t(row0 + x0) * stride + c * 8) * int64_t(sizeof(typename T::Elem)));
  const uintptr_t step = static_cast<uintptr_t>(int64_t(kRowsPerPass) * stride * int64_t(sizeof(typename T::Elem)));
  // row0 + x in [lo, hi) as one unsigned compare
  const uint32_t first = static_cast<uint32_t>(row0 + x0 - lo), span = static_cast<uint32_t>(max(hi - lo, 0));
#pragma unroll
  for (int it = 0; it < kPerThread; ++it) {
    const bool valid = first + static_cast<uint32_t>(it * kRowsPerPass) < span;
    const void* from = valid ? reinterpret_cast<const void*>(src) : safe;
    cp_async_16(smem_addr(tile + swizzle<T::kHeadDim>(x0 + it * kRowsPerPass, c)), from, valid);
    src += step;
  }
}

// The element mask of a key tile as one bound per row: the row's last visible key relative to `col`, this
// thread's first column of the tile; the element at compile-time column offset c is visible iff c <= the
// bound. >= -1 (all masked), so rows far before the keys do not overflow. The forward measured 0.9-3.5%
// faster with it (H100, session 13 A/B, bench/results/ab_sm80_mask_2026-12-06_s13.txt); the dQ kernel, then
// at 255 registers with spills, 2.8-4.3% slower. The dQ kernel uses it again since its 128-row tiles.
__device__ __forceinline__ int row_mask_bound_sm80(bool row_sees_tile, int len_k, bool causal, int pos, int col) {
  int last = row_sees_tile ? len_k - 1 : -1;
  if (causal) last = min(last, pos);
  return max(last, col - 1) - col;
}

// Per-thread state of the online softmax: each thread holds two rows (g and g + 8) of each m16 tile.
template <class T>
struct SoftmaxState {
  float m[T::kMTiles][2];  // running max, log2 domain (scaled scores)
  float l[T::kMTiles][2];  // this thread's part of the running sum
};

// One key tile: S = Q K^T, (mask), online softmax, O += P V. kMask = false: every element visible and
// scale_log2 > 0, so the row max is taken on the raw scores and the scaling folds into the exp2's argument
// (one FFMA per element in place of an FMUL and an FADD); the caller sends other tiles through kMask.
template <class T, bool kMask>
__device__ __forceinline__ void attend_tile(const uint32_t (&qf)[T::kQInRegs ? T::kMTiles : 1][T::kQkSteps][4],
                                            const typename T::Elem* sQ, const typename T::Elem* sK,
                                            const typename T::Elem* sV, float (&o)[T::kMTiles][T::kDTiles][4],
                                            SoftmaxState<T>& st, float scale_log2, int k0, int len_k,
                                            bool causal, uint32_t vis, const int (&pos)[T::kMTiles][2],
                                            const uint32_t (&rowbit)[T::kMTiles][2]) {
  using Elem = typename T::Elem;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // S = Q K^T  (kMTiles x kNTiles m16n8 tiles per warp)
  float s[T::kMTiles][T::kNTiles][4];
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int nn = 0; nn < T::kNTiles; ++nn)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mi][nn][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < T::kQkSteps; ++ks) {
    uint32_t a[T::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
      if constexpr (T::kQInRegs) {
#pragma unroll
        for (int e = 0; e < 4; ++e) a[mi][e] = qf[mi][ks][e];
      } else {
        const int row = warp * T::kWarpRows + mi * 16 + (lane & 15);
        ldmatrix_x4(a[mi], smem_addr(sQ + swizzle<T::kHeadDim>(row, ks * 2 + (lane >> 4))));
      }
    }
#pragma unroll
    for (int np = 0; np < T::kNTiles / 2; ++np) {
      uint32_t kb[4];  // B fragments of n8 tiles 2np (kb[0..1]) and 2np+1 (kb[2..3])
      const int row = np * 16 + (lane >> 4) * 8 + (lane & 7);
      ldmatrix_x4(kb, smem_addr(sK + swizzle<T::kHeadDim>(row, ks * 2 + ((lane >> 3) & 1))));
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        mma_16816<Elem>(s[mi][2 * np], a[mi], kb[0], kb[1]);
        mma_16816<Elem>(s[mi][2 * np + 1], a[mi], kb[2], kb[3]);
      }
    }
  }

  // Scale into the log2 domain, then mask (after scaling: a negative scale must not flip -inf). A row's
  // visible keys in the tile are a prefix: one bound per row, `last visible key - this thread's first
  // column`, then one compare against a compile-time column and one select per element (the per-element
  // three-term && cost the masked tile ~630 more SASS instructions, sm_90 build; the Hopper forward's mask
  // measured +0.83 -> +0.04 us a masked warpgroup-stage with the same change, docs/hopper_notes.md).
  if constexpr (kMask) {
    int lim[T::kMTiles][2];
    const int col = k0 + (lane & 3) * 2;
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
        lim[mi][hf] = row_mask_bound_sm80((vis & rowbit[mi][hf]) != 0, len_k, causal, pos[mi][hf], col);
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int nn = 0; nn < T::kNTiles; ++nn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float v = s[mi][nn][e] * scale_log2;
          s[mi][nn][e] = nn * 8 + (e & 1) <= lim[mi][e >> 1] ? v : -INFINITY;
        }
  }

  // Online softmax: new running max (the 4 lanes of a row hold its columns), probabilities, rescale. The
  // O rescale (128 FMUL a tile at D = 128) is skipped when no row max of the warp moved (alpha == 1 for
  // every row: the product would be exact anyway), as the Hopper forward does.
  float alpha[T::kMTiles][2];
  bool moved = false;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = -INFINITY;
#pragma unroll
      for (int nn = 0; nn < T::kNTiles; ++nn) mx = fmaxf(mx, fmaxf(s[mi][nn][2 * hf], s[mi][nn][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      if constexpr (!kMask) mx *= scale_log2;  // scale_log2 > 0: the max of the scaled scores
      const float m_new = fmaxf(st.m[mi][hf], mx);
      const float ref = m_new == -INFINITY ? 0.f : m_new;  // a row that has seen nothing stays at 0
      alpha[mi][hf] = fast_exp2(st.m[mi][hf] - ref);
      moved |= m_new != st.m[mi][hf];
      st.m[mi][hf] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nn = 0; nn < T::kNTiles; ++nn)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float x = s[mi][nn][2 * hf + e];
          const float p = fast_exp2(kMask ? x - ref : fmaf(x, scale_log2, -ref));
          s[mi][nn][2 * hf + e] = p;
          sum += p;
        }
      st.l[mi][hf] = st.l[mi][hf] * alpha[mi][hf] + sum;
    }
  if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int dn = 0; dn < T::kDTiles; ++dn)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mi][dn][e] *= alpha[mi][e >> 1];
  }

  // O += P V: the S accumulators of n8 tiles 2kk and 2kk+1 are the A fragment of k16 step kk.
#pragma unroll
  for (int kk = 0; kk < T::kPvSteps; ++kk) {
    uint32_t pa[T::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
      accum_to_a_frag<Elem>(pa[mi], s[mi][2 * kk], s[mi][2 * kk + 1]);
    }
#pragma unroll
    for (int dp = 0; dp < T::kDTiles / 2; ++dp) {
      uint32_t vb[4];  // B fragments of n8 tiles 2dp (vb[0..1]) and 2dp+1 (vb[2..3])
      const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      ldmatrix_x4_trans(vb, smem_addr(sV + swizzle<T::kHeadDim>(row, dp * 2 + (lane >> 4))));
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        mma_16816<Elem>(o[mi][2 * dp], pa[mi], vb[0], vb[1]);
        mma_16816<Elem>(o[mi][2 * dp + 1], pa[mi], vb[2], vb[3]);
      }
    }
  }
}

// Grid: one CTA per (query tile, head, sequence), flattened as ((b * Hkv + hk) * query_tiles + x) * G + g
// for query head h = hk * G + g (G = H / Hkv), where x counts query tiles from the sequence's last one.
// CTAs start roughly in index order, so
//  - the q heads of one KV head run side by side on the same K/V tiles;
//  - the query tiles of one KV head run together: they share its vertical blocks and overlapping local
//    windows, and one KV head's K/V (16 MiB at 32k tokens, D = 128) stays in L2 while they run;
//  - within a KV head the tiles with the most work (the latest rows under causality) start first, and
//    the grid ends on short tiles (longest-processing-time-first order, a short tail).
// kList: a block-mask pattern, its row lists walked (KeyTiles<.., true>); else the analytic rules.
template <class T, bool kList>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocksPerSm)
    forward_kernel_sm80(const __grid_constant__ AttentionParams params, int query_tiles) {
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kD = T::kHeadDim;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  Elem* sQ = reinterpret_cast<Elem*>(smem_raw);
  Elem* sKV = sQ + T::kQElems;  // stage s: K at sKV + 2s * kTileElems, V right after

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
  const Elem* k = seq_rows(static_cast<const Elem*>(params.k), params.k_stride, b, g.k_begin, hk);
  const Elem* v = seq_rows(static_cast<const Elem*>(params.v), params.v_stride, b, g.k_begin, hk);

  KeyTiles<kBlockN, kList> tiles;
  tiles.init(pattern, h, first_block, active, g.len_k, pos_hi - 1);

  // Prologue: Q (group 1) and the first K/V tile (group 2) in flight together.
  load_rows<T, kBlockM>(sQ, q, params.q_stride.seq, t0 - g.offset, pos_lo - g.offset, pos_hi - g.offset, params.q);
  cp_async_commit();
  bool have = tiles.first();
  if (have) {
    const int k0 = tiles.key_start();
    load_rows<T, kBlockN>(sKV, k, params.k_stride.seq, k0, 0, g.len_k, params.k);
    load_rows<T, kBlockN>(sKV + T::kTileElems, v, params.v_stride.seq, k0, 0, g.len_k, params.v);
  }
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  uint32_t qf[T::kQInRegs ? T::kMTiles : 1][T::kQkSteps][4];
  if constexpr (T::kQInRegs) {
#pragma unroll
    for (int ks = 0; ks < T::kQkSteps; ++ks) {
      const int row = warp * T::kWarpRows + (lane & 15);
      ldmatrix_x4(qf[0][ks], smem_addr(sQ + swizzle<kD>(row, ks * 2 + (lane >> 4))));
    }
  }

  // This thread's rows: (mi, hf) -> tile row warp * kWarpRows + mi * 16 + hf * 8 + lane / 4.
  int pos[T::kMTiles][2];
  uint32_t rowbit[T::kMTiles][2];
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = warp * T::kWarpRows + mi * 16 + hf * 8 + lane / 4;
      pos[mi][hf] = t0 + row;
      rowbit[mi][hf] = 1u << (row / rb_rows);
    }

  float o[T::kMTiles][T::kDTiles][4];
  SoftmaxState<T> st;
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
    for (int dn = 0; dn < T::kDTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][dn][e] = 0.f;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      st.m[mi][hf] = -INFINITY;
      st.l[mi][hf] = 0.f;
    }
  }

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
    const bool full = (vis & active) == active && k0 + kBlockN <= g.len_k &&
                      (!causal || k0 + kBlockN - 1 <= pos_lo) && scale_log2 > 0.f;
    if (full) {
      attend_tile<T, false>(qf, sQ, sK, sK + T::kTileElems, o, st, scale_log2, k0, g.len_k, causal, vis, pos, rowbit);
    } else {
      attend_tile<T, true>(qf, sQ, sK, sK + T::kTileElems, o, st, scale_log2, k0, g.len_k, causal, vis, pos, rowbit);
    }
    stage ^= 1;
  }

  // Epilogue: normalise, stage O through this warp's rows of the Q tile, 16-byte stores; lse per row.
  float lse[T::kMTiles][2];
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = st.l[mi][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      lse[mi][hf] = l > 0.f ? (st.m[mi][hf] + __log2f(l)) * kLn2 : -INFINITY;
#pragma unroll
      for (int dn = 0; dn < T::kDTiles; ++dn) {
        o[mi][dn][2 * hf] *= inv;
        o[mi][dn][2 * hf + 1] *= inv;
      }
    }
  __syncthreads();  // all warps are past their last read of shared memory
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = warp * T::kWarpRows + mi * 16 + hf * 8 + lane / 4;
#pragma unroll
      for (int dn = 0; dn < T::kDTiles; ++dn) {
        *reinterpret_cast<uint32_t*>(sQ + swizzle<kD>(row, dn) + (lane & 3) * 2) =
            pack2<Elem>(o[mi][dn][2 * hf], o[mi][dn][2 * hf + 1]);
      }
    }
  __syncwarp();
  // open-coded, not seq_rows: through it ptxas (CUDA 13.0, sm_90) forms each store address below in 64 bits
  // (~200 more SASS instructions a CTA)
  Elem* out = static_cast<Elem*>(params.out) + b * params.out_stride.batch + g.q_begin * params.out_stride.seq +
              h * params.out_stride.head;
  constexpr int kPerLane = T::kWarpRows * T::kChunks / 32;
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const int idx = lane + it * 32;
    const int row = warp * T::kWarpRows + idx / T::kChunks, c = idx % T::kChunks;
    const int p = t0 + row;
    if (p >= pos_lo && p < pos_hi) {
      *reinterpret_cast<uint4*>(out + (p - g.offset) * params.out_stride.seq + c * 8) =
          *reinterpret_cast<const uint4*>(sQ + swizzle<kD>(row, c));
    }
  }
  if (params.lse != nullptr && (lane & 3) == 0) {
    float* lse_base = params.lse + b * params.lse_stride.batch + h * params.lse_stride.head +
                      g.q_begin * params.lse_stride.seq;
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int p = pos[mi][hf];
        if (p >= pos_lo && p < pos_hi) lse_base[(p - g.offset) * params.lse_stride.seq] = lse[mi][hf];
      }
  }
}

}  // namespace s2attn::cuda

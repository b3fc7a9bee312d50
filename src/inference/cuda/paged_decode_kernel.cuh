// Paged attention, SIMT kernel (portable, sm_80+): the fp32 path (16-bit caches take the tensor-core kernel,
// paged_mma_kernel.cuh). One CTA per (sequence, KV head, head chunk,
// split, query-row tile): its ROWS packed rows are (q head of the KV group) x (query row), so every K/V byte
// a group needs is read once for all its heads. The CTA walks the union of the visible key blocks of its
// rows (analytic rules, enumerated in registers: no index tensor), restricted to its split's key-block
// range; each key block is gathered through the block table into shared memory with 16-byte cp.async
// (double-buffered, zero-filled past the context or for an out-of-range table entry), and pages no row
// needs are never touched. Per-row block visibility (per-head patterns) and the causal cut are masks.
//
// Math: lanes split the head dim (kVec elements = 16 bytes each), kLanesPerKey lanes per key, so a warp
// scores kKeysPerWarp keys at once; a shuffle reduction finishes each dot product. Every key group keeps
// its own online-softmax state (max, sum, output slice) for its keys, and the kGroups states are merged
// once at the end through shared memory: no block-wide synchronisation per key.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/ptx_sm80.cuh"
#include "inference/cuda/paged_elem.cuh"
#include "inference/cuda/paged_output.cuh"
#include "inference/cuda/paged_tma.h"
#include "inference/cuda/paged_walk.cuh"
#include "inference/paged_params.h"
#include "inference/paged_workspace.h"
#include "inference/split_ranges.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

template <typename T, int D, int ROWS>
struct PagedDecodeTraits {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kVec = 16 / int(sizeof(T));  // elements per 16-byte chunk
  static constexpr int kLanesPerKey = D / kVec;
  static_assert(kLanesPerKey >= 1 && kLanesPerKey <= 32 && 32 % kLanesPerKey == 0, "head dim / lanes");
  static constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  static constexpr int kGroups = kWarps * kKeysPerWarp;  // independent softmax states per CTA
  // Keys per shared-memory tile: 64 (16-bit) or 32 (fp32) rows of D: 2 stages x (K, V) = 64 KiB at D=128.
  static constexpr int kTileKeys = sizeof(T) == 4 ? 32 : 64;
  static constexpr int kStages = 2;
  static constexpr int kTileElems = kTileKeys * D;
  static constexpr int kPipeBytes = kStages * 2 * kTileElems * int(sizeof(T)) + kStages * kTileKeys;
  static constexpr int kMergeBytes = kGroups * ROWS * (D + 2) * int(sizeof(float));
  static constexpr int kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
};

template <typename T, int D, int ROWS, bool kList>
__global__ void __launch_bounds__(PagedDecodeTraits<T, D, ROWS>::kThreads)
    paged_decode_kernel(const PagedParams p, const __grid_constant__ PagedTmaMaps /* the tensor-core kernels' */,
                        int32_t heads_per_cta, int32_t rows_per_head, int32_t head_chunks, int32_t q_tiles) {
  using Tr = PagedDecodeTraits<T, D, ROWS>;
  constexpr int kVec = Tr::kVec, kLpk = Tr::kLanesPerKey, kTile = Tr::kTileKeys;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sk = reinterpret_cast<T*>(smem);                       // [stages][kTile][D]
  T* sv = sk + Tr::kStages * Tr::kTileElems;                 // [stages][kTile][D]
  uint8_t* sok = reinterpret_cast<uint8_t*>(sv + Tr::kStages * Tr::kTileElems);  // [stages][kTile]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const CtaCoords k = cta_coords(p, heads_per_cta, head_chunks);
  const int32_t split = k.split;
  const int32_t bs = p.pattern.block_size;
  const int64_t row_base = p.q_begin(k.b) + (p.cu_seqlens_q ? 0 : int64_t(k.b) * p.q_len);  // workspace row

  for (int32_t qt = blockIdx.y; qt < q_tiles; qt += gridDim.y) {
    CtaRows c;
    int32_t pos0, j_lo, j_hi;
    if (!cta_rows<kList>(p, k, qt, rows_per_head, &c, &pos0, &j_lo, &j_hi)) break;  // varlen: past the rows

    // Packed row rr = g * rows_per_head + qi: q head h0 + g, query row r0 + qi.
    float q[ROWS][kVec], o[ROWS][kVec], m[ROWS], l[ROWS];
    int32_t pos[ROWS];
    const int lk = lane % kLpk;  // this lane's slice of the head dim: [lk * kVec, (lk + 1) * kVec)
    const float qscale = p.scale * 1.4426950408889634f;
#pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) {
      const int g = rr / rows_per_head, qi = rr % rows_per_head;
      const bool live = g < c.nh && qi < c.nq;
      pos[rr] = live ? pos0 + qi : -1;  // a dead row has position -1: it sees nothing
      m[rr] = -INFINITY;
      l[rr] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) o[rr][e] = 0.f;
      if (live) {
        const T* src = static_cast<const T*>(p.q) + c.b * p.q_stride.batch +
                       (p.q_begin(c.b) + c.r0 + qi) * p.q_stride.seq + (c.h0 + g) * p.q_stride.head + lk * kVec;
        load_vec<T, kVec>(src, q[rr], qscale);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) q[rr][e] = 0.f;
      }
    }

    // Tile walk: (block j, sub-tile st) of kTile keys; j from the union enumerator within [j_lo, j_hi).
    const int32_t j_end = j_hi;  // (causal: the enumerator stops at the rows' last query block anyway)
    auto keys_in = [&](int32_t j) { return imin(bs, c.ctx - j * bs); };
    auto issue = [&](int32_t j, int32_t st, int stage) {
      const int32_t t0 = j * bs + st * kTile;
      const int32_t n = imin(kTile, keys_in(j) - st * kTile);
      T* dk = sk + stage * Tr::kTileElems;
      T* dv = sv + stage * Tr::kTileElems;
      for (int ch = tid; ch < kTile * kLpk; ch += Tr::kThreads) {
        const int r = ch / kLpk, part = ch % kLpk;
        const int32_t t = t0 + r;
        bool ok = r < n;
        int32_t entry = 0;
        if (ok) {
          entry = p.page_entry(c.b, c.hk, t / p.page_size);
          ok = entry >= 0 && entry < p.num_pages;
        }
        const int64_t off = ok ? int64_t(t % p.page_size) : 0;
        const T* ksrc = static_cast<const T*>(p.k_pages);
        const T* vsrc = static_cast<const T*>(p.v_pages);
        if (ok) {
          ksrc += entry * p.k_page_stride + off * p.k_token_stride + c.hk * p.k_head_stride + part * kVec;
          vsrc += entry * p.v_page_stride + off * p.v_token_stride + c.hk * p.v_head_stride + part * kVec;
        }
        cp_async_16(smem_addr(dk + r * D + part * kVec), ksrc, ok);
        cp_async_16(smem_addr(dv + r * D + part * kVec), vsrc, ok);
        if (part == 0) sok[stage * kTile + r] = ok ? 1 : 0;
      }
      cp_async_commit();
    };

    int32_t j = next_union_block<kList>(p.pattern, c, j_lo, j_end), st = 0;
    int stage = 0;
    if (j < j_end) issue(j, st, stage);
    while (j < j_end) {
      // the next tile, prefetched while this one is computed
      int32_t jn = j, stn = st + 1;
      if (stn * kTile >= keys_in(j)) {
        jn = next_union_block<kList>(p.pattern, c, j + 1, j_end);
        stn = 0;
      }
      if (jn < j_end) {
        issue(jn, stn, stage ^ 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();

      // which packed rows see block j at all (per-head patterns, the rows' query blocks)
      uint32_t vis = 0;
#pragma unroll
      for (int rr = 0; rr < ROWS; ++rr) {
        const int32_t i = pos[rr] >= 0 ? pos[rr] / bs : -1;
        if constexpr (kList) {
          if (pos[rr] >= 0 && mask_list_attends(p.pattern, c.h0 + rr / rows_per_head, i, j)) vis |= 1u << rr;
        } else {
          if (pos[rr] >= 0 && attends(p.pattern, c.h0 + rr / rows_per_head, i, j)) vis |= 1u << rr;
        }
      }
      const T* tk = sk + stage * Tr::kTileElems;
      const T* tv = sv + stage * Tr::kTileElems;
      const int32_t t0 = j * bs + st * kTile;
      const int32_t n = imin(kTile, keys_in(j) - st * kTile);
      for (int32_t k0 = warp * Tr::kKeysPerWarp; k0 < n; k0 += Tr::kGroups) {  // warp-uniform trip count
        const int32_t kk = k0 + lane / kLpk;
        const bool key_ok = kk < n && sok[stage * kTile + imin(kk, kTile - 1)] != 0;
        const int32_t t = t0 + kk;
        float kf[kVec], vf[kVec];
        load_vec<T, kVec>(tk + imin(kk, kTile - 1) * D + lk * kVec, kf, 1.f);
        load_vec<T, kVec>(tv + imin(kk, kTile - 1) * D + lk * kVec, vf, 1.f);
        // All rows' dot products first (independent FMA and shuffle chains the scheduler can interleave),
        // then branch-free online-softmax updates: a row that does not see the key gets score -inf, so
        // its update is the identity (alpha 1, p 0, o kept); a row that has seen nothing keeps m = -inf,
        // l = o = 0. (Before: one `if (see)` per row, divergent between the warp's two keys, serialised.)
        float sc[ROWS];
#pragma unroll
        for (int rr = 0; rr < ROWS; ++rr) {
          float s = 0.f;
#pragma unroll
          for (int e = 0; e < kVec; ++e) s = fmaf(q[rr][e], kf[e], s);
          sc[rr] = s;
        }
#pragma unroll
        for (int w = kLpk / 2; w >= 1; w /= 2) {
#pragma unroll
          for (int rr = 0; rr < ROWS; ++rr) sc[rr] += __shfl_xor_sync(0xffffffffu, sc[rr], w);
        }
#pragma unroll
        for (int rr = 0; rr < ROWS; ++rr) {
          const bool see = key_ok && ((vis >> rr) & 1u) && (p.pattern.causal ? t <= pos[rr] : t < c.ctx);
          const float s = see ? sc[rr] : -INFINITY;
          const float m_new = fmaxf(m[rr], s);
          const float m_ref = m_new == -INFINITY ? 0.f : m_new;  // no key yet: exp2(-inf - 0) = 0, never NaN
          const float alpha = exp2f(m[rr] - m_ref);
          const float pr = exp2f(s - m_ref);
          l[rr] = fmaf(l[rr], alpha, pr);
          m[rr] = m_new;
          // a select, not 0 * v: keys a row does not see may hold anything (even NaN) and must not leak in
#pragma unroll
          for (int e = 0; e < kVec; ++e) o[rr][e] = see ? fmaf(o[rr][e], alpha, pr * vf[e]) : o[rr][e];
        }
      }
      __syncthreads();  // the stage is refilled two tiles from now
      j = jn;
      st = stn;
      stage ^= 1;
    }

    // Merge the kGroups states: [group][row] max and sum, [group][row][D] outputs.
    float* mm = reinterpret_cast<float*>(smem);
    float* ll = mm + Tr::kGroups * ROWS;
    float* oo = ll + Tr::kGroups * ROWS;
    const int grp = warp * Tr::kKeysPerWarp + lane / kLpk;
#pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) {
      if (lk == 0) {
        mm[grp * ROWS + rr] = m[rr];
        ll[grp * ROWS + rr] = l[rr];
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) oo[(grp * ROWS + rr) * D + lk * kVec + e] = o[rr][e];
    }
    __syncthreads();
    const bool split_out = p.num_splits > 1;
    const PagedWorkspace ws =
        split_out ? PagedWorkspace::carve(p.workspace, p.num_splits, p.total_q, p.num_heads, D) : PagedWorkspace{};
    for (int idx = tid; idx < ROWS * D; idx += Tr::kThreads) {
      const int rr = idx / D, d = idx % D;
      const int g = rr / rows_per_head, qi = rr % rows_per_head;
      if (g >= c.nh || qi >= c.nq) continue;
      float M = -INFINITY;
      for (int gi = 0; gi < Tr::kGroups; ++gi) M = fmaxf(M, mm[gi * ROWS + rr]);
      float L = 0.f, O = 0.f;
      if (M > -INFINITY) {
        for (int gi = 0; gi < Tr::kGroups; ++gi) {
          const float w = exp2f(mm[gi * ROWS + rr] - M);  // exp2(-inf) = 0 for empty groups
          L = fmaf(ll[gi * ROWS + rr], w, L);
          O = fmaf(oo[(gi * ROWS + rr) * D + d], w, O);
        }
      }
      const float out[1] = {O};
      store_paged_output<T>(p, ws, c, split, row_base, c.h0 + g, c.r0 + qi, d, D, out, L, M);
    }
    __syncthreads();  // shared memory is reused by the next query tile
  }
}

}  // namespace s2attn::cuda

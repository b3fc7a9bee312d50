// The portable (sm_80+) S2 backward, KV-stationary (FlashAttention-2 style): one CTA of 4 warps per
// (key tile of 64 keys, KV head, sequence). K and V of the tile sit in shared memory for the whole CTA;
// it walks, for each q head of the group, the query steps that see its key blocks (BackwardWalk), with Q,
// dO and the rows' statistics double-buffered by cp.async. Per step, each warp (16 keys) computes on
// mma.sync m16n8k16:
//   S^T = K Q^T,  P^T = exp2(S^T * scale * log2e - lse2)   (lse2: the forward's lse in log2 units)
//   dP^T = V dO^T,  dS^T = P^T * (dP^T - dsum)             (dsum = rowsum(dO * O), the pre-pass)
//   dV += P^T dO,  dK += dS^T Q                            (fp32 registers, summed over the group's heads)
// then dS^T goes through shared memory and the 4 warps compute dQ (kBlockM x D) = dS K and add it to the
// fp32 accumulator in the workspace with atomics (skipped in deterministic mode: the dQ kernel does it).
// dK is scaled by `scale` once at the end (dQ in the post-process). A step is element-masked only when it
// crosses the causal diagonal, the end of the keys or of the rows, or a key block its query block does
// not see. A row that saw nothing has lse2 = +inf: P = 0, so its gradients are 0, never NaN.
//
// Shared memory (16-bit elements): [K][V][Q0][dO0][Q1][dO1][dS^T] with rows of D XOR-swizzled as in the
// forward, dS^T [key][query] swizzled by 16-byte chunk too; then fp32 [lse2_0][dsum_0][lse2_1][dsum_1].
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/kv_tile_order.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/ptx_sm80.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm80/backward_query_tiles_sm80.cuh"
#include "cuda/sm80/backward_traits_sm80.h"
#include "cuda/sm80/forward_kernel_sm80.cuh"  // swizzle, load_rows, fast_exp2, kLog2e

namespace s2attn::cuda {

// Element offset of (row, 16-byte chunk) in a tile whose rows hold kRowChunks chunks (2, 4 or 8): the
// chunk is XOR-ed with bits of the row so that the 8 rows one ldmatrix phase reads hit distinct banks.
template <int kRowChunks>
__device__ __forceinline__ int swizzle_short(int row, int chunk) {
  return row * kRowChunks * 8 + ((chunk ^ ((row / (8 / kRowChunks)) & (kRowChunks - 1))) << 3);
}

// The element mask of a masked step, per thread: query m of the step (0 <= m < kBlockM) sees this thread's
// key row hf iff lo[hf] <= m < hi. lo folds the key's validity (its key block is visible, it is a key of
// the sequence; else lo = INT_MAX) and the causal cut (m >= key position - p0); [.., hi) the rows of the
// sequence. Three registers instead of the tile's geometry.
struct StepMask {
  int lo[2];
  int hi;
};

// Non-deterministic mode: dQ (kBlockM x D) of a step = dS K, from dS^T [key][query] and K in shared memory
// (both complete: the caller's barrier), added to the fp32 accumulator rows with atomics (rows of the
// sequence only). dq_rows: the accumulator's row of query position p0 (row stride D).
template <class T>
__device__ __forceinline__ void add_step_dq(const typename T::Elem* sK, const typename T::Elem* sdS, int p0,
                                            const WalkGeometry& geo, float* dq_rows) {
  using Elem = typename T::Elem;
  constexpr int kD = T::kHeadDim;
  constexpr int kDsChunks = T::kBlockM / 8;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // This warp: query rows [rt * 16, rt * 16 + 16) of the step, columns [cg * kDqCols, +kDqCols) of dQ.
  const int rt = warp % T::kDqRowTiles, cg = warp / T::kDqRowTiles;
#pragma unroll 1
  for (int pass = 0; pass < T::kDqPasses; ++pass) {
    const int col_chunk0 = cg * (T::kDqCols / 8) + pass * T::kDqPassTiles;  // first n8 tile of the pass
    float acc[T::kDqPassTiles][4];
#pragma unroll
    for (int dn = 0; dn < T::kDqPassTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[dn][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < T::kDqSteps; ++kk) {
      // A = dS (m = queries, k = keys) from dS^T [key][query]: transposed loads; matrix q = lane / 8 is
      // (queries + 8 * (q % 2), keys + 8 * (q / 2)).
      uint32_t a[4];
      const int krow = kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8;
      ldmatrix_x4_trans(a, smem_addr(sdS + swizzle_short<kDsChunks>(krow, rt * 2 + ((lane >> 3) & 1))));
      const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int dd = 0; dd < T::kDqPassTiles / 2; ++dd) {
        uint32_t kb[4];  // B = K (k = keys, n = d), [key][d]: transposed loads
        ldmatrix_x4_trans(kb, smem_addr(sK + swizzle<kD>(row, col_chunk0 + dd * 2 + (lane >> 4))));
        mma_16816<Elem>(acc[2 * dd], a, kb[0], kb[1]);
        mma_16816<Elem>(acc[2 * dd + 1], a, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int m = rt * 16 + (lane >> 2) + 8 * hf;
      const int pos = p0 + m;
      if (pos < geo.pos_lo || pos >= geo.pos_hi) continue;  // not a row of the sequence
      float* dst = dq_rows + int64_t(m) * kD + col_chunk0 * 8 + 2 * (lane & 3);
#pragma unroll
      for (int dn = 0; dn < T::kDqPassTiles; ++dn) {
        atomicAdd(dst + dn * 8, acc[dn][2 * hf]);
        atomicAdd(dst + dn * 8 + 1, acc[dn][2 * hf + 1]);
      }
    }
  }
}

// One query step of the KV kernel (see the file comment). sQ, sdO: this step's tiles; sL, sD: its rows'
// lse2 and dsum; dq_rows: the dQ accumulator's row of query position p0 (row stride D), or null (no dQ).
template <class T, bool kMask>
__device__ __forceinline__ void backward_step(const typename T::Elem* sK, const typename T::Elem* sV,
                                              const typename T::Elem* sQ, const typename T::Elem* sdO,
                                              typename T::Elem* sdS, const float* sL, const float* sD,
                                              float (&dk)[T::kDTiles][4], float (&dv)[T::kDTiles][4],
                                              float scale_log2, const StepMask& mask, int p0,
                                              const WalkGeometry& geo, float* dq_rows) {
  using Elem = typename T::Elem;
  constexpr int kD = T::kHeadDim;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int key_row = warp * T::kKeyRows + (lane & 15);  // this lane's ldmatrix row of the warp's keys

  constexpr int kDsChunks = T::kBlockM / 8;
  // The step's queries in chunks of kQChunk (registers: S^T and dP^T of one chunk at a time); per chunk,
  // S^T = K Q^T and dP^T = V dO^T (m16 = the warp's keys, n = the chunk's queries, k = D), P^T and dS^T,
  // dV += P^T dO and dK += dS^T Q, and dS^T into shared memory for dQ.
#pragma unroll 1  // one chunk's registers at a time (unrolled, ptxas interleaves the chunks and spills)
  for (int qc = 0; qc < T::kBlockM / T::kQChunk; ++qc) {
    float s[T::kChunkTiles][4], dp[T::kChunkTiles][4];
#pragma unroll
    for (int nn = 0; nn < T::kChunkTiles; ++nn)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nn][e] = dp[nn][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < T::kQkSteps; ++ks) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, smem_addr(sK + swizzle<kD>(key_row, ks * 2 + (lane >> 4))));
      ldmatrix_x4(va, smem_addr(sV + swizzle<kD>(key_row, ks * 2 + (lane >> 4))));
#pragma unroll
      for (int np = 0; np < T::kChunkTiles / 2; ++np) {
        uint32_t qb[4], ob[4];  // B fragments of n8 tiles 2np ([0..1]) and 2np+1 ([2..3])
        const int row = qc * T::kQChunk + np * 16 + (lane >> 4) * 8 + (lane & 7);
        ldmatrix_x4(qb, smem_addr(sQ + swizzle<kD>(row, ks * 2 + ((lane >> 3) & 1))));
        ldmatrix_x4(ob, smem_addr(sdO + swizzle<kD>(row, ks * 2 + ((lane >> 3) & 1))));
        mma_16816<Elem>(s[2 * np], ka, qb[0], qb[1]);
        mma_16816<Elem>(s[2 * np + 1], ka, qb[2], qb[3]);
        mma_16816<Elem>(dp[2 * np], va, ob[0], ob[1]);
        mma_16816<Elem>(dp[2 * np + 1], va, ob[2], ob[3]);
      }
    }

    // P^T and dS^T. Accumulator element (nn, e): key n = warp * 16 + lane / 4 + 8 * (e / 2) of the tile,
    // query m = qc * kQChunk + nn * 8 + 2 * (lane % 4) + e % 2 of the step.
#pragma unroll
    for (int nn = 0; nn < T::kChunkTiles; ++nn) {
      const int m0 = qc * T::kQChunk + nn * 8 + 2 * (lane & 3);
      const float2 l2 = *reinterpret_cast<const float2*>(sL + m0);
      const float2 ds = *reinterpret_cast<const float2*>(sD + m0);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = fast_exp2(s[nn][e] * scale_log2 - ((e & 1) ? l2.y : l2.x));
        if constexpr (kMask) {
          const int m = m0 + (e & 1);
          if (m < mask.lo[e >> 1] || m >= mask.hi) p = 0.f;
        }
        s[nn][e] = p;
        dp[nn][e] = p * (dp[nn][e] - ((e & 1) ? ds.y : ds.x));
      }
    }

    // dV += P^T dO and dK += dS^T Q: the accumulators of n8 tiles 2kk and 2kk+1 are the A fragment of k16
    // step kk (queries); dO and Q are the B operands ([query][d] in shared memory: transposed loads).
#pragma unroll
    for (int kk = 0; kk < T::kChunkTiles / 2; ++kk) {
      uint32_t pa[4], da[4];
      accum_to_a_frag<Elem>(pa, s[2 * kk], s[2 * kk + 1]);
      accum_to_a_frag<Elem>(da, dp[2 * kk], dp[2 * kk + 1]);
      const int row = qc * T::kQChunk + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int dd = 0; dd < T::kDTiles / 2; ++dd) {
        uint32_t ob[4], qb[4];  // B fragments of n8 tiles 2dd ([0..1]) and 2dd+1 ([2..3])
        ldmatrix_x4_trans(ob, smem_addr(sdO + swizzle<kD>(row, dd * 2 + (lane >> 4))));
        ldmatrix_x4_trans(qb, smem_addr(sQ + swizzle<kD>(row, dd * 2 + (lane >> 4))));
        mma_16816<Elem>(dv[2 * dd], pa, ob[0], ob[1]);
        mma_16816<Elem>(dv[2 * dd + 1], pa, ob[2], ob[3]);
        mma_16816<Elem>(dk[2 * dd], da, qb[0], qb[1]);
        mma_16816<Elem>(dk[2 * dd + 1], da, qb[2], qb[3]);
      }
    }

    // dS^T -> shared memory ([key][query], 16-bit) for dQ
    if (dq_rows != nullptr) {
#pragma unroll
      for (int nn = 0; nn < T::kChunkTiles; ++nn)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int n = warp * T::kKeyRows + (lane >> 2) + 8 * hf;
          *reinterpret_cast<uint32_t*>(sdS + swizzle_short<kDsChunks>(n, qc * T::kChunkTiles + nn) +
                                       2 * (lane & 3)) = pack2<Elem>(dp[nn][2 * hf], dp[nn][2 * hf + 1]);
        }
    }
  }
  if (dq_rows == nullptr) return;  // deterministic mode: dQ comes from the dQ kernel
  __syncthreads();  // every warp's dS^T rows are written
  add_step_dq<T>(sK, sdS, p0, geo, dq_rows);
}

// The walk geometry of the KV-kernel CTA of KV head hk whose key tile (kBlockN keys) starts at key k0 of
// sequence b.
template <int kBlockN>
__device__ __forceinline__ void init_walk_geometry(WalkGeometry& geo, const AttentionBwdParams& params,
                                                   const SeqGeometry& g, int b, int hk, int k0) {
  const int bs = params.pattern.block_size;
  const int group = params.num_heads / params.num_kv_heads;
  set_walk_tile(geo, hk * group, group, k0, g.len_k, bs);
  geo.nblocks = bs >= kBlockN ? 1 : min(kBlockN / bs, (g.len_k - k0 + bs - 1) / bs);
  set_walk_rows<kBlockN>(geo, g, bs, params.pattern.causal != 0);
  geo.row_base = params.cu_seqlens_q != nullptr ? g.q_begin : int64_t(b) * params.seqlen_q;
}

// A KV-kernel CTA's work: key tile x (first key k0 = x * block_n) of KV head hk of sequence b, and the
// sequence's geometry. The grid is b-major, Hkv * order.per_head CTAs per sequence, taken longest first
// (kv_tile_order.h; the host computes the order once); a CTA without a tile gets k0 = INT_MAX (>= every
// len_k: it returns at once).
struct KvCta {
  int b, hk, k0;
  SeqGeometry g;
};
__device__ __forceinline__ KvCta kv_cta(const AttentionBwdParams& params, const KvTileOrder& order, int block_n) {
  const int per_seq = params.num_kv_heads * order.per_head;
  const int lin = static_cast<int>(blockIdx.x);
  KvCta c;
  int x;
  kv_tile_of(params.pattern, order, lin % per_seq, &c.hk, &x);
  c.b = lin / per_seq;
  c.g = seq_geometry(params, c.b);
  c.k0 = x < 0 ? INT_MAX : x * block_n;
  return c;
}

// The KV-kernel CTA's walk over its query steps: the walk geometry into `geo` (shared memory, written by
// thread 0; every thread waits for it), then the walk, which reads it there.
template <int kBlockN, int kBlockM, bool kList>
__device__ __forceinline__ BackwardWalk<kBlockM, kList> kv_cta_walk(WalkGeometry& geo, const AttentionBwdParams& params,
                                                                    const KvCta& cta) {
  if (threadIdx.x == 0) init_walk_geometry<kBlockN>(geo, params, cta.g, cta.b, cta.hk, cta.k0);
  __syncthreads();
  BackwardWalk<kBlockM, kList> walk;
  walk.pattern = &params.pattern;
  walk.geo = &geo;
  return walk;
}

// Q and dO of the query step (h, p0) into sQ and sQ + T::kRowElems (rows of the sequence only; others zero).
template <class T>
__device__ __forceinline__ void load_step_rows(typename T::Elem* sQ, const AttentionBwdParams& params,
                                               const KvCta& cta, const WalkGeometry& geo, int h, int p0) {
  using Elem = typename T::Elem;
  const Elem* q = seq_rows(static_cast<const Elem*>(params.q), params.q_stride, cta.b, cta.g.q_begin, h);
  const Elem* dout = seq_rows(static_cast<const Elem*>(params.dout), params.dout_stride, cta.b, cta.g.q_begin, h);
  const int r0 = p0 - geo.offset;  // sequence row of the step's first row (may be negative)
  const int len_q = geo.pos_hi - geo.pos_lo;
  load_rows<T, T::kBlockM>(sQ, q, params.q_stride.seq, r0, 0, len_q, params.q);
  load_rows<T, T::kBlockM>(sQ + T::kRowElems, dout, params.dout_stride.seq, r0, 0, len_q, params.dout);
}

// lse2 and dsum of the query step (h, p0)'s kBlockM rows into sL and sD (zero outside the sequence).
template <int kBlockM>
__device__ __forceinline__ void load_step_stats(float* sL, float* sD, const float* lse2, const float* dsum,
                                                int64_t total_q, const WalkGeometry& geo, int h, int p0) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < kBlockM) {
    const int r = p0 - geo.offset + tid;
    const bool valid = r >= 0 && r < geo.pos_hi - geo.pos_lo;
    const int64_t at = int64_t(h) * total_q + geo.row_base + (valid ? r : 0);
    cp_async_4(smem_addr(sL + tid), lse2 + at, valid);
    cp_async_4(smem_addr(sD + tid), dsum + at, valid);
  }
}

// K and V of the CTA's key tile (T::kBlockN keys from k0; keys past the sequence zero).
template <class T>
__device__ __forceinline__ void load_key_tile(typename T::Elem* sK, typename T::Elem* sV,
                                              const AttentionBwdParams& params, const KvCta& cta) {
  using Elem = typename T::Elem;
  const Elem* k = seq_rows(static_cast<const Elem*>(params.k), params.k_stride, cta.b, cta.g.k_begin, cta.hk);
  const Elem* v = seq_rows(static_cast<const Elem*>(params.v), params.v_stride, cta.b, cta.g.k_begin, cta.hk);
  load_rows<T, T::kBlockN>(sK, k, params.k_stride.seq, cta.k0, 0, cta.g.len_k, params.k);
  load_rows<T, T::kBlockN>(sV, v, params.v_stride.seq, cta.k0, 0, cta.g.len_k, params.v);
}

// Grid: one CTA per (key tile, KV head, sequence) in kv_tile_order's order (kv_cta): the vertical key tiles
// of every KV head first, then each head's other tiles side by side (they share its Q / dO rows in L2), the
// earliest keys (under causality the ones the most queries see) first in both.
// kList: a block-mask pattern, its column lists walked (BackwardWalk<.., true>); else the analytic rules.
template <class T, bool kList>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocksPerSm)
    backward_kv_kernel_sm80(const __grid_constant__ AttentionBwdParams params, const KvTileOrder order,
                            const float* lse2, const float* dsum, float* dq_accum) {
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kD = T::kHeadDim;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  Elem* sK = reinterpret_cast<Elem*>(smem_raw);
  Elem* sV = sK + T::kKeyElems;
  Elem* sRows = sV + T::kKeyElems;  // stage s: Q at sRows + 2s * kRowElems, dO right after
  Elem* sdS = sRows + T::kStages * 2 * T::kRowElems;
  float* sStats = reinterpret_cast<float*>(reinterpret_cast<char*>(smem_raw) + T::kStatsOffsetBytes);

  const KvCta cta = kv_cta(params, order, kBlockN);
  const int b = cta.b, hk = cta.hk, k0 = cta.k0;
  const SeqGeometry& g = cta.g;
  if (k0 >= g.len_k) return;

  __shared__ WalkGeometry geo;
  BackwardWalk<kBlockM, kList> walk = kv_cta_walk<kBlockN, kBlockM, kList>(geo, params, cta);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t total_q = params.total_q;

  // Q, dO, lse2 and dsum of the step (h, p0) into stage `st`.
  auto load_step = [&](int st, int h, int p0) {
    load_step_rows<T>(sRows + st * 2 * T::kRowElems, params, cta, geo, h, p0);
    float* sl = sStats + st * 2 * kBlockM;
    load_step_stats<kBlockM>(sl, sl + kBlockM, lse2, dsum, total_q, geo, h, p0);
  };

  // Prologue: K and V of the tile with the first step in flight.
  load_key_tile<T>(sK, sV, params, cta);
  bool have = walk.first();
  if (have) load_step(0, walk.head(), walk.p0());
  cp_async_commit();

  float dk[T::kDTiles][4], dv[T::kDTiles][4];
#pragma unroll
  for (int dn = 0; dn < T::kDTiles; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dn][e] = dv[dn][e] = 0.f;

  int stage = 0;
  while (have) {
    const int h = walk.head(), p0 = walk.p0();
    const uint32_t vis = walk.vis();
    cp_async_wait<0>();
    __syncthreads();  // this step has landed; every warp is done with the other stage and with dS^T
    have = walk.next();
    if (have) load_step(stage ^ 1, walk.head(), walk.p0());
    cp_async_commit();
    const Elem* sQ = sRows + stage * 2 * T::kRowElems;
    const float* sl = sStats + stage * 2 * kBlockM;
    float* dq_rows = params.deterministic
                         ? nullptr
                         : dq_accum + (int64_t(h) * total_q + geo.row_base + (p0 - geo.offset)) * kD;
    const float scale_log2 = params.scale * kLog2e;
    const bool full = vis == geo.all_blocks && geo.k0 + kBlockN <= geo.len_k && p0 >= geo.pos_lo &&
                      p0 + kBlockM <= geo.pos_hi && (!geo.causal || geo.k0 + kBlockN - 1 <= p0);
    if (full) {
      const StepMask none{{0, 0}, kBlockM};
      backward_step<T, false>(sK, sV, sQ, sQ + T::kRowElems, sdS, sl, sl + kBlockM, dk, dv, scale_log2, none, p0,
                              geo, dq_rows);
    } else {
      StepMask mask;
      mask.hi = min(geo.pos_hi - p0, kBlockM);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int n = warp * T::kKeyRows + (lane >> 2) + 8 * hf;  // this thread's key rows of the tile
        const int t = geo.k0 + n;
        const bool key_ok = ((vis >> (n >> geo.bs_shift)) & 1u) && t < geo.len_k;
        const int lo = max(geo.pos_lo - p0, geo.causal ? t - p0 : 0);
        mask.lo[hf] = key_ok ? lo : INT_MAX;
      }
      backward_step<T, true>(sK, sV, sQ, sQ + T::kRowElems, sdS, sl, sl + kBlockM, dk, dv, scale_log2, mask, p0,
                             geo, dq_rows);
    }
    stage ^= 1;
  }

  // Epilogue: dK * scale and dV through this warp's rows of sK / sV, 16-byte stores of the keys < len_k.
  cp_async_wait<0>();  // an empty walk leaves the K / V loads in flight
  __syncthreads();     // every warp is past its last read of sK / sV
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = warp * T::kKeyRows + (lane >> 2) + 8 * hf;
#pragma unroll
    for (int dn = 0; dn < T::kDTiles; ++dn) {
      const int at = swizzle<kD>(row, dn) + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(sK + at) =
          pack2<Elem>(dk[dn][2 * hf] * params.scale, dk[dn][2 * hf + 1] * params.scale);
      *reinterpret_cast<uint32_t*>(sV + at) = pack2<Elem>(dv[dn][2 * hf], dv[dn][2 * hf + 1]);
    }
  }
  __syncwarp();
  Elem* dkp = seq_rows(static_cast<Elem*>(params.dk), params.dk_stride, b, g.k_begin, hk);
  Elem* dvp = seq_rows(static_cast<Elem*>(params.dv), params.dv_stride, b, g.k_begin, hk);
  constexpr int kPerLane = T::kKeyRows * T::kChunks / 32;
#pragma unroll
  for (int it = 0; it < kPerLane; ++it) {
    const int idx = lane + it * 32;
    const int row = warp * T::kKeyRows + idx / T::kChunks, ch = idx % T::kChunks;
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

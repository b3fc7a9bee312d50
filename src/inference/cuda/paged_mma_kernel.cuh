// Paged attention on tensor cores (portable, sm_80+; bf16 and fp16 caches): decode, speculative decode and
// chunked prefill. One CTA of 4 (or 8) warps per (sequence, KV head, head chunk, split, query-row tile); its
// packed rows are (q head of the KV group) x (query row), head-major, so every K/V byte a group needs is read
// once for all its heads, and a 16-row slice of them is the M dimension of mma.sync m16n8k16 (rows past the
// group are zero and cost nothing but tensor-core slots, which decode has to spare: it is bound by memory).
//
//  - kRowTiles = 1 (decode, <= 16 packed rows): the 4 warps share the rows and split each 64-key tile, 16
//    keys each, with their own online-softmax state; the states are merged once at the end.
//  - kRowTiles = 4 or 8 (speculative decode / prefill, 64 or 128 packed rows, 4 or 8 warps): each warp owns
//    16 rows and scores the whole tile; 128 rows read each K/V tile for twice the rows.
//
// Keys: the CTA walks the union of the key blocks its rows see (analytic rules or the block mask's device
// lists) within its split's range (boundaries found by the whole CTA: parallel_split_range): windows of one
// candidate block per thread, tested with `attends` and compacted in order into a shared-memory list
// (cheaper than re-deriving the next block from the rules in every warp for every tile, which was most of
// the instructions). A 64-key tile holds 64 / block_size blocks (block 16, 32) or one 64-key part of a block
// (64, 128). Every key row is gathered through the block table with 16-byte cp.async into a kStages-deep
// ring; its table entry is fetched into shared memory (4-byte cp.async, a commit group of its own) one
// iteration before its copies and ahead of the previous tile's copies, so the lookup's latency hides behind
// a tile's math and waiting for it never means waiting for the newest tile. Rows past the context, past a
// block, or behind an out-of-range table entry are zero-filled and marked invalid. Per key, shared memory keeps (position << 2 | slot) or -1, so the compute side masks
// by the block visibility of its rows (per slot), validity, and the causal cut — or not at all where every
// row sees every key of the warp's range (decode; prefill below the diagonal).
//
// TMA path (kTma: decode on sm_90, opt-in with S2ATTN_PAGED_TMA=1 while it is measured; docs/inference.md):
// the lane that resolves the first row of a page's run in the tile loads that run's K and V with one TMA
// box per 64-element half of D (completing on the stage's mbarrier, which every thread arrives on once per
// fill) instead of every lane gathering rows with cp.async; the tile is stored as [64 rows][64] halves with
// TMA's 128-byte swizzle. Rows that hold no valid key are masked in S (K) and zeroed before P V (V).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/dependent_launch.cuh"
#include "cuda/common/numeric.cuh"
#include "cuda/common/ptx_sm80.cuh"
#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/smem_swizzle.cuh"
#include "inference/cuda/paged_elem.cuh"
#include "inference/cuda/paged_output.cuh"
#include "inference/cuda/paged_tma.h"
#include "inference/cuda/paged_walk.cuh"
#include "inference/paged_params.h"
#include "inference/paged_workspace.h"
#include "s2attn/pattern_rules.h"

#ifndef S2ATTN_PAGED_DECODE_CTAS
#define S2ATTN_PAGED_DECODE_CTAS 2  // decode CTAs per SM at D = 128 (inference_cuda.cmake)
#endif

namespace s2attn::cuda {

// Decode CTAs (RT = 1) per SM at D = 128: 2 (default; 3 stages, up to 255 registers) or 3 (2 stages, 168
// registers: 48 bytes spilled), an H100 A/B candidate: decode at batch 1-8 waits on each warp's instruction
// latency with 2 warps per scheduler (ncu), so 3 CTAs trade a stage in flight for 50% more warps.
constexpr int paged_decode_ctas_d128() { return S2ATTN_PAGED_DECODE_CTAS; }
static_assert(S2ATTN_PAGED_DECODE_CTAS == 2 || S2ATTN_PAGED_DECODE_CTAS == 3, "2 or 3 decode CTAs per SM");

// kLean: two stages and one CTA per SM, for GPUs that allow a CTA less shared memory than the default
// variant takes (the decode kernel at D = 128 needs 102 KiB; sm_86 / sm_89 allow 99 KiB).
// kTma (decode, sm_90): K and V arrive by TMA, one box per page and 64-element half of D, completing on a
// per-stage mbarrier, in 1024-byte [64 rows][64] halves with the 128-byte swizzle (kv_tile_offset).
template <typename T, int D, int RT, bool kLean = false, bool kTma = false>
struct PagedMmaTraits {
  static constexpr int kThreads = 32 * (RT > 4 ? RT : 4);
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kRowTiles = RT;
  static constexpr int kRows = 16 * RT;             // packed rows of a CTA
  static constexpr int kKeySplit = kWarps / RT;     // warps sharing a row tile, each with its own keys
  static constexpr int kTileKeys = 64;
  static constexpr int kWarpKeys = kTileKeys / kKeySplit;
  static constexpr int kNTiles = kWarpKeys / 8;     // n8 score tiles of a warp
  static constexpr int kChunks = D / 8;             // 16-byte chunks of a row
  static constexpr int kQkSteps = D / 16;
  static constexpr int kDTiles = D / 8;
  static constexpr int kMaxSlots = 4;               // blocks of a tile: 64 / 16 at the smallest block size
  // Two tiles in flight while one is scored (decode is a stream of K/V), except at 64 rows, where 3 stages
  // would not leave room for 2 CTAs per SM at D = 128, with 3 decode CTAs per SM, and in the lean variant.
  static constexpr bool kDecode3 = RT == 1 && D == 128 && paged_decode_ctas_d128() == 3;
  static constexpr int kStages = RT == 4 || kDecode3 || kLean ? 2 : 3;
  // what shared memory (D = 128) and registers (up to 255 a thread) allow
  static constexpr int kMinCtasPerSm = RT > 4 || kLean ? 1 : (kDecode3 ? 3 : 2);
  static constexpr int kTileElems = kTileKeys * D;
  static constexpr int kQElems = kRows * D;
  static constexpr int kRowsPerPass = kThreads / kChunks;  // key rows one pass of the CTA copies
  static constexpr int kLoadRows = kTileKeys / kRowsPerPass;
  static constexpr int kKeysOffset = (kQElems + kStages * 2 * kTileElems) * int(sizeof(T));
  static constexpr int kSlotsOffset = kKeysOffset + kStages * kTileKeys * 4;
  static constexpr int kListOffset = kSlotsOffset + kStages * kMaxSlots * 4;
  static constexpr int kListLen = kThreads;  // one window of candidate blocks, one per thread
  static constexpr int kEntryOffset = kListOffset + (kListLen + kWarps) * 4;
  static constexpr int kPipeBytes = kEntryOffset + 2 * kThreads * 4;  // [2][thread] table entries
  static constexpr int kMergeStride = D + 4;  // floats per merge row (padded: fewer bank conflicts; 16-byte rows)
  static constexpr int kMergeBytes = kWarps * 16 * (kMergeStride + 2) * 4;
  static constexpr int kBarOffset = ((kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes) + 7) / 8 * 8;
  // (TMA: + 1024 bytes of slack, the base rounded up to the swizzle's 1024-byte period)
  static constexpr int kSmemBytes =
      kTma ? kBarOffset + kStages * 8 + 1024 : (kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes);
  static_assert(kThreads % kChunks == 0 && kTileKeys % kRowsPerPass == 0, "copy passes");
  static_assert(kWarpKeys % 16 == 0, "a warp scores whole k16 steps of keys");
  static_assert(D % 4 == 0 && kMergeStride % 4 == 0, "the merge reads 16-byte quads of its rows");
  static_assert(!kTma || (RT == 1 && !kLean && D % 64 == 0), "the TMA path: decode, 64-element halves");
  static_assert(!kTma || ((kQElems * sizeof(T)) % 1024 == 0 && (kTileElems * sizeof(T)) % 1024 == 0),
                "the TMA path: every K / V tile starts on the 128-byte swizzle's 1024-byte period");
};

// Element offset of (key row, 16-byte chunk) in a K or V tile of the ring: the cp.async layout (rows of D,
// chunks XOR-swizzled by row), or TMA's (D / 64 halves of [64 rows][64], the 128-byte swizzle: chunk XOR
// row within each 1024-byte group of 8 rows). Both conflict-free for ldmatrix.
template <int D, bool kTma>
__device__ __forceinline__ int kv_tile_offset(int row, int chunk) {
  if constexpr (kTma) {
    return (chunk >> 3) * (64 * 64) + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
  } else {
    return swizzle<D>(row, chunk);
  }
}

// The blocks of one tile: slot s holds block j[s] (-1: none); keys [st * w, st * w + w) of each, w =
// min(block, 64). j[0] < 0: the walk has ended.
template <int kSlots>
struct PagedTile {
  int32_t j[kSlots];
  int32_t st;
};

template <int kSlots>
__device__ __forceinline__ int32_t slot_block(const PagedTile<kSlots>& t, int32_t s) {
  int32_t j = -1;  // a select chain, not an indexed load: the tile stays in registers
#pragma unroll
  for (int k = 0; k < kSlots; ++k) j = s == k ? t.j[k] : j;
  return j;
}

template <typename T, int D, int RT, bool kList, bool kLean = false, bool kTma = false>
__global__ void __launch_bounds__(PagedMmaTraits<T, D, RT, kLean, kTma>::kThreads,
                                  PagedMmaTraits<T, D, RT, kLean, kTma>::kMinCtasPerSm)
    paged_mma_kernel(const __grid_constant__ PagedParams p, const __grid_constant__ PagedTmaMaps maps,
                     int32_t heads_per_cta, int32_t rows_per_head, int32_t head_chunks, int32_t q_tiles) {
  using Tr = PagedMmaTraits<T, D, RT, kLean, kTma>;
  constexpr int kSlots = Tr::kMaxSlots, kStages = Tr::kStages;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  unsigned char* smem = reinterpret_cast<unsigned char*>(smem_raw);
  if constexpr (kTma) smem += (1024u - (smem_u32(smem) & 1023u)) & 1023u;  // an offset: still shared memory
  T* sQ = reinterpret_cast<T*>(smem);
  T* sKV = sQ + Tr::kQElems;  // stage s: K at sKV + 2s * kTileElems, V right after
  int32_t* skeys = reinterpret_cast<int32_t*>(smem + Tr::kKeysOffset);    // [stage][64]
  int32_t* sslots = reinterpret_cast<int32_t*>(smem + Tr::kSlotsOffset);  // [stage][kSlots]
  int32_t* slist = reinterpret_cast<int32_t*>(smem + Tr::kListOffset);    // visible blocks of a window
  int32_t* swarp = slist + Tr::kListLen;                                   // [warp] their count
  int32_t* sentry = reinterpret_cast<int32_t*>(smem + Tr::kEntryOffset);  // [tile parity][thread]
  // TMA path: one mbarrier per stage (all threads arrive, the issuing lanes with the bytes of their boxes),
  // past the merge area; this thread's parity of each stage's next wait, and the stages it filled but has not
  // waited for yet (drained before the shared memory is reused)
  uint64_t* sbar = reinterpret_cast<uint64_t*>(smem + Tr::kBarOffset);
  uint32_t bar_phase = 0, bar_pending = 0;
  // first: the context length's load (cta_coords) is the head of the chain to the first K / V load; its
  // latency passes behind the setup below
  const CtaCoords k = cta_coords(p, heads_per_cta, head_chunks);
  if constexpr (kTma) {
    if (threadIdx.x == 0) {
      for (int s = 0; s < Tr::kStages; ++s) mbar_init(&sbar[s], Tr::kThreads);
      fence_barrier_init();
      prefetch_tensormap(&maps.k);
      prefetch_tensormap(&maps.v);
    }
    __syncthreads();
  }

  grid_launch_dependents();  // the split combine (sm_90: a programmatic dependent) may be launched now
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rt = warp / Tr::kKeySplit;                    // this warp's row tile
  const int kw0 = (warp % Tr::kKeySplit) * Tr::kWarpKeys;  // and its keys within a tile
  const int32_t bs = p.pattern.block_size;
  const int32_t w = bs < Tr::kTileKeys ? bs : Tr::kTileKeys;  // keys of a slot
  const int wshift = __ffs(w) - 1;  // block sizes are powers of two
  const int32_t slots = Tr::kTileKeys >> wshift;
  const int32_t ps = p.page_size;
  const bool ps_pow2 = (ps & (ps - 1)) == 0;  // the usual case: a shift, not a division, per key row
  const int pshift = __ffs(ps) - 1;
  const int64_t row_base = p.q_begin(k.b) + (p.cu_seqlens_q ? 0 : int64_t(k.b) * p.q_len);  // workspace row
  const T* kbase = static_cast<const T*>(p.k_pages) + k.hk * p.k_head_stride;
  const T* vbase = static_cast<const T*>(p.v_pages) + k.hk * p.v_head_stride;

  for (int32_t qt = blockIdx.y; qt < q_tiles; qt += gridDim.y) {
    CtaRows c;
    int32_t pos0, j_lo, j_hi;
    if (!cta_rows<kList, Tr::kThreads>(p, k, qt, rows_per_head, &c, &pos0, &j_lo, &j_hi, swarp)) {
      break;  // varlen: past the rows
    }

    // Q: packed row rr = g * rows_per_head + qi (q head h0 + g, query row r0 + qi); dead rows zero.
    for (int idx = tid; idx < Tr::kRows * Tr::kChunks; idx += Tr::kThreads) {
      const int rr = idx / Tr::kChunks, ch = idx % Tr::kChunks;
      const int g = div_nonneg(rr, rows_per_head), qi = rr - g * rows_per_head;
      const bool live = g < c.nh && qi < c.nq;
      const T* src = live ? static_cast<const T*>(p.q) + c.b * p.q_stride.batch +
                                (p.q_begin(c.b) + c.r0 + qi) * p.q_stride.seq + (c.h0 + g) * p.q_stride.head + ch * 8
                          : static_cast<const T*>(p.q);
      cp_async_16(smem_addr(sQ + swizzle<D>(rr, ch)), src, live);
    }
    cp_async_commit();

    // This thread's two rows of its row tile (mma C layout: lane / 4 and lane / 4 + 8).
    int32_t pos[2], head[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int rr = rt * 16 + hf * 8 + lane / 4;
      const int g = div_nonneg(rr, rows_per_head), qi = rr - g * rows_per_head;
      const bool live = g < c.nh && qi < c.nq;
      pos[hf] = live ? pos0 + qi : -1;  // a dead row (and a row before the first key) sees nothing
      head[hf] = c.h0 + (live ? g : 0);
    }

    // Row classes: one (pattern head, query block) for all rows (decode with a shared group pattern) means
    // every block of the walk is seen by every live row: no per-tile visibility test.
    const bool one_head = kList ? (p.pattern.mask.heads != p.num_heads || c.nh == 1)
                                : (!p.pattern.per_q_head || c.nh == 1);
    const bool uniform = one_head && c.i_lo == c.i_hi;
    auto union_sees = [&](int32_t j) {  // does some row of the CTA see key block j?
      const int32_t heads = one_head ? 1 : c.nh;
      for (int32_t g = 0; g < heads; ++g) {
        for (int32_t i = imax(c.i_lo, 0); i <= c.i_hi; ++i) {
          if constexpr (kList) {
            if (mask_list_attends(p.pattern, c.h0 + g, i, j)) return true;
          } else {
            if (attends(p.pattern, c.h0 + g, i, j)) return true;
          }
        }
      }
      return false;
    };
    // The walk: the visible blocks of [j_lo, j_hi), a window of kListLen candidates at a time, each thread
    // testing one and the warps compacting the hits into shared memory in order (two barriers per window;
    // every thread runs this uniformly). Then tiles take blocks from the list.
    int32_t win = j_lo, lcur = 0, lcount = 0, cst = 0;
    auto refill = [&]() {
      while (lcur == lcount && win < j_hi) {
        const int32_t j = win + tid;
        const bool v = j < j_hi && union_sees(j);
        const uint32_t ballot = __ballot_sync(0xffffffffu, v);
        if (lane == 0) swarp[warp] = __popc(ballot);
        __syncthreads();  // the counts are in; everyone is done reading the previous window's list
        int32_t at = 0, total = 0;
#pragma unroll
        for (int wi = 0; wi < Tr::kWarps; ++wi) {
          const int32_t nw = swarp[wi];
          at += wi < warp ? nw : 0;
          total += nw;
        }
        if (v) slist[at + __popc(ballot & ((1u << lane) - 1u))] = j;
        __syncthreads();
        lcount = total;
        lcur = 0;
        win += Tr::kListLen;
      }
    };
    auto keys_in = [&](int32_t j) { return imin(bs, c.ctx - j * bs); };
    // The slot loop stays rolled (one inlined copy of the walk, writes to t.j by selects): unrolled, the
    // kernel's code grew past the instruction cache and a decode CTA's warps spent 40% of their time
    // waiting for instructions (ncu, 1 x 128k).
    auto next_tile = [&](PagedTile<kSlots>& t) {
      t.st = cst;
#pragma unroll
      for (int s = 0; s < kSlots; ++s) t.j[s] = -1;
#pragma unroll 1
      for (int s = 0; s < slots; ++s) {
        refill();
        if (lcur >= lcount) break;  // the walk has ended (uniform: every thread holds the same counts)
        const int32_t j = slist[lcur];
#pragma unroll
        for (int k = 0; k < kSlots; ++k) t.j[k] = s == k ? j : t.j[k];
        if ((cst + 1) * w < keys_in(j)) {
          ++cst;  // the block's next 64 keys (block 128)
        } else {
          ++lcur;
          cst = 0;
        }
      }
    };
    // A tile is gathered in two steps, one loop iteration apart, so that the table lookups' latency hides
    // behind a tile's math instead of delaying it (measured: 2.1 us per tile at batch 1, one split, when
    // the lookup stalled every iteration). A thread copies one 16-byte chunk of kLoadRows key rows; the
    // 16 rows a warp copies are resolved once each by lanes 0..15 (lanes 16..31 repeat them) and handed to
    // the copying lanes by shuffles: one table load and one address computation per row. The entry goes
    // to shared memory by cp.async (this thread's slot, read back by this thread only): loaded into a
    // register after the previous tile's copies, it held the loop's next iteration until those copies had
    // landed too (ncu, 1 x 128k: 20% of the warps' stall samples on that register).
    constexpr int kRowsPerWarpPass = 32 / Tr::kChunks;  // rows one copy instruction of a warp covers
    // lane L resolves the warp's row L % 16: pass (L % 16) / kRowsPerWarpPass, row L % kRowsPerWarpPass of it
    const int mine = (warp * kRowsPerWarpPass + (lane & 15) % kRowsPerWarpPass) +
                     ((lane & 15) / kRowsPerWarpPass) * Tr::kRowsPerPass;
    struct Pending {  // a tile whose table lookups are in flight
      PagedTile<kSlots> t;
      int32_t tok;  // this lane's row: key position, -1 when none (then no entry is fetched)
    };
    // Step 1: the next tile of the walk and its rows' table entries, fetched into sentry[buf] (not waited
    // for here).
    auto resolve = [&](Pending& q, int buf) {
      next_tile(q.t);
      q.tok = -1;
      const int32_t sl = mine >> wshift, u = mine & (w - 1);
      const int32_t j = sl < slots ? slot_block(q.t, sl) : -1;
      const int32_t off = q.t.st * w + u;
      if (j >= 0 && off < keys_in(j)) {
        q.tok = j * bs + off;
        cp_async_4(smem_addr(sentry + buf * Tr::kThreads + tid),
                   p.page_entry_at(c.b, c.hk, ps_pow2 ? q.tok >> pshift : q.tok / ps), true);
      }
    };
    // Step 2: the copies into `stage` (zero-filled rows where there is no key or the entry is out of range),
    // once this thread's entries in sentry[buf] have landed.
    auto copy = [&](const Pending& q, int stage, int buf) {
      if (tid < kSlots) sslots[stage * kSlots + tid] = slot_block(q.t, tid);
      if constexpr (kTma) bar_pending |= 1u << stage;
      if (q.t.j[0] < 0) {  // past the end: the slots say so, nothing to copy
        if constexpr (kTma) mbar_arrive(&sbar[stage]);
        return;
      }
      int32_t code = -1;         // (position << 2 | slot), -1: not copied
      int64_t koff = 0, voff = 0;
      const int32_t entry = q.tok >= 0 ? sentry[buf * Tr::kThreads + tid] : -1;
      if (entry >= 0 && entry < p.num_pages) {
        const int64_t in_page = ps_pow2 ? q.tok & (ps - 1) : q.tok % ps;
        koff = entry * p.k_page_stride + in_page * p.k_token_stride;
        voff = entry * p.v_page_stride + in_page * p.v_token_stride;
        code = (q.tok << 2) | (mine >> wshift);
      }
      int32_t* keys = skeys + stage * Tr::kTileKeys;
      T* dk = sKV + stage * 2 * Tr::kTileElems;
      T* dv = dk + Tr::kTileElems;
      // each row's marker from the lane that resolved it, before the copies: a shared store between two
      // cp.async made ptxas put three dummy shared loads before the next one (SASS: @!PT LDS RZ, [RZ])
      if (lane < 16 && mine < Tr::kTileKeys) keys[mine] = code;
      if constexpr (kTma) {
        // The lane of a box's first row (a page's first row in the tile: boxes never cross a page) loads its
        // K and V halves; every other thread only arrives. Rows of a loaded page past the context hold whatever
        // the cache holds there: K's are masked, V's zeroed before P V (below).
        const bool issue = lane < 16 && code >= 0 && (mine & (maps.rows - 1)) == 0;
        if (issue) {
          mbar_arrive_expect_tx(&sbar[stage], static_cast<uint32_t>(2 * (D / 64) * maps.rows * 128));
          const int in_page = q.tok & (ps - 1);  // (power-of-two pages on this path)
          const int hk = p.head_paged ? 0 : k.hk;
#pragma unroll
          for (int h = 0; h < D / 64; ++h) {
            tma_load_4d(&maps.k, dk + h * 64 * 64 + mine * 64, &sbar[stage], h * 64, hk, in_page, entry);
            tma_load_4d(&maps.v, dv + h * 64 * 64 + mine * 64, &sbar[stage], h * 64, hk, in_page, entry);
          }
        } else {
          mbar_arrive(&sbar[stage]);
        }
        return;
      }
      const int ch = lane % Tr::kChunks;
#pragma unroll
      for (int it = 0; it < Tr::kLoadRows; ++it) {
        const int src = it * kRowsPerWarpPass + lane / Tr::kChunks;
        const int r = warp * kRowsPerWarpPass + lane / Tr::kChunks + it * Tr::kRowsPerPass;
        const int32_t rc = __shfl_sync(0xffffffffu, code, src);
        const int64_t rk = __shfl_sync(0xffffffffu, koff, src);
        const int64_t rv = __shfl_sync(0xffffffffu, voff, src);
        const bool ok = rc >= 0;
        cp_async_16(smem_addr(dk + swizzle<D>(r, ch)), ok ? kbase + rk + ch * 8 : kbase, ok);
        cp_async_16(smem_addr(dv + swizzle<D>(r, ch)), ok ? vbase + rv + ch * 8 : vbase, ok);
      }
    };

    Pending pend, ahead;  // the tile the next copy takes, and the one after it (being resolved)

    float o[Tr::kDTiles][4], m[2], l[2];
#pragma unroll
    for (int dn = 0; dn < Tr::kDTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dn][e] = 0.f;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m[hf] = -INFINITY;
      l[hf] = 0.f;
    }
    uint32_t qf[Tr::kQkSteps][4];
    const float scale_log2 = p.scale * kLog2e;
    const bool causal = p.pattern.causal != 0;

    // Iteration n resolves tile n + kStages, copies tile n + kStages - 1 and scores tile n; the first
    // kStages iterations (n < 0) only start the walk and fill the ring, so that copy and resolve each have
    // one call site (their inlined code was most of the kernel's size). Each iteration commits two groups:
    // the entries of the tile it resolves, then the copies of the tile it copies. The wait at the top of
    // iteration n leaves kStages - 2 groups in flight (tile n + 1's copies when kStages is 3): tile n's
    // copies have landed, and so have the entries of the tile copied next, committed before tile n + 1's.
    for (int n = -kStages, stage = 0, cstage = 0;; ++n, stage = n <= 0 ? 0 : (stage + 1 == kStages ? 0 : stage + 1)) {
      if (n >= 0) {
        cp_async_wait<kStages - 2>();
        if constexpr (kTma) {  // tile n's boxes
          mbar_wait(&sbar[stage], (bar_phase >> stage) & 1u);
          bar_phase ^= 1u << stage;
          bar_pending &= ~(1u << stage);
        }
        __syncthreads();  // tile n (and Q) landed for every thread; every warp is done with tile n - 1's stage
        if (n == 0) {
#pragma unroll
          for (int ks = 0; ks < Tr::kQkSteps; ++ks) {
            ldmatrix_x4(qf[ks], smem_addr(sQ + swizzle<D>(rt * 16 + (lane & 15), ks * 2 + (lane >> 4))));
          }
        }
      }
      resolve(ahead, (n + kStages) & 1);  // tile n + kStages: its entries land while tile n is scored
      cp_async_commit();
      if (n > -kStages) {
        // tile n + kStages - 1's entries: committed before the two newest groups (the first tile's: before
        // one); in the running loop the wait above has covered them and this one returns at once
        if (n == 1 - kStages) {
          cp_async_wait<1>();
        } else {
          cp_async_wait<2>();
        }
        copy(pend, cstage, (n + kStages - 1) & 1);  // into the stage tile n - 1 freed
        cp_async_commit();
        cstage = cstage + 1 == kStages ? 0 : cstage + 1;
      }
      pend = ahead;
      if (n < 0) continue;
      if (sslots[stage * kSlots] < 0) break;  // the walk has ended (uniform: shared memory)

      const int32_t* keys = skeys + stage * Tr::kTileKeys;
      bool any = false, all = true;  // does this warp's key range hold a valid key at all? only valid keys?
#pragma unroll
      for (int kk = lane; kk < Tr::kWarpKeys; kk += 32) {
        const bool valid = keys[kw0 + kk] >= 0;
        any |= valid;
        all &= valid;
      }
      if (!__any_sync(0xffffffffu, any)) continue;
      if constexpr (kTma) {
        // V rows of this warp's keys that hold no valid key (past the context in a loaded page, or never
        // loaded: stale) must be zeros, not NaN or Inf, before P V (0 * NaN = NaN); then ordered before the
        // stage's next TMA fill
        if (!__all_sync(0xffffffffu, all)) {
          T* zv = sKV + stage * 2 * Tr::kTileElems + Tr::kTileElems;
          for (int idx = lane; idx < Tr::kWarpKeys * Tr::kChunks; idx += 32) {
            const int r = kw0 + idx / Tr::kChunks, ch = idx % Tr::kChunks;
            if (keys[r] < 0) *reinterpret_cast<uint4*>(zv + kv_tile_offset<D, kTma>(r, ch)) = make_uint4(0, 0, 0, 0);
          }
          fence_proxy_async_shared();
          __syncwarp();
        }
      }
      // no mask at all: every row sees every block of the walk (uniform), every key is valid, and the warp's
      // last (largest) key is at or before the first row (decode always; prefill below the diagonal)
      const bool unmasked = uniform && __all_sync(0xffffffffu, all) &&
                            (!causal || (keys[kw0 + Tr::kWarpKeys - 1] >> 2) <= pos0);
      // which slots each of this thread's rows sees
      uint32_t vis[2] = {pos[0] >= 0 ? 0xfu : 0u, pos[1] >= 0 ? 0xfu : 0u};
#pragma unroll 1
      for (int s = 0; s < kSlots && !uniform; ++s) {
        const int32_t j = sslots[stage * kSlots + s];
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          if (s == 0) vis[hf] = 0u;
          if (j >= 0 && pos[hf] >= 0) {
            const int32_t i = pos[hf] / bs;
            bool a;
            if constexpr (kList) {
              a = mask_list_attends(p.pattern, head[hf], i, j);
            } else {
              a = attends(p.pattern, head[hf], i, j);
            }
            vis[hf] |= a ? 1u << s : 0u;
          }
        }
      }

      const T* sK = sKV + stage * 2 * Tr::kTileElems;
      const T* sV = sK + Tr::kTileElems;
      float s[Tr::kNTiles][4];
#pragma unroll
      for (int nn = 0; nn < Tr::kNTiles; ++nn)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nn][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < Tr::kQkSteps; ++ks) {
#pragma unroll
        for (int np = 0; np < Tr::kNTiles / 2; ++np) {
          uint32_t kb[4];  // B fragments of n8 tiles 2np (kb[0..1]) and 2np + 1 (kb[2..3])
          const int row = kw0 + np * 16 + (lane >> 4) * 8 + (lane & 7);
          ldmatrix_x4(kb, smem_addr(sK + kv_tile_offset<D, kTma>(row, ks * 2 + ((lane >> 3) & 1))));
          mma_16816<T>(s[2 * np], qf[ks], kb[0], kb[1]);
          mma_16816<T>(s[2 * np + 1], qf[ks], kb[2], kb[3]);
        }
      }
      // scale into the log2 domain, then mask (a negative scale must not flip -inf)
      if (unmasked) {
#pragma unroll
        for (int nn = 0; nn < Tr::kNTiles; ++nn)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nn][e] *= scale_log2;
      } else {
#pragma unroll
        for (int nn = 0; nn < Tr::kNTiles; ++nn)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int hf = e >> 1;
            const int32_t key = keys[kw0 + nn * 8 + (lane & 3) * 2 + (e & 1)];
            const bool see = key >= 0 && ((vis[hf] >> (key & 3)) & 1u) && (!causal || (key >> 2) <= pos[hf]);
            s[nn][e] = see ? s[nn][e] * scale_log2 : -INFINITY;
          }
      }
      // online softmax (the 4 lanes of a quad hold one row's columns)
      float alpha[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int nn = 0; nn < Tr::kNTiles; ++nn) mx = fmaxf(mx, fmaxf(s[nn][2 * hf], s[nn][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[hf], mx);
        const float ref = m_new == -INFINITY ? 0.f : m_new;  // a row that has seen nothing stays at 0
        alpha[hf] = fast_exp2(m[hf] - ref);
        m[hf] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nn = 0; nn < Tr::kNTiles; ++nn)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pr = fast_exp2(s[nn][2 * hf + e] - ref);
            s[nn][2 * hf + e] = pr;
            sum += pr;
          }
        l[hf] = l[hf] * alpha[hf] + sum;
      }
      // rescale O only when some row of the warp has a new maximum (decode: rarely, once the first keys are in)
      if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int dn = 0; dn < Tr::kDTiles; ++dn) {
#pragma unroll
          for (int e = 0; e < 4; ++e) o[dn][e] *= alpha[e >> 1];
        }
      }
      // O += P V: the score accumulators of n8 tiles 2kk and 2kk + 1 are the A fragment of k16 step kk.
#pragma unroll
      for (int kk = 0; kk < Tr::kNTiles / 2; ++kk) {
        uint32_t pa[4];
        accum_to_a_frag<T>(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < Tr::kDTiles / 2; ++dp) {
          uint32_t vb[4];  // B fragments of n8 tiles 2dp (vb[0..1]) and 2dp + 1 (vb[2..3])
          const int row = kw0 + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          ldmatrix_x4_trans(vb, smem_addr(sV + kv_tile_offset<D, kTma>(row, dp * 2 + (lane >> 4))));
          mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
          mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
        }
      }
    }
    cp_async_wait<0>();
    if constexpr (kTma) {  // fills not waited for (tiles past the walk's end): none may land on the merge area
      for (int st = 0; st < kStages; ++st) {
        if ((bar_pending >> st) & 1u) {
          mbar_wait(&sbar[st], (bar_phase >> st) & 1u);
          bar_phase ^= 1u << st;
        }
      }
      bar_pending = 0;
    }
    __syncthreads();  // every warp is past its last read of the ring: the merge area reuses it

    // Merge: per warp, its 16 rows' max, sum and unnormalised output; then per (row, d), the warps of
    // the row tile combined.
    float* mo = reinterpret_cast<float*>(smem);                   // [warp][16][kMergeStride]
    float* mm = mo + Tr::kWarps * 16 * Tr::kMergeStride;          // [warp][16]
    float* ml = mm + Tr::kWarps * 16;                             // [warp][16]
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int lr = hf * 8 + lane / 4;
      float sum = l[hf];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if ((lane & 3) == 0) {
        mm[warp * 16 + lr] = m[hf];
        ml[warp * 16 + lr] = sum;
      }
      float* dst = mo + (warp * 16 + lr) * Tr::kMergeStride + (lane & 3) * 2;
#pragma unroll
      for (int dn = 0; dn < Tr::kDTiles; ++dn) {
        *reinterpret_cast<float2*>(dst + dn * 8) = make_float2(o[dn][2 * hf], o[dn][2 * hf + 1]);
      }
    }
    __syncthreads();
    const bool split_out = p.num_splits > 1;
    const PagedWorkspace ws =
        split_out ? PagedWorkspace::carve(p.workspace, p.num_splits, p.total_q, p.num_heads, D) : PagedWorkspace{};
    // Live rows only (decode: the group's 4 heads of the 16 packed rows; the loop over all rows spent 5% of
    // a decode CTA's time skipping dead ones), a thread per (row, 4 columns): the row's merge weights once
    // per 4 outputs, 16-byte loads of the warps' partial rows, one 16-byte store into the workspace (decode:
    // one pass of the CTA; per element, the merge and the division cost ~600 instructions a warp, ncu).
    constexpr int kQuads = D / 4;
    for (int idx = tid; idx < c.nh * c.nq * kQuads; idx += Tr::kThreads) {
      const int li = idx / kQuads, d0 = (idx % kQuads) * 4;
      const int g = div_nonneg(li, c.nq), qi = li - g * c.nq;
      const int rr = g * rows_per_head + qi;
      const int w0 = (rr / 16) * Tr::kKeySplit, lr = rr % 16;
      float M = -INFINITY;
#pragma unroll
      for (int kp = 0; kp < Tr::kKeySplit; ++kp) M = fmaxf(M, mm[(w0 + kp) * 16 + lr]);
      float L = 0.f, O[4] = {0.f, 0.f, 0.f, 0.f};
      if (M > -INFINITY) {
#pragma unroll
        for (int kp = 0; kp < Tr::kKeySplit; ++kp) {
          const float f = fast_exp2(mm[(w0 + kp) * 16 + lr] - M);  // exp2(-inf) = 0 for empty states
          L = fmaf(ml[(w0 + kp) * 16 + lr], f, L);
          const float4 x = *reinterpret_cast<const float4*>(mo + ((w0 + kp) * 16 + lr) * Tr::kMergeStride + d0);
          O[0] = fmaf(x.x, f, O[0]);
          O[1] = fmaf(x.y, f, O[1]);
          O[2] = fmaf(x.z, f, O[2]);
          O[3] = fmaf(x.w, f, O[3]);
        }
      }
      store_paged_output<T, 4>(p, ws, c, k.split, row_base, c.h0 + g, c.r0 + qi, d0, D, O, L, M);
    }
    if constexpr (kTma) fence_proxy_async_shared();  // the merge area's stores, before TMA refills the ring
    __syncthreads();  // shared memory is reused by the next query tile
  }
}

}  // namespace s2attn::cuda

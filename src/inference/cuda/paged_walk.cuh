// The key walk of the paged kernels: a CTA owns packed rows (q heads of one KV group x query rows) of one
// sequence, and walks the union of the key blocks those rows see, restricted to its split's range. Shared by
// the tensor-core kernel (16-bit) and the SIMT kernel (fp32).
#pragma once
#include <cstdint>

#include "inference/paged_params.h"
#include "inference/split_ranges.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

// The rows a CTA owns and the key blocks they see.
struct CtaRows {
  int32_t b, hk, h0, nh;   // sequence, KV head, first q head, q heads in the CTA
  int32_t r0, nq;          // first query row (within the sequence), query rows in the CTA
  int32_t len_q, ctx, nk;  // sequence's query rows, context length, key blocks
  int32_t i_lo, i_hi;      // query blocks of the CTA's rows, inclusive (i_lo may be < 0)
};

// Smallest key block >= x visible to some (head, query block) of the CTA, or `end` when none below it.
// Re-derived from the rules at every step (a few integer ops per source): nothing is stored.
// A row's next_from(x) answers its own list's end when it has no member >= x, and that end differs per row
// (causal: min(nk, i + 1)), so it can lie below x: only real members (j < s.end) are candidates. Taking
// the sentinel sent the walk back to a lower block forever when the CTA's rows span query blocks.
// kList: a block-mask pattern (device lists; a separate instantiation, the analytic code is unchanged).
template <bool kList>
__device__ __forceinline__ int32_t next_union_block(const PatternRules& p, const CtaRows& c, int32_t x,
                                                    int32_t end) {
  int32_t best = end;
  if constexpr (kList) {  // block mask (device lists): the first entry >= x of each row list, by binary search
    const BlockMaskView& m = p.mask;
    const int32_t heads = m.heads == p.num_heads ? c.nh : 1;  // a shared or per-KV-head mask: one list
    for (int32_t g = 0; g < heads; ++g) {
      for (int32_t i = imax(c.i_lo, 0); i <= imin(c.i_hi, m.rows - 1); ++i) {
        const int64_t row = static_cast<int64_t>(mask_head(p, c.h0 + g)) * m.rows + i;
        const int32_t* list = m.col_idx + m.row_ptr[row];
        const int32_t n = m.row_ptr[row + 1] - m.row_ptr[row];
        const int32_t at = sorted_lower_bound(list, n, x);
        if (at < n) {
          const int32_t j = list[at];
          if (j < (p.causal ? imin(c.nk, i + 1) : c.nk) && j < best) best = j;
        }
      }
    }
    return best < end ? best : end;
  }
  const int32_t heads = p.per_q_head ? c.nh : 1;  // per-KV-head patterns: the group shares one pattern
  for (int32_t g = 0; g < heads; ++g) {
    for (int32_t i = imax(c.i_lo, 0); i <= c.i_hi; ++i) {
      const SegmentList s = row_segments(p, c.h0 + g, i, c.nk);
      const int32_t j = s.next_from(x);
      if (j < s.end && j < best) best = j;  // j >= x here: the walk always moves forward
    }
  }
  return best < end ? best : end;
}

// The CTA's sequence, KV head, q heads [h0, h0 + nh) and split, from blockIdx.z = split and
// blockIdx.x = (b * Hkv + hk) * head_chunks + hc: the CTAs of one split (the KV heads of a sequence read the
// same pages, 256 bytes apart) are launched together. Divisions by powers of two are shifts (div_nonneg).
struct CtaCoords {
  int32_t b, hk, h0, nh, split;
  int32_t ctx;  // the sequence's context length, loaded here: first in the CTA's chain of dependent steps
};

__device__ __forceinline__ CtaCoords cta_coords(const PagedParams& p, int32_t heads_per_cta, int32_t head_chunks) {
  const int32_t G = div_nonneg(p.num_heads, p.num_kv_heads);
  const int32_t unit = blockIdx.x;
  CtaCoords k;
  k.split = blockIdx.z;
  const int32_t bk = div_nonneg(unit, head_chunks);  // b * Hkv + hk (one head chunk, the usual case: a shift by 0)
  const int32_t hc = unit - bk * head_chunks;
  k.b = div_nonneg(bk, p.num_kv_heads);
  k.hk = bk - k.b * p.num_kv_heads;
  k.h0 = k.hk * G + hc * heads_per_cta;
  k.nh = imin(heads_per_cta, k.hk * G + G - k.h0);
  k.ctx = p.context_lens[k.b];
  return k;
}

// balanced_split_range's boundaries, found by the kThreads threads of the CTA together (every thread calls
// it, uniformly): each half of the CTA runs a (kThreads / 2)-ary search for one of the two boundaries, both
// at once, two rounds up to (kThreads / 2)^2 key blocks. One thread's binary search chained ~20
// closed-form evaluations (integer divisions) before the CTA's first load could issue; a search per
// boundary one after the other doubled the rounds and the code (a decode CTA runs this code once, cold in
// the instruction cache). `scratch`: kThreads / 32 ints of shared memory (free on entry and on return).
// segments_count_below for a list whose segments start at their first member (lo made a member first, once):
// one division per segment instead of two, in the search's rounds; a shift for the usual strides (1, and
// powers of two).
__device__ __forceinline__ int32_t first_aligned_count_below(const SegmentList& s, int32_t x) {
  int32_t n = 0;
  for (int k = 0; k < kMaxSegments && k < s.n; ++k) {
    const Segment& g = s.seg[k];
    const int32_t m = imin(x, g.hi);
    n += g.lo < m ? div_nonneg(m - 1 - g.lo, g.stride) + 1 : 0;
  }
  return n;
}

template <int kThreads>
__device__ __forceinline__ void parallel_split_range(const PatternRules& p, int32_t h, int32_t i, int32_t nk,
                                                     int32_t split, int32_t splits, int32_t* scratch,
                                                     int32_t* lo, int32_t* hi) {
  constexpr int kHalf = kThreads / 2, kHalfWarps = kHalf / 32;
  static_assert(kHalf % 32 == 0, "whole warps per half");
  SegmentList s = row_segments(p, h, i, nk);
#pragma unroll
  for (int k = 0; k < kMaxSegments; ++k) {
    if (k < s.n) s.seg[k].lo = segment_first_from(s.seg[k], s.seg[k].lo);  // the same members
  }
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int e = tid >= kHalf ? 1 : 0;  // the boundary this thread's half finds: 0 the split's first block, 1 its end
  const int32_t t = tid - e * kHalf;
  const int32_t part = split + e;
  const bool fixed = part == 0 || part >= splits;
  int32_t a = part == 0 ? 0 : (part >= splits ? nk : 0), b = fixed ? a : nk;
  // the smallest x in [a, b] with count_below(x) >= target; count_below(b) >= target throughout
  // ceil(count * part / splits); 32-bit while the product fits (count < 2^24, part <= kMaxPagedSplits):
  // a 64-bit division is a call of ~70 instructions
  int64_t target = 0;
  if (!fixed) {
    const int32_t count = first_aligned_count_below(s, nk);
    target = count < (1 << 24) ? int64_t(div_nonneg(count * part + splits - 1, splits))
                               : (int64_t(count) * part + splits - 1) / splits;
  }
  while (__syncthreads_or(a < b)) {  // a round while either half searches (barriers stay uniform)
    const int32_t step = (b - a + kHalf) / kHalf;  // ceil((b - a + 1) / kHalf)
    const int32_t x = a + t * step;
    const bool ge = x >= b || first_aligned_count_below(s, x) >= target;  // false, then true, in t order
    const uint32_t below = __ballot_sync(0xffffffffu, !ge);
    if (lane == 0) scratch[warp] = __popc(below);
    __syncthreads();
    int32_t k = 0;  // candidates below the target: candidate k is the first at or above it
#pragma unroll
    for (int wi = 0; wi < kHalfWarps; ++wi) k += scratch[e * kHalfWarps + wi];
    if (a < b) {
      if (k == 0) {
        b = a;
      } else {
        const int32_t na = a + (k - 1) * step + 1;
        b = imin(b, a + k * step);
        a = na;
      }
    }
  }  // the loop's last barrier: every thread is done reading scratch
  if (t == 0) scratch[e] = a;
  __syncthreads();
  *lo = scratch[0];
  *hi = scratch[1];
  __syncthreads();  // scratch is free again
}

// The CTA's rows for query tile qt (rows_per_head query rows per q head) and its split's key-block range
// [*j_lo, *j_hi). Returns false when the tile lies past the sequence's query rows (varlen).
// kThreads > 0: the whole CTA of kThreads finds the split's range (parallel_split_range), in `scratch`
// (kThreads / 32 ints of shared memory); 0: every thread runs one thread's binary search. A compile-time
// choice: a runtime one kept both searches' code in the kernel.
template <bool kList, int kThreads = 0>
__device__ __forceinline__ bool cta_rows(const PagedParams& p, const CtaCoords& k, int32_t qt, int32_t rows_per_head,
                                         CtaRows* out, int32_t* pos0, int32_t* j_lo, int32_t* j_hi,
                                         int32_t* scratch = nullptr) {
  CtaRows c;
  c.b = k.b;
  c.hk = k.hk;
  c.h0 = k.h0;
  c.nh = k.nh;
  c.len_q = p.len_q(k.b);
  c.ctx = k.ctx;
  const int32_t bs = p.pattern.block_size;
  const int bshift = __ffs(bs) - 1;  // block sizes are powers of two (16 to 128)
  c.nk = (c.ctx + bs - 1) >> bshift;
  c.r0 = qt * rows_per_head;
  if (c.r0 >= c.len_q) return false;
  c.nq = imin(rows_per_head, c.len_q - c.r0);
  *pos0 = c.ctx - c.len_q + c.r0;  // absolute position of the CTA's first query row (bottom-right aligned)
  c.i_lo = *pos0 >> bshift;        // floor: an arithmetic shift (rows before the first key: negative)
  c.i_hi = (*pos0 + c.nq - 1) >= 0 ? (*pos0 + c.nq - 1) >> bshift : -1;
  if (kList || p.num_splits == 1) {
    const int32_t per_split = div_nonneg(c.nk + p.num_splits - 1, p.num_splits);
    *j_lo = imin(c.nk, k.split * per_split);
    *j_hi = imin(c.nk, *j_lo + per_split);
  } else if constexpr (kThreads > 0) {
    parallel_split_range<kThreads>(p.pattern, c.h0, imax(c.i_hi, 0), c.nk, k.split, p.num_splits, scratch, j_lo,
                                   j_hi);
  } else {
    balanced_split_range(p.pattern, c.h0, imax(c.i_hi, 0), c.nk, k.split, p.num_splits, j_lo, j_hi);
  }
  *out = c;
  return true;
}

}  // namespace s2attn::cuda

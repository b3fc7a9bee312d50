// The persistent scheduler of the Hopper backward's KV kernel: which work units (sequence, KV head, key
// tile) a CTA processes, in which order. The producer runs it and hands each unit to the consumers
// (BwdUnitSm90 in shared memory). CTA c starts with unit c; then, with a counter (BackwardParamsSm90::
// unit_counter: more units than CTAs), the first unit no CTA has taken yet (greedy list scheduling), else
// c + grid, c + 2 grid, ... (static).
//
// A tile is 128 keys: two 64-key halves, one per consumer warpgroup. At block size 128 it is one block; at
// block size 64 it is two key blocks j0 and j0 + jstride, not necessarily adjacent: a query step that sees
// only one of the two leaves the other warpgroup idle, so blocks seen by the same query blocks are paired.
// Under the S2 patterns a vertical key block is seen by every later query block (causal: nq - j blocks), a
// local-only one by about L. Adjacent blocks pair a vertical with a local-only one (measured on the CPU for
// S = 32k, V = 8, L = 16: 60% of the warpgroup-steps busy; 53% at 128k); vertical with vertical (j, j + V)
// and local-only with local-only (the next non-vertical block) keeps 97% (99% at 128k) busy.
//
// Order: longest first (LPT). Per sequence:
//   pass 1 (only when the vertical rule is absolute, per KV head and of stride >= 2: fp.vertical_first):
//     the vertical key blocks of every KV head, j = r(hk) + m V for m = 0, 1, ... (r(hk) = -phase mod V),
//     head-major (a head's units m = 0, 1, ... in a row: the CTAs running at one time share few heads' Q and
//     dO in L2, read in near lockstep by the producer's descending walk; KV kernel -2.5 to -3.3% against
//     m-major); block size 64: blocks m = 2 n and 2 n + 1 in one tile; block size 128: one block per tile;
//   pass 2: the other blocks, ascending (causal: decreasing work), fp.head_group KV heads side by side
//     (groups one after the other: the CTAs running at one time share fewer heads' Q, dO and, with fused dQ,
//     dQ accumulator tiles in L2: 4 with fused dQ, else all, backward_sm90.cu); block size 64:
//     the non-vertical blocks in pairs (the n-th and n+1-th of them); otherwise the 128-key tiles that hold
//     no vertical block (a stride >= 2 puts at most one vertical block in a 128-key tile).
//   Folded pass 1 (fp.fold_vertical, block size 64): a head's pass-1 units in pairs (m, last - m), one unit
//     of the scheduler each; its CTA walks m (long) downwards from the last query block, then last - m
//     (short) upwards from its first one. Vertical blocks are evenly spaced, so every CTA's second walk
//     reaches a query block at the same time as the others' and every pair takes the same time: the CTAs of
//     a head stay in two fronts that share Q, dO (and fused dQ's accumulator tiles) in L2. Unfolded, the CTAs
//     that finish a short walk start the next unit at the top while the others are low: at 128k the fronts
//     drift apart by more than the L2 holds (tools/kv_schedule_l2_model.py --fold, 128k V32, fused dQ in
//     groups of 4: 33 + 16 GB of DRAM reads and writes unfolded, 13.6 + 5.8 folded).
// Without the vertical pass: every 128-key tile, adjacent blocks. The passes partition the key blocks
// whatever the pattern, so the classification affects speed only, never which keys get dK and dV.
// Everything is closed form in the unit index: no host-side plan, CUDA-graph safe (the dynamic order's
// counter is a word of the backward's workspace, zeroed in stream order by each call). Skipped
// units (pass 1 past a head's last vertical block, pass 2 past its last pair) cost the CTA a few instructions.
// NOTE: sequences are visited in order, each with its two passes: a varlen batch of one long and many short
// sequences would want a global order.
#pragma once
#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/kv_tile_order.h"  // first_vertical_block, non_vertical_block
#include "cuda/common/numeric.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

struct BwdWorkUnitSm90 {
  int b = 0, hk = 0;
  int k0 = 0;          // first key of the tile (sequence-relative): key block j0 = k0 / block size
  int jstride = 1;     // block size 64: the tile's second block is j0 + jstride (past the keys: none)
  bool valid = false;  // false: a skipped unit (nothing to do)
  bool reversed = false;   // walked against the kernel's direction (the second unit of a folded pair: upwards)
  bool folds = false;      // a folded pair's first unit: get(u, part 1) is its second
  SeqGeometry g;
};

template <int kBlockN>
struct BwdTileSchedulerSm90 {
  int b = -1;     // current sequence
  int base = 0;   // first unit of sequence b
  int units = 0;  // units of sequence b
  int n1 = 0;     // units of its pass 1 (folded: pairs)
  int per_head2 = 0;  // units of its pass 2 per KV head
  int nblocks = 0;
  SeqGeometry g;

  __device__ __forceinline__ void load(const BackwardParamsSm90& fp) {
    const AttentionBwdParams& p = fp.p;
    g = seq_geometry(p, b);
    const int bs = p.pattern.block_size;
    const int len_k = max(g.len_k, 0);
    nblocks = (len_k + bs - 1) / bs;
    const int tiles = (len_k + kBlockN - 1) / kBlockN;
    const int V = p.pattern.vert_stride;
    if (!fp.vertical_first) {
      n1 = 0;
      per_head2 = tiles;  // every key tile, also when no query sees it: dK = dV = 0
    } else if (bs < kBlockN) {  // pairs: of vertical blocks (at most ceil(nb / V)), of the others (at most
      // nb - floor(nb / V) of them); folded, pairs of the former pairs
      n1 = p.num_kv_heads * (fp.fold_vertical ? (pass1_tiles(nblocks, V) + 1) / 2 : pass1_tiles(nblocks, V));
      per_head2 = (nblocks - nblocks / V + 1) / 2;
    } else {
      n1 = p.num_kv_heads * ((nblocks + V - 1) / V);
      per_head2 = tiles;
    }
    units = n1 + p.num_kv_heads * per_head2;
  }

  // Pass 1's units a head has at block size 64 (unfolded): pairs of its at most ceil(nb / V) vertical blocks.
  __device__ __forceinline__ static int pass1_tiles(int nblocks, int V) { return ((nblocks + V - 1) / V + 1) / 2; }

  // Whether key block j is one of KV head hk's vertical blocks (pass 1's).
  __device__ __forceinline__ static bool vertical(const PatternRules& pr, int hk, int j) {
    return pmod(j + vertical_phase(pr, hk), pr.vert_stride) == 0;
  }

  // Pass 2's unit v (from 0): its KV head and its index x among the head's units. Groups of `group` KV heads
  // (the last one may be smaller) one after the other; in a group, x ascending, the heads side by side.
  __device__ __forceinline__ static void pass2_unit(int v, int per_head, int heads, int group, int& x, int& hk) {
    const int g0 = v / (group * per_head) * group;
    const int in_group = min(group, heads - g0);
    const int r = v - g0 * per_head;
    x = r / in_group;
    hk = g0 + r % in_group;
  }

  // Unit u (u must not decrease between calls); false when u is past the last unit. part 1: the second unit
  // of the folded pair u (only after part 0 of the same u said w.folds).
  __device__ __forceinline__ bool get(const BackwardParamsSm90& fp, int u, int part, BwdWorkUnitSm90& w) {
    const AttentionBwdParams& p = fp.p;
    if (!seek_sequence_of_unit(*this, fp, u, p.batch)) return false;
    const PatternRules& pr = p.pattern;
    const int bs = pr.block_size;
    const int hkv = p.num_kv_heads;
    const int v = u - base;
    w.b = b;
    w.g = g;
    w.jstride = 1;
    w.valid = true;
    w.reversed = false;
    w.folds = false;
    const int V = pr.vert_stride;
    if (v < n1) {
      const int per_head = n1 / hkv;
      int m = v % per_head;
      w.hk = v / per_head;
      if (fp.fold_vertical && bs < kBlockN) {  // pair (m, last - m): the long one down, the short one up
        const int last = pass1_tiles(nblocks, V) - 1;
        w.folds = part == 0 && last - m > m;
        w.reversed = part != 0;
        if (part != 0) m = last - m;
      }
      const int r = first_vertical_block(pr, w.hk);
      if (bs < kBlockN) {  // vertical blocks 2 m and 2 m + 1 of the head
        const int j = r + 2 * m * V;
        w.valid = j < nblocks;
        w.k0 = j * bs;
        w.jstride = V;  // j + V past the keys: the tile has one block
      } else {
        const int j = r + m * V;
        w.valid = j < nblocks;
        w.k0 = (j * bs) / kBlockN * kBlockN;
      }
    } else if (fp.vertical_first && bs < kBlockN) {  // non-vertical blocks 2 x and 2 x + 1 of the head
      int x;
      pass2_unit(v - n1, per_head2, hkv, fp.head_group, x, w.hk);
      const int r = first_vertical_block(pr, w.hk);
      const int nvert = r < nblocks ? (nblocks - r + V - 1) / V : 0;
      const int count = nblocks - nvert;
      w.valid = 2 * x < count;
      const int ja = non_vertical_block(2 * x, r, V);
      const int jb = 2 * x + 1 < count ? non_vertical_block(2 * x + 1, r, V) : nblocks;
      w.k0 = ja * bs;
      w.jstride = max(jb - ja, 1);
    } else {
      int x;
      pass2_unit(v - n1, per_head2, hkv, fp.head_group, x, w.hk);
      w.k0 = x * kBlockN;
      if (fp.vertical_first) {
        const int j_lo = w.k0 / bs, j_hi = min((w.k0 + kBlockN + bs - 1) / bs, nblocks);
        for (int j = j_lo; j < j_hi; ++j) {
          if (vertical(pr, w.hk, j)) w.valid = false;
        }
      }
    }
    return true;
  }
};

}  // namespace s2attn::cuda

// The persistent scheduler of the Hopper backward's KV kernel: which work units (sequence, KV head, 128-key
// tile) a CTA processes, in which order. Producer and consumers of a CTA run the same scheduler and so agree
// on the units without communicating (CTA c takes units c, c + grid, c + 2 grid, ...).
//
// Longest first (LPT). The work of a key tile is the number of query blocks that see it (summed over the
// group's q heads). Under the S2 patterns a vertical key block is seen by every later query block (causal:
// nq - j blocks), a local-only one by about L: the vertical tiles dominate and must start first, earliest
// (longest) first. Per sequence the order is
//   pass 1 (only when the vertical rule is absolute, per KV head and of stride >= 2: fp.vertical_first):
//     the vertical key blocks of every KV head, j = r(hk) + m V for m = 0, 1, ... (r(hk) = -phase mod V),
//     m-major (all heads' m-th vertical block side by side), each as the tile that holds it;
//   pass 2: every tile, ascending (causal: decreasing work), KV heads side by side, skipping the tiles that
//     pass 1 took (a stride >= 2 puts at most one vertical block in a 128-key tile of 64-key blocks).
// Everything is closed form in the unit index: no host-side plan, no workspace, CUDA-graph safe. Skipped
// units (pass 1 past a head's last vertical block, pass 2's vertical tiles) cost the CTA a few instructions.
// NOTE: sequences are visited in order, each with its two passes: a varlen batch of one long and many short
// sequences would want a global order; and an atomic work queue would balance better; measure.
#pragma once
#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm90/backward_sm90.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

struct BwdWorkUnitSm90 {
  int b = 0, hk = 0;
  int k0 = 0;          // first key of the tile (sequence-relative)
  bool valid = false;  // false: a skipped unit (nothing to do)
  SeqGeometry g;
};

template <int kBlockN>
struct BwdTileSchedulerSm90 {
  int b = -1;     // current sequence
  int base = 0;   // first unit of sequence b
  int units = 0;  // units of sequence b
  int n1 = 0;     // units of its pass 1
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
    n1 = fp.vertical_first ? p.num_kv_heads * ((nblocks + V - 1) / V) : 0;
    units = n1 + p.num_kv_heads * tiles;  // every key tile, also when no query sees it: dK = dV = 0
  }

  // Whether key block j is one of KV head hk's vertical blocks (pass 1's).
  __device__ __forceinline__ static bool vertical(const PatternRules& pr, int hk, int j) {
    return pmod(j + vertical_phase(pr, hk), pr.vert_stride) == 0;
  }

  // Unit u (u must not decrease between calls); false when u is past the last unit.
  __device__ __forceinline__ bool get(const BackwardParamsSm90& fp, int u, BwdWorkUnitSm90& w) {
    const AttentionBwdParams& p = fp.p;
    if (b < 0) {
      b = 0;
      load(fp);
    }
    while (u >= base + units) {
      base += units;
      if (++b >= p.batch) return false;
      load(fp);
    }
    const PatternRules& pr = p.pattern;
    const int bs = pr.block_size;
    const int hkv = p.num_kv_heads;
    const int v = u - base;
    w.b = b;
    w.g = g;
    if (v < n1) {
      const int m = v / hkv;
      w.hk = v % hkv;
      const int j = pmod(-vertical_phase(pr, w.hk), pr.vert_stride) + m * pr.vert_stride;
      w.valid = j < nblocks;
      w.k0 = (j * bs) / kBlockN * kBlockN;
    } else {
      const int x = (v - n1) / hkv;
      w.hk = (v - n1) % hkv;
      w.k0 = x * kBlockN;
      w.valid = true;
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

// The persistent tile scheduler of the Hopper forward: which work units (sequence, head, 128-row query tile)
// a CTA processes, in which order.
//
// Order: sequences in order; within a sequence, heads in groups of `head_group`; within a group, query tiles
// from the last (the longest under causality: the most visible key blocks) to the first, and for each tile
// the group's heads side by side. Which CTA takes which unit: CTA c starts with unit c; then, with a
// counter (ForwardParamsSm90::unit_counter, the forward with four waves of units or more), the first unit no CTA
// has taken yet (greedy list scheduling: a CTA that finishes early takes more), else c + grid, c + 2 grid,
// ... (static). The forward's producer decides and passes each unit (UnitSm90) to its consumers with the unit's
// Q buffer; the dQ kernel's roles each run the static order.
//  - Longest first: the grid's last units are the shortest, so the tail is short (LPT). Under the S2
//    patterns the work of a tile grows with its index (more vertical blocks below the window).
//  - Head groups: the units running at one time belong to few heads, and neighbouring tiles of one head
//    share their vertical blocks and most of their local window, so K/V stay in L2. The host picks
//    head_group so that one group holds about two waves of units (FA3's tile_scheduler does the same for
//    dense causal attention).
//  - Dynamic rather than static where it applies: the static stride gives CTA c the c-th longest unit of
//    every wave, and at 8k (about 16 units per CTA) the SMs' busy cycles ended up 7% apart (ncu, SM
//    active cycles max against mean). The counter costs a 4-byte stream-ordered allocation and a memset.
//  - Varlen: the number of tiles of a sequence is known on the device only; each scheduler walks the
//    sequences with a cursor that only moves forward (units are visited in increasing order), so a CTA
//    reads each sequence's lengths once.
#pragma once
#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/seq_geometry.cuh"
#include "cuda/sm90/forward_sm90.h"

namespace s2attn::cuda {

struct WorkUnitSm90 {
  int b = 0, h = 0;
  SeqGeometry g;
  int t0 = 0;              // absolute position of the tile's row 0 (a multiple of kBlockM)
  int pos_lo = 0, pos_hi = 0;  // the sequence's rows in the tile: absolute positions [pos_lo, pos_hi)
};

template <int kBlockM>
struct TileSchedulerSm90 {
  // 32-bit unit indices (the host checks that every unit index fits): fewer registers for the producer
  int b = -1;     // current sequence
  int base = 0;   // first unit of sequence b
  int units = 0;  // units of sequence b
  int tiles = 0;       // query tiles of sequence b
  int tile_last = 0;   // index (absolute position / kBlockM) of its last tile
  SeqGeometry g;

  __device__ __forceinline__ void load(const ForwardParamsSm90& fp) {
    const AttentionParams& p = fp.p;
    if (fp.paged.context_lens != nullptr) {  // paged: keys are the context, queries its last len_q positions
      g = SeqGeometry{};
      g.q_begin = p.cu_seqlens_q != nullptr ? p.cu_seqlens_q[b] : 0;
      g.len_q = p.cu_seqlens_q != nullptr ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.seqlen_q;
      g.len_k = fp.paged.context_lens[b];
      g.offset = g.len_k - g.len_q;
    } else {
      g = seq_geometry(p, b);
    }
    if (g.len_q <= 0) {
      tiles = 0;
    } else {
      const int tile_first = floor_div(g.offset, kBlockM);
      tile_last = floor_div(g.offset + g.len_q - 1, kBlockM);
      tiles = tile_last - tile_first + 1;
    }
    units = tiles * p.num_heads;
  }

  // Unit u (u must not decrease between calls); false when u is past the last unit.
  __device__ __forceinline__ bool get(const ForwardParamsSm90& fp, int u, WorkUnitSm90& w) {
    const AttentionParams& p = fp.p;
    if (!seek_sequence_of_unit(*this, fp, u, p.batch)) return false;
    const int v = u - base;
    const int hg = fp.head_group;
    const int group_units = hg * tiles;
    const int group = v / group_units;
    const int in_group = min(hg, p.num_heads - group * hg);  // the last group may be smaller
    const int r = v - group * group_units;
    const int x = r / in_group;  // tiles counted from the last
    w.b = b;
    w.h = group * hg + r % in_group;
    w.g = g;
    w.t0 = (tile_last - x) * kBlockM;
    w.pos_lo = max(w.t0, g.offset);
    w.pos_hi = min(w.t0 + kBlockM, g.offset + g.len_q);
    return true;
  }
};

}  // namespace s2attn::cuda

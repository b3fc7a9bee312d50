// Which key tiles a work unit visits, grouped into pipeline stages. Producers run it to issue the loads (the
// forward's producer also stores each stage's descriptor for its consumers; the dQ kernel's consumer warps
// run the same enumeration themselves). It walks the union, over the tile's query blocks, of their visible
// key blocks (KeyTiles: a warp-wide k-way merge of the pattern's segment lists, in registers), in 64-key
// boxes, and pairs consecutive boxes into one 128-key stage. Warp-collective: call with all 32 lanes.
#pragma once
#include <cstdint>

#include "cuda/common/numeric.cuh"
#include "cuda/sm80/key_tiles_sm80.cuh"  // NOTE: generic (sm_80+) code; belongs in cuda/common/ once shared
#include "cuda/sm90/stage_sm90.h"
#include "cuda/sm90/tile_scheduler_sm90.cuh"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

// Consumer warpgroups (bits) whose query rows lie in the row-blocks `vis` (bit r: row-block r of the tile).
// Block 64: warpgroup w holds row-block w. Block 128: one row-block holds both.
__device__ __forceinline__ uint32_t warpgroups_seeing(uint32_t vis, int block_size) {
  return block_size == 64 ? (vis & 3u) : ((vis & 1u) ? 3u : 0u);
}

template <int kBlockM, int kSubTile>
struct StageSequenceSm90 {
  KeyTiles<kSubTile> tiles;
  int block_size = 64;
  bool have = false;
  bool started = false;

  __device__ __forceinline__ void init(const PatternRules& pattern, const WorkUnitSm90& w) {
    block_size = pattern.block_size;
    // row-blocks of the tile holding rows of the sequence
    const int rb_rows = block_size < kBlockM ? block_size : kBlockM;
    uint32_t active = 0;
    for (int r = 0; r * rb_rows < kBlockM; ++r) {
      const int lo = w.t0 + r * rb_rows;
      if (max(lo, w.pos_lo) < min(lo + rb_rows, w.pos_hi)) active |= 1u << r;
    }
    tiles.init(pattern, w.h, floor_div(w.t0, block_size), active, w.g.len_k, w.pos_hi - 1);
    have = tiles.first();
    started = false;
  }

  // The next stage of the unit; false when the unit has no more.
  __device__ __forceinline__ bool next(StageSm90& s) {
    if (started && !have) return false;
    started = true;
    s = StageSm90{{0, 0}, {0u, 0u}, 0, 0};
    if (have) {
      s.k0[0] = tiles.key_start();
      s.vis[0] = warpgroups_seeing(tiles.vis, block_size);
      s.boxes = 1;
      have = tiles.next();
    }
    if (have) {
      s.k0[1] = tiles.key_start();
      s.vis[1] = warpgroups_seeing(tiles.vis, block_size);
      s.boxes = 2;
      have = tiles.next();
    }
    s.last = have ? 0 : 1;
    return true;
  }
};

}  // namespace s2attn::cuda

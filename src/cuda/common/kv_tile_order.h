// The order in which the portable backward's KV kernel takes its key tiles: longest first.
//
// That kernel is not persistent: one CTA per (sequence, KV head, 64-key tile), and the GPU starts CTAs in grid
// order as slots free up. Under the S2 patterns a vertical key block is seen by every later query block, a
// local-only one by about L: in the plain grid order ((b, hk) major, tiles ascending) the last KV heads'
// vertical tiles start near the end and run alone (tools/sm80_kv_grid_model.py: the last slot ends 24% above
// the mean at 32k V32, 10% at V8). Here, per sequence:
//   pass 1: the vertical tiles of every KV head, head-major, ascending (decreasing work under causality);
//   pass 2: the other tiles, head-major, ascending (a head's tiles side by side share its Q / dO in L2).
// (Measured on the H100, session 22: the portable KV kernel -7.3 / -10.5 / -14.6% at 32k V8 / V16 / V32. The
// Hopper backward uses vertical_first_order for its persistent scheduler's first pass.)
// Both passes are closed form in the CTA index (no plan, CUDA-graph safe). A pass has the same count for every
// KV head (the largest): the indices a head does not use are CTAs without work (`tile` < 0), at most one or
// two per head. The passes partition the tiles whatever the pattern, so the classification affects speed
// only, never which keys get dK and dV.
//
// Tiles and blocks: a "tile-block" is a pattern block (block size >= the tile: `tiles_per` tiles each) or a
// tile (block size < the tile: several blocks, vertical when one of them is: the vertical blocks' stride
// V must then be a multiple of the blocks per tile, and the stride in tiles V / blocks >= 2).
#pragma once
#include <cstdint>

#include "s2attn/config.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

// Whether the pattern's vertical key blocks form one progression per KV head (absolute position, stride >= 2,
// the analytic rules, one pattern per KV head): the backward schedulers' first pass (also Hopper's).
S2_HD bool vertical_first_order(const PatternRules& r) {
  return !r.use_mask && !r.per_q_head && r.vert_stride >= 2 &&
         r.vert_position == static_cast<int32_t>(VertPosition::absolute);
}

struct KvTileOrder {
  int32_t tiles = 0;     // key tiles per (sequence, KV head): the grid's bound
  int32_t tiles_per = 1;  // tiles per tile-block
  int32_t stride = 0;    // vertical stride in tile-blocks; 0: the plain grid order
  int32_t shift = 0;     // blocks per tile-block = 1 << shift when blocks are smaller than a tile, else 0
  int32_t pass1 = 0;     // tile-blocks per KV head in pass 1 (the largest count of any head)
  int32_t pass2 = 0;     // in pass 2
  int32_t per_head = 0;  // CTAs per (sequence, KV head)
};

// The order for `key_tiles` tiles of `tile_keys` keys per (sequence, KV head).
S2_HD KvTileOrder kv_tile_order(const PatternRules& p, int32_t key_tiles, int32_t tile_keys) {
  KvTileOrder o;
  o.tiles = key_tiles;
  o.per_head = key_tiles;
  const int32_t bs = p.block_size;
  if (!vertical_first_order(p) || bs <= 0 || key_tiles <= 0) return o;
  int32_t tile_blocks = key_tiles, stride = p.vert_stride;
  if (bs >= tile_keys) {
    o.tiles_per = bs / tile_keys;
    tile_blocks = (key_tiles + o.tiles_per - 1) / o.tiles_per;
  } else {
    const int32_t blocks = tile_keys / bs;  // powers of two
    if (stride % blocks != 0) return o;
    stride /= blocks;
    while ((1 << o.shift) < blocks) ++o.shift;
  }
  if (stride < 2) return o;
  o.stride = stride;
  o.pass1 = (tile_blocks + stride - 1) / stride;  // a head has ceil or floor of nb / stride vertical ones
  o.pass2 = tile_blocks - tile_blocks / stride;
  o.per_head = (o.pass1 + o.pass2) * o.tiles_per;
  return o;
}

// The n-th block that is not vertical, where the vertical ones are r, r + V, r + 2 V, ... (V >= 2).
S2_HD int32_t non_vertical_block(int32_t n, int32_t r, int32_t V) {
  return n < r ? n : r + 1 + (n - r) + (n - r) / (V - 1);
}

// The first vertical key block of KV head hk: -phase mod V (the backward schedulers' pass 1).
S2_HD int32_t first_vertical_block(const PatternRules& p, int32_t hk) {
  return pmod(-vertical_phase(p, hk), p.vert_stride);
}

// The first vertical tile-block of KV head hk.
S2_HD int32_t kv_vertical_residue(const PatternRules& p, const KvTileOrder& o, int32_t hk) {
  return first_vertical_block(p, hk) >> o.shift;
}

// CTA u of a sequence (0 <= u < p.num_kv_heads * o.per_head): its KV head and key tile (-1: no work).
S2_HD void kv_tile_of(const PatternRules& p, const KvTileOrder& o, int32_t u, int32_t* hk, int32_t* tile) {
  if (o.stride == 0) {
    *hk = u / o.tiles;
    *tile = u % o.tiles;
    return;
  }
  const int32_t pass1_ctas = o.pass1 * o.tiles_per;
  int32_t t, tb;
  if (u < p.num_kv_heads * pass1_ctas) {  // the m-th vertical tile-block of the head
    *hk = u / pass1_ctas;
    t = u % pass1_ctas;
    tb = kv_vertical_residue(p, o, *hk) + t / o.tiles_per * o.stride;
  } else {  // the n-th other one (skipping r, r + V, ...)
    const int32_t pass2_ctas = o.pass2 * o.tiles_per;
    const int32_t w = u - p.num_kv_heads * pass1_ctas;
    *hk = w / pass2_ctas;
    t = w % pass2_ctas;
    const int32_t n = t / o.tiles_per, r = kv_vertical_residue(p, o, *hk);
    tb = non_vertical_block(n, r, o.stride);
  }
  const int32_t x = tb * o.tiles_per + t % o.tiles_per;
  *tile = x < o.tiles ? x : -1;  // (a head with fewer vertical or other tile-blocks than the largest count)
}

}  // namespace s2attn::cuda

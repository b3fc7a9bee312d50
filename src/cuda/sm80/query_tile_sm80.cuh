// The query tile of a portable forward or dQ CTA: which (sequence, head, tile) blockIdx.x names, where the
// tile's rows sit, and which of its sparse row blocks hold rows of the sequence. One decoding for both
// kernels, whose grids are the same.
//
// Grid: ((b * Hkv + hk) * query_tiles + x) * G + g for query head h = hk * G + g (G = H / Hkv), x counting
// query tiles from the sequence's last one (forward_kernel_sm80.cuh says why this order).
#pragma once
#include <cstdint>

#include "common/attention_params.h"
#include "cuda/common/numeric.cuh"
#include "cuda/common/seq_geometry.cuh"

namespace s2attn::cuda {

struct QueryTileSm80 {
  int b = 0, h = 0, hk = 0;  // sequence, q head, its KV head
  SeqGeometry g;
  int t0 = 0;                   // absolute position of the CTA's row 0
  int pos_lo = 0, pos_hi = 0;   // the sequence's rows of the tile: positions [pos_lo, pos_hi)
  int rb_rows = 0;              // rows per sparse row block: min(block size, kBlockM)
  int first_block = 0;          // sparse query block of row 0
  uint32_t active = 0;          // bit r: row block r holds rows of the sequence (host: at most 4 blocks)
};

// False where the CTA has no rows: an empty sequence, or a tile index past the sequence's first tile.
template <int kBlockM>
__device__ __forceinline__ bool query_tile_sm80(const AttentionParams& params, int query_tiles,
                                                QueryTileSm80& t) {
  const int group = params.num_heads / params.num_kv_heads;
  int lin = static_cast<int>(blockIdx.x);
  const int in_group = lin % group;
  lin /= group;
  const int x = lin % query_tiles;
  lin /= query_tiles;
  t.hk = lin % params.num_kv_heads;
  t.b = lin / params.num_kv_heads;
  t.h = t.hk * group + in_group;

  t.g = seq_geometry(params, t.b);
  if (t.g.len_q <= 0) return false;
  const int tile_first = floor_div(t.g.offset, kBlockM);
  const int tile_last = floor_div(t.g.offset + t.g.len_q - 1, kBlockM);
  if (x > tile_last - tile_first) return false;
  t.t0 = (tile_last - x) * kBlockM;
  t.pos_lo = max(t.t0, t.g.offset);
  t.pos_hi = min(t.t0 + kBlockM, t.g.offset + t.g.len_q);

  const int bs = params.pattern.block_size;
  t.rb_rows = min(bs, kBlockM);
  t.first_block = floor_div(t.t0, bs);
  t.active = 0;
  for (int r = 0; r * t.rb_rows < kBlockM; ++r) {
    const int lo = t.t0 + r * t.rb_rows;
    if (max(lo, t.pos_lo) < min(lo + t.rb_rows, t.pos_hi)) t.active |= 1u << r;
  }
  return true;
}

}  // namespace s2attn::cuda

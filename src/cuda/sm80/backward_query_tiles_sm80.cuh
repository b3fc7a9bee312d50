// Which query steps a CTA of the KV-stationary backward visits: for each q head of its KV head's group,
// the union, over the key blocks its key tile spans, of the query blocks that see them (the pattern's
// transposed enumeration, col_segments in pattern_rules.h), ascending, each cut into steps of kBlockM rows.
//
// The enumeration is the forward's (key_tiles_sm80.cuh) with rows and columns exchanged: lane
// c * 8 + k owns segment k of key block j0 + c's column list, the warp minimum of the cursors is the next
// query block, a ballot says which key blocks it sees. KeyTiles' stepping (next_block / next) is reused
// as is; only the initialisation differs. Every warp runs the same walk, so they agree without barriers.
// Block-mask patterns (kList): the column lists of the mask (device copy, BlockMaskView::row_idx), walked as
// KeyTiles walks the row lists (lane c * 8 + k: positions k, k + 8, ... of key block j0 + c's list).
#pragma once
#include <climits>
#include <cstdint>

#include "cuda/common/numeric.cuh"       // floor_div
#include "cuda/common/seq_geometry.cuh"  // SeqGeometry
#include "cuda/sm80/key_tiles_sm80.cuh"
#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

// The query blocks (in steps of kBlockM rows) that see key blocks j0 + c * jstride, c < nblocks, for one
// head. Inherited names read with the axes exchanged: `block` is the query block, `sub` the step within it,
// `vis` bit c says that key block j0 + c * jstride is visible to it, `len_k` the end of the axis (one past the
// last query position of the sequence).
// kDescending: the query blocks from the last to the first (steps within a block still ascending); analytic
// patterns only. A lane's cursor then walks its segment downwards to `hi`, which holds the segment's first
// member, and the warp maximum is the next block (-1: none).
// kDirArg: the direction is the functions' `down` argument instead (ignored otherwise): the Hopper KV kernel
// picks it per unit (a folded pair of vertical tiles walks its second tile upwards,
// backward_scheduler_sm90.cuh). The fixed-direction code stays as it was (`if constexpr`: the portable
// kernels' SASS is unchanged).
template <int kBlockM, bool kList = false, bool kDescending = false, bool kDirArg = false>
struct QueryTiles : KeyTiles<kBlockM, kList> {
  static_assert(!(kList && kDescending), "descending walks are for analytic patterns only");
  static constexpr int kNoBlockDown = -1;

  // Query blocks [q_lo, q_end) hold rows of the sequence; pos_end: one past its last query position.
  __device__ __forceinline__ void init_columns(const PatternRules& p, int head, int j0, int jstride, int nblocks,
                                               int q_lo, int q_end, int pos_end, bool down = kDescending) {
    this->block_size = p.block_size;
    this->tiles_per_block = p.block_size > kBlockM ? p.block_size / kBlockM : 1;
    this->len_k = pos_end;
    this->last_position = INT_MAX;  // causality cuts steps at their start; the walk checks that
    if constexpr (kDirArg) this->cursor = down ? kNoBlockDown : kNoBlock;
    else this->cursor = kDescending ? kNoBlockDown : kNoBlock;
    this->stride = 1;
    this->hi = 0;
    const int lane = threadIdx.x % 32;
    const int c = lane / kLanesPerRowBlock, k = lane % kLanesPerRowBlock;
    if constexpr (kList) {
      const int j = j0 + c * jstride;
      if (c < nblocks && q_lo < q_end && j < p.mask.cols) {  // columns beyond the mask are seen by nobody
        const int64_t col = static_cast<int64_t>(mask_head(p, head)) * p.mask.cols + j;
        const int b0 = p.mask.col_ptr[col];
        this->init_list(p.mask.row_idx + b0, p.mask.col_ptr[col + 1] - b0, q_lo, q_end, k);
      }
    } else if (c < nblocks && q_lo < q_end) {
      const SegmentList segs = col_segments(p, head, j0 + c * jstride, q_end);
      Segment s{0, 0, 1, 0};
#pragma unroll
      for (int q = 0; q < kMaxSegments; ++q) {
        if (q == k) s = segs.seg[q];
      }
      if (k < segs.n) {
        const int first = segment_first_from(s, q_lo);
        if (first < s.hi) {
          this->stride = s.stride;
          if constexpr (kDirArg) {  // as below, the direction chosen at run time
            if (down) {
              this->cursor = (s.hi - 1) - pmod(s.hi - 1 - first, s.stride);
              this->hi = first;
            } else {
              this->cursor = first;
              this->hi = s.hi;
            }
          } else if constexpr (kDescending) {  // the last member below s.hi, down to the first
            this->cursor = (s.hi - 1) - pmod(s.hi - 1 - first, s.stride);
            this->hi = first;
          } else {
            this->cursor = first;
            this->hi = s.hi;
          }
        }
      }
    }
  }

  __device__ __forceinline__ int query_start() const { return this->block * this->block_size + this->sub * kBlockM; }

  // The next visible query block (descending walk): the warp maximum of the cursors.
  __device__ __forceinline__ bool next_block_down() {
    const int j = __reduce_max_sync(0xffffffffu, this->cursor);
    if (j == kNoBlockDown) return false;
    this->vis = this->row_blocks_of(__ballot_sync(0xffffffffu, this->cursor == j));
    if (this->cursor == j) this->cursor = j - this->stride >= this->hi ? j - this->stride : kNoBlockDown;
    this->block = j;
    this->sub = 0;
    return true;
  }

  __device__ __forceinline__ bool first(bool down = kDescending) {
    if constexpr (kDirArg) return down ? next_block_down() : this->next_block();
    else if constexpr (kDescending) return next_block_down();
    else return this->next_block();
  }
  __device__ __forceinline__ bool next(bool down = kDescending) {
    if constexpr (kDirArg) return this->next_sub() || (down ? next_block_down() : this->next_block());
    else if constexpr (kDescending) return this->next_sub() || next_block_down();
    else return this->next_sub() || this->next_block();
  }
};

// The CTA's constants of the walk. They live in shared memory (the kernel writes them once): read at
// each use, they take no registers across the steps, where dK and dV hold 128 of them at D = 128.
struct WalkGeometry {
  int head0, group;    // q heads head0 .. head0 + group - 1
  int j0, nblocks;     // the key tile's key blocks j0 + c, c < nblocks (StridedWalkGeometry: j0 + c * jstride)
  int k0, len_k;       // its first key; keys of the sequence
  int q_lo, q_end;     // query blocks holding rows of the sequence
  int pos_lo, pos_hi;  // absolute positions of the sequence's rows
  int offset, causal;  // position of the sequence's row 0; the pattern's causality
  // for the kernel's own use
  int bs_shift;        // log2(block size)
  uint32_t all_blocks; // vis of a step that sees every key block of the tile
  int64_t row_base;    // workspace row of the sequence's row 0
};

// The whole walk of one KV-kernel CTA: the q heads of the group in order, for each its query steps,
// skipping steps with no work (no row of the sequence, or, causal, every row before the first key).
// The Hopper kernel's tiles: key blocks j0 + c * jstride (pairs of non-adjacent blocks, the scheduler's).
// A separate type: the portable kernel's geometry stays as it was (at 255 registers, a field more in its
// shared struct, or a stride read, made ptxas spill in its step loop).
struct StridedWalkGeometry : WalkGeometry {
  int jstride;
  int descending;  // this unit's walk direction (kDirFromGeo walks)
  int fold_next;   // the unit is the first of a folded pair: its CTA takes the second next (the producer's)
};
// The walk fields that the KV head, the tile's first key, the sequence and the pattern decide alone, the same
// in every KV kernel (the portable kernel's init_walk_geometry, the Hopper producer's set_unit_walk_sm90),
// which set their tile's blocks between the two calls and the workspace row base after them. Two calls in
// this order: one call with the blocks set after it gave both kernels other SASS (instruction order, and 16
// instructions fewer in the Hopper producer); so split, their SASS is unchanged (cuobjdump -sass, compared).
__device__ __forceinline__ void set_walk_tile(WalkGeometry& geo, int head0, int group, int k0, int len_k, int bs) {
  geo.head0 = head0;
  geo.group = group;
  geo.k0 = k0;
  geo.len_k = len_k;
  geo.j0 = k0 / bs;
}
template <int kBlockN>
__device__ __forceinline__ void set_walk_rows(WalkGeometry& geo, const SeqGeometry& g, int bs, bool causal) {
  geo.offset = g.offset;
  geo.pos_lo = g.offset;
  geo.pos_hi = g.offset + g.len_q;
  geo.causal = causal ? 1 : 0;
  geo.q_lo = g.len_q > 0 ? max(floor_div(geo.pos_lo, bs), 0) : 0;  // blocks before position 0 see nothing
  geo.q_end = g.len_q > 0 ? floor_div(geo.pos_hi - 1, bs) + 1 : 0;
  geo.bs_shift = __ffs(bs) - 1;
  geo.all_blocks = bs >= kBlockN ? 1u : (1u << (kBlockN / bs)) - 1;
}
__device__ __forceinline__ int block_stride(const WalkGeometry&) { return 1; }
__device__ __forceinline__ int block_stride(const StridedWalkGeometry& g) { return g.jstride; }

// kDirFromGeo: the direction is geo->descending, read (shared memory) at each move instead of held.
template <int kBlockM, bool kList = false, class Geometry = WalkGeometry, bool kDescending = false,
          bool kDirFromGeo = false>
struct BackwardWalk {
  static_assert(!(kList && kDirFromGeo), "descending walks are for analytic patterns only");
  QueryTiles<kBlockM, kList, kDescending, kDirFromGeo> tiles;
  const PatternRules* pattern = nullptr;
  const Geometry* geo = nullptr;  // shared memory
  int gi = 0;                         // the current q head: geo->head0 + gi

  __device__ __forceinline__ int head() const { return geo->head0 + gi; }
  __device__ __forceinline__ bool down() const {
    if constexpr (kDirFromGeo) return geo->descending != 0;
    else return kDescending;
  }
  __device__ __forceinline__ int p0() const { return tiles.query_start(); }
  __device__ __forceinline__ uint32_t vis() const { return tiles.vis; }

  __device__ __forceinline__ bool has_work() const {
    const int p = p0();
    if (max(p, geo->pos_lo) >= min(p + kBlockM, geo->pos_hi)) return false;
    return !geo->causal || p + kBlockM - 1 >= geo->k0;
  }

  __device__ __forceinline__ void start_head() {
    tiles.init_columns(*pattern, head(), geo->j0, block_stride(*geo), geo->nblocks, geo->q_lo, geo->q_end,
                       geo->pos_hi, down());
  }

  // Moves to the first step with work from the current position (have: there is a current step).
  __device__ __forceinline__ bool settle(bool have) {
    for (;;) {
      while (have && !has_work()) have = tiles.next(down());
      if (have) return true;
      if (++gi >= geo->group) return false;
      start_head();
      have = tiles.first(down());
    }
  }

  __device__ __forceinline__ bool first() {
    gi = 0;
    start_head();
    return settle(tiles.first(down()));
  }
  __device__ __forceinline__ bool next() { return settle(tiles.next(down())); }
};

}  // namespace s2attn::cuda

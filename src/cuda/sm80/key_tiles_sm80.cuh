// Which key tiles a CTA of the forward kernel visits: the union, over the sparse query blocks ("row-blocks")
// the CTA's rows fall in, of their visible key blocks, in ascending order, each split into tiles of
// kBlockN keys. Enumerated in registers from the pattern's own segment lists (row_segments in
// pattern_rules.h): no index tensor, no plan step.
//
// How: the visible blocks of a row-block are a union of at most kMaxSegments arithmetic progressions
// (segments). Each lane of a warp owns one (row-block, segment) pair, lane = row-block * 8 + segment, and
// holds a cursor: the segment's next member not yet visited. The next visible block of the union is the
// warp minimum of the cursors (one redux.sync), the row-blocks that see it are the lanes whose cursor
// equals it (one ballot), and those lanes step their cursor by the segment's stride. A step costs a few
// instructions whatever the pattern. Every warp of the CTA runs the same enumeration, so they agree on the
// tile sequence without shared memory or barriers.
//
// Block-mask patterns (kList, a separate instantiation: the analytic code is unchanged): the visible blocks
// of a row-block are its sorted list in the mask (device copy, BlockMaskView::col_idx). Lane k of the
// row-block owns list positions k, k + 8, k + 16, ... (a "segment" of the list), so its cursor is its next
// unvisited entry; the warp minimum is again the next visible block of the union and the same ballot gives
// the row-blocks that see it. A lane whose entry is consumed moves to the entry 8 positions on, which it
// loaded one step ahead (its latency hides behind the blocks computed until that lane's turn comes again).
#pragma once
#include <climits>
#include <cstdint>

#include "s2attn/pattern_rules.h"

namespace s2attn::cuda {

constexpr int kLanesPerRowBlock = 8;  // one lane per segment of a row-block's list
static_assert(kMaxSegments <= kLanesPerRowBlock, "a row-block's segments must fit its lanes");
constexpr int kMaxRowBlocks = 32 / kLanesPerRowBlock;  // row-blocks one CTA may span
constexpr int kNoBlock = INT_MAX;

// The tile sequence of one CTA. kBlockN: keys per tile (<= block_size; a block of 128 keys is two tiles).
// kList: the pattern is a block mask (PatternRules::use_mask) whose lists are walked.
template <int kBlockN, bool kList = false>
struct KeyTiles {
  // this lane's segment
  int cursor = kNoBlock;  // next member not yet visited, kNoBlock when none
  int stride = 1;
  int hi = 0;
  // kList: this lane's entries of the list after `cursor`: lnext (loaded ahead, kNoBlock past the end),
  // then lptr[0], lptr[8], ... while lleft > 0 (lleft: entries from lptr to the end of the walked range)
  const int32_t* lptr = nullptr;
  int lleft = 0;
  int lnext = kNoBlock;
  // the CTA
  int block_size = 0;
  int tiles_per_block = 1;
  int len_k = 0;
  int last_position = INT_MAX;  // causal: no row of the CTA sees a key beyond it
  // the current tile
  int block = 0;     // key block
  int sub = 0;       // tile within the block
  uint32_t vis = 0;  // bit r: row-block r sees `block`

  // Row-block r of the CTA is absolute query block first_block + r; `active` has bit r set when the
  // row-block holds a row of the sequence (inactive row-blocks contribute nothing).
  __device__ __forceinline__ void init(const PatternRules& p, int head, int first_block, uint32_t active,
                                       int len_keys, int last_pos) {
    block_size = p.block_size;
    tiles_per_block = p.block_size > kBlockN ? p.block_size / kBlockN : 1;
    len_k = len_keys;
    last_position = p.causal ? last_pos : INT_MAX;
    const int lane = threadIdx.x % 32;
    const int r = lane / kLanesPerRowBlock, k = lane % kLanesPerRowBlock;
    const int i = first_block + r;
    if (r < kMaxRowBlocks && ((active >> r) & 1u) && i >= 0) {  // blocks before position 0 see nothing
      const int nk = (len_k + block_size - 1) / block_size;
      if constexpr (kList) {
        if (i < p.mask.rows) {  // rows beyond the mask see nothing (attends)
          const int64_t row = static_cast<int64_t>(mask_head(p, head)) * p.mask.rows + i;
          const int b0 = p.mask.row_ptr[row];
          init_list(p.mask.col_idx + b0, p.mask.row_ptr[row + 1] - b0, 0, p.causal ? min(nk, i + 1) : nk, k);
        }
      } else {
        const SegmentList segs = row_segments(p, head, i, nk);
        // a select over constant indices keeps the list out of local memory where the header allows it
        Segment s{0, 0, 1, 0};
#pragma unroll
        for (int q = 0; q < kMaxSegments; ++q) {
          if (q == k) s = segs.seg[q];
        }
        if (k < segs.n) {
          const int first = segment_first_from(s, 0);
          if (first < s.hi) {
            cursor = first;
            stride = s.stride;
            hi = s.hi;
          }
        }
      }
    }
  }

  // kList: this lane's cursor over the entries of list[0, count) in [lo, bound) (lane k of its row-block
  // takes the entries k, k + 8, ... of that range). The list is sorted ascending. The range's ends cost a
  // binary search each only where they cut the list (lo > 0; bound at or below the last entry).
  __device__ __forceinline__ void init_list(const int32_t* lst, int count, int lo, int bound, int k) {
    const int start = lo > 0 ? sorted_lower_bound(lst, count, lo) : 0;
    const int stop = count > 0 && lst[count - 1] >= bound ? sorted_lower_bound(lst, count, bound) : count;
    const int pos = start + k;
    cursor = pos < stop ? lst[pos] : kNoBlock;
    lnext = pos + kLanesPerRowBlock < stop ? lst[pos + kLanesPerRowBlock] : kNoBlock;
    lptr = lst + pos + 2 * kLanesPerRowBlock;
    lleft = stop - (pos + 2 * kLanesPerRowBlock);
  }

  // Moves to the first tile of the next visible key block; false when there is none.
  __device__ __forceinline__ bool next_block() {
    const int j = __reduce_min_sync(0xffffffffu, cursor);
    if (j == kNoBlock) return false;
    vis = row_blocks_of(__ballot_sync(0xffffffffu, cursor == j));
    if constexpr (kList) {
      if (cursor == j) {  // this lane's next entry (loaded ahead), then the load of the one after it
        cursor = lnext;
        lnext = lleft > 0 ? *lptr : kNoBlock;
        lptr += kLanesPerRowBlock;
        lleft -= kLanesPerRowBlock;
      }
    } else {
      // the members of a segment are an arithmetic progression: the one after j is j + stride
      if (cursor == j) cursor = j + stride < hi ? j + stride : kNoBlock;
    }
    block = j;
    sub = 0;
    return true;
  }

  // Bit r set iff a lane of row-block r is in `hit` (a ballot over the lanes).
  __device__ __forceinline__ static uint32_t row_blocks_of(uint32_t hit) {
    uint32_t rows = 0;
#pragma unroll
    for (int r = 0; r < kMaxRowBlocks; ++r) {
      if ((hit >> (r * kLanesPerRowBlock)) & ((1u << kLanesPerRowBlock) - 1)) rows |= 1u << r;
    }
    return rows;
  }

  __device__ __forceinline__ bool first() { return next_block(); }

  // Moves to the next tile of this block if it holds keys some row may see; false when there is none.
  __device__ __forceinline__ bool next_sub() {
    if (sub + 1 < tiles_per_block) {
      const int k0 = block * block_size + (sub + 1) * kBlockN;
      if (k0 < len_k && k0 <= last_position) {
        ++sub;
        return true;
      }
    }
    return false;
  }

  // Moves to the next tile: the next tile of this block, else the next visible block. False when there is
  // none.
  __device__ __forceinline__ bool next() { return next_sub() || next_block(); }

  __device__ __forceinline__ int key_start() const { return block * block_size + sub * kBlockN; }
};

}  // namespace s2attn::cuda

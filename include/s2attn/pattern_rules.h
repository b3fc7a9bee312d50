// The one definition of the S2 block pattern: "does head h, query block i see key block j", and the
// enumerators of the visible key blocks of a row (and query blocks of a column). Plain structs and
// __host__ __device__ functions, shared by the CPU reference, the portable CUDA and the Hopper kernels.
//
// Block indices are absolute: query block i holds absolute query positions [i*bs, (i+1)*bs), key block j
// holds key positions [j*bs, (j+1)*bs). Causality (j <= i) is part of the pattern; the element-wise cut on
// the diagonal block is the kernels' business.
#pragma once
#include <cstdint>

#include "s2attn/config.h"

namespace s2attn {

enum class VertPosition : int32_t {
  absolute = 0,  // vertical blocks at fixed key-block indices (KV-cache efficient; dkernel's causal default)
  relative = 1,  // vertical blocks at fixed distances from the local window (dkernel's bidirectional default)
};

constexpr int kMaxRangeRules = 4;
constexpr int kMaxPatternHeads = 256;
// local + 2 vertical progressions + sink + ranges
constexpr int kMaxSegments = 4 + kMaxRangeRules;

// Inside a block range, visible iff (j + head_phase) % stride == 0; stride 1 makes the range dense.
struct RangeRule {
  int32_t begin = 0;     // inclusive; key block (absolute) or block distance i - j (relative)
  int32_t end = 0;       // exclusive
  int32_t stride = 1;
  int32_t relative = 0;  // 0: [begin, end) are key blocks; 1: they are distances i - j
};

// An arbitrary per-head block mask with its compressed row and column lists (host or device pointers; a
// device view, Pattern::mask_view, has no `bits`: device code asks mask_list_attends instead of attends).
// Rows and columns are absolute block indices; heads is 1 (shared), num_kv_heads or num_heads.
struct BlockMaskView {
  const uint8_t* bits = nullptr;     // [heads, rows, cols], 0 or 1
  const int32_t* row_ptr = nullptr;  // [heads * rows + 1], offsets into col_idx
  const int32_t* col_idx = nullptr;  // visible key blocks of each row, ascending
  const int32_t* col_ptr = nullptr;  // [heads * cols + 1], offsets into row_idx
  const int32_t* row_idx = nullptr;  // query blocks that see each column, ascending
  int32_t heads = 0, rows = 0, cols = 0;
};

// The analytic rules, OR-ed together, then AND-ed with causality. Built and validated by s2attn::Pattern.
struct PatternRules {
  int32_t block_size = 64;
  int32_t causal = 1;
  int32_t num_heads = 1;     // query heads the pattern is defined for
  int32_t num_kv_heads = 1;  // per-KV-head patterns (dkernel's default) unless per_q_head
  int32_t per_q_head = 0;
  int32_t homo_head = 0;     // every head has head 0's vertical phase
  int32_t local_left = 1;    // local window, diagonal block included
  int32_t local_right = 1;   // bidirectional: blocks to the right, diagonal included
  int32_t vert_stride = 0;   // 0: no vertical rule
  int32_t head_step = 1;     // vertical phase shift per pattern head
  int32_t head_offset = 0;
  int32_t vert_position = static_cast<int32_t>(VertPosition::absolute);
  int32_t sink_blocks = 0;
  int32_t dense_prefix_blocks = 0;
  int32_t num_ranges = 0;
  RangeRule ranges[kMaxRangeRules];
  uint64_t dense_heads[kMaxPatternHeads / 64] = {0, 0, 0, 0};  // bit per pattern head
  int32_t use_mask = 0;  // 1: `mask` decides (with causality); the rules above are ignored
  BlockMaskView mask;
};

// ---------------------------------------------------------------------------------------------------------
// Scalar helpers

S2_HD int32_t pmod(int32_t a, int32_t m) {
  const int32_t r = a % m;
  return r < 0 ? r + m : r;
}
S2_HD int32_t imin(int32_t a, int32_t b) { return a < b ? a : b; }
// a / d for a >= 0 and d >= 1; on the GPU a shift when d is a power of two (KV heads, group sizes, block sizes
// and the usual strides are): a division by a runtime value is ~20 dependent instructions there, and a paged
// decode CTA chained ~20 of them before its first load (ncu, session 10).
S2_HD int32_t div_nonneg(int32_t a, int32_t d) {
#if defined(__CUDA_ARCH__)
  if ((d & (d - 1)) == 0) return a >> (__ffs(d) - 1);
#endif
  return static_cast<int32_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(d));
}
S2_HD int32_t imax(int32_t a, int32_t b) { return a > b ? a : b; }

// The head whose pattern query head `h` follows.
S2_HD int32_t pattern_head(const PatternRules& p, int32_t h) {
  if (p.per_q_head) return h;
  return h / (p.num_heads / p.num_kv_heads);
}

S2_HD bool is_dense_head(const PatternRules& p, int32_t ph) {
  return (p.dense_heads[ph >> 6] >> (ph & 63)) & 1u;
}

// Shift of the vertical (and range) progressions for pattern head ph.
S2_HD int32_t vertical_phase(const PatternRules& p, int32_t ph) {
  return p.homo_head ? p.head_offset : ph * p.head_step + p.head_offset;
}

S2_HD int32_t mask_head(const PatternRules& p, int32_t h) {
  if (p.mask.heads == 1) return 0;
  if (p.mask.heads == p.num_heads) return h;
  return h / (p.num_heads / p.num_kv_heads);
}

// First position of sorted list[0, n) whose entry is >= x (n when none).
S2_HD int32_t sorted_lower_bound(const int32_t* list, int32_t n, int32_t x) {
  int32_t first = 0;
  while (n > 0) {
    const int32_t half = n / 2;
    if (list[first + half] < x) {
      first += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return first;
}

// ---------------------------------------------------------------------------------------------------------
// attends(h, i, j): the definition every backend and every enumerator must agree with.

S2_HD bool attends(const PatternRules& p, int32_t h, int32_t i, int32_t j) {
  if (i < 0 || j < 0) return false;
  if (p.causal && j > i) return false;
  if (p.use_mask) {
    const BlockMaskView& m = p.mask;
    if (i >= m.rows || j >= m.cols) return false;
    return m.bits[(static_cast<int64_t>(mask_head(p, h)) * m.rows + i) * m.cols + j] != 0;
  }
  const int32_t ph = pattern_head(p, h);
  if (is_dense_head(p, ph)) return true;
  if (i < p.dense_prefix_blocks) return true;
  if (j < p.sink_blocks) return true;
  const int32_t left = p.local_left;
  const int32_t right = p.causal ? 1 : p.local_right;
  if (i - j < left && j - i < right) return true;
  const int32_t phase = vertical_phase(p, ph);
  if (p.vert_stride > 0) {
    if (p.vert_position == static_cast<int32_t>(VertPosition::relative)) {
      const int32_t d = imax(i - j - left + 1, 0) + imax(j - i - right + 1, 0);
      if (d % p.vert_stride == 0) return true;
    } else if (pmod(j + phase, p.vert_stride) == 0) {
      return true;
    }
  }
  for (int r = 0; r < p.num_ranges; ++r) {
    const RangeRule& rr = p.ranges[r];
    const int32_t c = rr.relative ? i - j : j;
    if (c >= rr.begin && c < rr.end && pmod(j + phase, rr.stride) == 0) return true;
  }
  return false;
}

// attends for a block-mask pattern from its row lists alone (a binary search): what device code asks of a
// device view, which carries no `bits`. Requires p.use_mask.
S2_HD bool mask_list_attends(const PatternRules& p, int32_t h, int32_t i, int32_t j) {
  const BlockMaskView& m = p.mask;
  if (i < 0 || j < 0 || i >= m.rows || j >= m.cols) return false;
  if (p.causal && j > i) return false;
  const int64_t row = static_cast<int64_t>(mask_head(p, h)) * m.rows + i;
  const int32_t* list = m.col_idx + m.row_ptr[row];
  const int32_t n = m.row_ptr[row + 1] - m.row_ptr[row];
  const int32_t at = sorted_lower_bound(list, n, j);
  return at < n && list[at] == j;
}

// ---------------------------------------------------------------------------------------------------------
// Enumeration: the visible blocks of a row (or column) are a union of a few arithmetic progressions
// ("segments"): the local window is one run, the vertical rule one progression below (and, bidirectional,
// one above) it. Iterating them is a k-way merge in registers; no index tensor, no plan step.

struct Segment {
  int32_t lo = 0, hi = 0;  // [lo, hi)
  int32_t stride = 1;
  int32_t phase = 0;       // members: j with j % stride == phase
};

// Smallest member of s that is >= x, or s.hi if none.
S2_HD int32_t segment_first_from(const Segment& s, int32_t x) {
  const int32_t start = imax(s.lo, x);
  if (start >= s.hi) return s.hi;
  const int32_t j = start + pmod(s.phase - start, s.stride);
  return j < s.hi ? j : s.hi;
}

struct SegmentList {
  Segment seg[kMaxSegments];
  int32_t n = 0;
  int32_t end = 0;  // exclusive bound: no member is >= end

  S2_HD void add(int32_t lo, int32_t hi, int32_t stride, int32_t phase) {
    lo = imax(lo, 0);
    hi = imin(hi, end);
    if (lo >= hi) return;
    const Segment s{lo, hi, stride, pmod(phase, stride)};
    // a select over constant indices (not seg[n] = s): the list stays in registers on the GPU
    for (int k = 0; k < kMaxSegments; ++k) {
      if (k == n) seg[k] = s;
    }
    ++n;
  }
  // Smallest member >= x, or `end` when there is none.
  S2_HD int32_t next_from(int32_t x) const {
    int32_t best = end;
    for (int k = 0; k < kMaxSegments && k < n; ++k) {  // constant bound: unrollable, registers on the GPU
      const int32_t j = segment_first_from(seg[k], x);
      if (j < seg[k].hi && j < best) best = j;
    }
    return best;
  }
  S2_HD int32_t first() const { return next_from(0); }
  S2_HD int32_t next(int32_t j) const { return next_from(j + 1); }
};

// Visible key blocks of query block i for head h, among key blocks [0, nk). Analytic rules only.
S2_HD SegmentList row_segments(const PatternRules& p, int32_t h, int32_t i, int32_t nk) {
  SegmentList s;
  s.end = p.causal ? imin(nk, i + 1) : nk;
  if (i < 0) {  // no such query block: nothing is visible (keeps the non-causal case from seeing blocks)
    s.end = 0;
    return s;
  }
  const int32_t ph = pattern_head(p, h);
  if (is_dense_head(p, ph) || i < p.dense_prefix_blocks) {
    s.add(0, s.end, 1, 0);
    return s;
  }
  const int32_t left = p.local_left;
  const int32_t right = p.causal ? 1 : p.local_right;
  const int32_t win_lo = i - left + 1;  // first key block of the local window
  const int32_t win_hi = i + right;     // one past its last
  s.add(win_lo, win_hi, 1, 0);
  if (p.sink_blocks > 0) s.add(0, p.sink_blocks, 1, 0);
  const int32_t phase = vertical_phase(p, ph);
  if (p.vert_stride > 0) {
    if (p.vert_position == static_cast<int32_t>(VertPosition::relative)) {
      // left of the window: d = win_lo - j; right of it: d = j - (win_hi - 1)
      s.add(0, win_lo, p.vert_stride, win_lo);
      s.add(win_hi, s.end, p.vert_stride, win_hi - 1);
    } else {
      s.add(0, win_lo, p.vert_stride, -phase);
      s.add(win_hi, s.end, p.vert_stride, -phase);
    }
  }
  for (int r = 0; r < p.num_ranges; ++r) {
    const RangeRule& rr = p.ranges[r];
    if (rr.relative) {
      s.add(i - rr.end + 1, i - rr.begin + 1, rr.stride, -phase);  // i - j in [begin, end)
    } else {
      s.add(rr.begin, rr.end, rr.stride, -phase);
    }
  }
  return s;
}

// Query blocks among [0, nq) that see key block j for head h. Analytic rules only.
S2_HD SegmentList col_segments(const PatternRules& p, int32_t h, int32_t j, int32_t nq) {
  SegmentList s;
  s.end = nq;
  const int32_t lo = p.causal ? j : 0;
  const int32_t ph = pattern_head(p, h);
  const int32_t phase = vertical_phase(p, ph);
  const bool absolute_vertical =
      p.vert_stride > 0 && p.vert_position == static_cast<int32_t>(VertPosition::absolute) &&
      pmod(j + phase, p.vert_stride) == 0;
  if (is_dense_head(p, ph) || j < p.sink_blocks || absolute_vertical) {
    s.add(lo, nq, 1, 0);
    return s;
  }
  const int32_t left = p.local_left;
  const int32_t right = p.causal ? 1 : p.local_right;
  if (p.dense_prefix_blocks > 0) s.add(lo, p.dense_prefix_blocks, 1, 0);
  s.add(imax(lo, j - right + 1), j + left, 1, 0);  // i - j < left and j - i < right
  if (p.vert_stride > 0 && p.vert_position == static_cast<int32_t>(VertPosition::relative)) {
    s.add(j + left, nq, p.vert_stride, j + left - 1);          // below the window: d = i - j - left + 1
    s.add(lo, imin(j - right + 1, nq), p.vert_stride, j - right + 1);  // above it: d = j - i - right + 1
  }
  for (int r = 0; r < p.num_ranges; ++r) {
    const RangeRule& rr = p.ranges[r];
    if (pmod(j + phase, rr.stride) != 0) continue;
    if (rr.relative) {
      s.add(imax(lo, j + rr.begin), j + rr.end, 1, 0);
    } else if (j >= rr.begin && j < rr.end) {
      s.add(lo, nq, 1, 0);
    }
  }
  return s;
}

// Iterates the visible key blocks of one row (or query blocks of one column), from the analytic rules or
// from the compressed lists of a block mask. Usage:
//   for (int32_t j = it.first(); j < it.end(); j = it.next(j)) ...
struct BlockIterator {
  SegmentList segs;
  const int32_t* list = nullptr;  // mask lists: [list, list + count)
  int32_t count = 0;
  int32_t bound = 0;
  int32_t pos = 0;
  bool from_list = false;

  S2_HD int32_t end() const { return from_list ? bound : segs.end; }
  S2_HD int32_t first() {
    if (!from_list) return segs.first();
    pos = 0;
    return advance();
  }
  S2_HD int32_t next(int32_t j) {
    if (!from_list) return segs.next(j);
    ++pos;
    return advance();
  }

 private:
  S2_HD int32_t advance() {
    while (pos < count && list[pos] >= bound) ++pos;  // lists are sorted; entries past bound are skipped
    return pos < count ? list[pos] : bound;
  }
};

// Visible key blocks of query block i (head h) among [0, nk).
S2_HD BlockIterator row_blocks(const PatternRules& p, int32_t h, int32_t i, int32_t nk) {
  BlockIterator it;
  if (!p.use_mask) {
    it.segs = row_segments(p, h, i, nk);
    return it;
  }
  it.from_list = true;
  it.bound = p.causal ? imin(nk, i + 1) : nk;
  if (i >= 0 && i < p.mask.rows) {
    const int64_t row = static_cast<int64_t>(mask_head(p, h)) * p.mask.rows + i;
    it.list = p.mask.col_idx + p.mask.row_ptr[row];
    it.count = p.mask.row_ptr[row + 1] - p.mask.row_ptr[row];
  }
  return it;
}

// Query blocks among [0, nq) that see key block j (head h).
S2_HD BlockIterator col_blocks(const PatternRules& p, int32_t h, int32_t j, int32_t nq) {
  BlockIterator it;
  if (!p.use_mask) {
    it.segs = col_segments(p, h, j, nq);
    return it;
  }
  it.from_list = true;
  it.bound = nq;
  if (j >= 0 && j < p.mask.cols) {
    const int64_t col = static_cast<int64_t>(mask_head(p, h)) * p.mask.cols + j;
    it.list = p.mask.row_idx + p.mask.col_ptr[col];
    it.count = p.mask.col_ptr[col + 1] - p.mask.col_ptr[col];
    // causal: rows < j never see j; the list holds none (the mask is AND-ed with causality when built)
  }
  return it;
}

}  // namespace s2attn

// Split-KV key ranges of paged attention: boundaries that divide a row's visible key blocks evenly among the
// splits. Host and device (the CUDA decode kernel computes its own range; tests check it on the CPU).
#pragma once
#include <cstdint>

#include "s2attn/pattern_rules.h"

namespace s2attn {

// Members of segment s below x (closed form).
S2_HD int32_t segment_count_below(const Segment& s, int32_t x) {
  const int32_t m = imin(x, s.hi);
  const int32_t first = segment_first_from(s, s.lo);
  return first < m ? (m - 1 - first) / s.stride + 1 : 0;
}

// Members of all of s's segments below x (a block in two segments counts twice).
S2_HD int32_t segments_count_below(const SegmentList& s, int32_t x) {
  int32_t n = 0;
  for (int k = 0; k < kMaxSegments && k < s.n; ++k) n += segment_count_below(s.seg[k], x);
  return n;
}

// The key-block range [*lo, *hi) of split `split` of `splits`, for the rows of head h at query block i
// (the CTA's first head and last query block) among nk key blocks. The boundaries divide that row's
// visible blocks evenly (segments that overlap count twice), so the split holding the local window does
// not carry most of the work, as an even split of the key range did. Whatever the boundaries, the ranges
// of splits 0..splits-1 partition [0, nk): every block lies in exactly one, so the result stays exact for
// every row of the CTA; only the balance is approximate.
S2_HD void balanced_split_range(const PatternRules& p, int32_t h, int32_t i, int32_t nk, int32_t split,
                                int32_t splits, int32_t* lo, int32_t* hi) {
  const SegmentList s = row_segments(p, h, i, nk);
  const int32_t total = segments_count_below(s, nk);
  int32_t bounds[2];
  for (int e = 0; e < 2; ++e) {
    const int32_t part = split + e;
    int32_t a = 0;  // the boundary: smallest x with count_below(x) >= target (non-decreasing in x)
    if (part >= splits) {
      a = nk;
    } else if (part > 0) {
      const int64_t target = (int64_t(total) * part + splits - 1) / splits;
      int32_t b = nk;
      while (a < b) {
        const int32_t mid = a + (b - a) / 2;
        if (segments_count_below(s, mid) >= target) {
          b = mid;
        } else {
          a = mid + 1;
        }
      }
    }
    bounds[e] = a;
  }
  *lo = bounds[0];
  *hi = bounds[1];
}

}  // namespace s2attn

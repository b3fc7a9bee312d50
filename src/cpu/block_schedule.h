// Block geometry of one sequence and the task lists of the CPU kernels: which query rows and key tokens
// a block holds, walking the visible blocks from a start, and longest-first task ordering.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/attention_params.h"
#include "s2attn/pattern_rules.h"

namespace s2attn::cpu {

inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Sequence b's blocks. Query row r sits at absolute position offset + r, in query block
// floor((offset + r) / bs); key token t is in key block t / bs.
struct SeqBlocks {
  int64_t q_begin = 0, k_begin = 0;  // first token of the sequence in the operands
  int32_t len_q = 0, len_k = 0;
  int64_t offset = 0;  // absolute position of query row 0 (negative rows see nothing)
  int32_t bs = 1;
  int32_t nk = 0;                  // key blocks: ceil(len_k / bs)
  int32_t q_first = 0, q_end = 0;  // query blocks holding rows: [q_first, q_end); q_first may be < 0

  // The rows [row_lo, row_hi) of query block i.
  int32_t row_lo(int32_t i) const {
    return static_cast<int32_t>(std::max<int64_t>(0, int64_t(i) * bs - offset));
  }
  int32_t row_hi(int32_t i) const {
    return static_cast<int32_t>(std::min<int64_t>(len_q, (int64_t(i) + 1) * bs - offset));
  }
  // Key tokens in key block j.
  int32_t keys(int32_t j) const { return std::min(bs, len_k - j * bs); }
};

// The geometry of a sequence whose rows start at q_begin and keys at k_begin in the operands (the derived
// block counts set here, once for the contiguous and the paged calls).
inline SeqBlocks make_seq_blocks(int64_t q_begin, int64_t k_begin, int32_t len_q, int32_t len_k, int64_t offset,
                                 int32_t bs) {
  SeqBlocks s;
  s.q_begin = q_begin;
  s.k_begin = k_begin;
  s.len_q = len_q;
  s.len_k = len_k;
  s.offset = offset;
  s.bs = bs;
  s.nk = (s.len_k + s.bs - 1) / s.bs;
  if (s.len_q > 0) {
    s.q_first = static_cast<int32_t>(floor_div(s.offset, s.bs));
    s.q_end = static_cast<int32_t>(floor_div(s.offset + s.len_q - 1, s.bs)) + 1;
  }
  return s;
}

inline SeqBlocks seq_blocks(const AttentionParams& p, int32_t b) {
  return make_seq_blocks(p.q_begin(b), p.k_begin(b), p.len_q(b), p.len_k(b), p.offset_q(b), p.pattern.block_size);
}

// First block of `it` that is >= lo (it.end() if none); continue with it.next(). Analytic rules jump
// straight there; mask lists are walked (they hold only visible blocks).
inline int32_t first_block_from(BlockIterator& it, int32_t lo) {
  if (!it.from_list) return it.segs.next_from(lo);
  int32_t x = it.first();
  while (x < lo && x < it.end()) x = it.next(x);
  return x;
}

inline int64_t count_blocks(BlockIterator it, int32_t lo) {
  int64_t n = 0;
  for (int32_t x = first_block_from(it, lo); x < it.end(); x = it.next(x)) ++n;
  return n;
}

// How many consecutive q heads of a GQA group one query-block task takes together: heads that follow the
// same block pattern see the same key blocks, so their rows can share each key block's load and GEMMs.
// The largest divisor of the group size whose packed rows (heads * block_size) stay within kMaxPackedRows
// (cache-sized tiles); 1 when the group's heads have different patterns.
// rows_per_head: the rows one head contributes (the block size, or fewer when queries are few: decode).
constexpr int kMaxPackedRows = 256;
inline int heads_per_task(const PatternRules& r, int32_t num_heads, int32_t G, int32_t rows_per_head) {
  for (int32_t h = 0; h < num_heads; ++h) {
    const int32_t h0 = h - h % G;
    const bool same =
        r.use_mask ? mask_head(r, h) == mask_head(r, h0) : pattern_head(r, h) == pattern_head(r, h0);
    if (!same) return 1;
  }
  int n = std::max(1, std::min<int>(G, kMaxPackedRows / std::max(1, rows_per_head)));
  while (G % n != 0) --n;
  return n;
}
inline int heads_per_task(const AttentionParams& p) {
  return heads_per_task(p.pattern, p.num_heads, p.group_size(), p.pattern.block_size);
}

// One unit of parallel work: sequence b, head h (query head or KV head), block blk (query or key block).
struct BlockTask {
  int32_t b = 0, h = 0, blk = 0;
  int64_t cost = 0;  // estimated work, for longest-first ordering
  int32_t kind = 0;  // for loops mixing kinds of task
};

// Longest first (ties keep their order): with the dynamic scheduler this is an LPT schedule.
inline void order_longest_first(std::vector<BlockTask>& tasks) {
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const BlockTask& a, const BlockTask& b) { return a.cost > b.cost; });
}

// The forward's work list: one task per (sequence, group of nh query heads, query block), costed by its
// visible key blocks times its rows, longest first. Shared by the tiled and the paged forwards.
inline std::vector<BlockTask> query_block_tasks(const PatternRules& rules, int32_t num_heads, int nh,
                                                const std::vector<SeqBlocks>& seqs) {
  std::vector<BlockTask> tasks;
  for (int32_t b = 0; b < static_cast<int32_t>(seqs.size()); ++b) {
    const SeqBlocks& s = seqs[b];
    for (int32_t h = 0; h < num_heads; h += nh) {
      for (int32_t i = s.q_first; i < s.q_end; ++i) {
        const int64_t rows = nh * (s.row_hi(i) - s.row_lo(i));
        const int64_t blocks = i < 0 ? 0 : count_blocks(row_blocks(rules, h, i, s.nk), 0);
        tasks.push_back({b, h, i, (blocks * s.bs + 1) * rows});
      }
    }
  }
  order_longest_first(tasks);
  return tasks;
}

}  // namespace s2attn::cpu

// Validated construction of patterns; inspection helpers (block mask, visible-block count, density).
#include <algorithm>
#include <string>

#include "s2attn/errors.h"
#include "s2attn/pattern.h"
#include "pattern/device_mask.h"

namespace s2attn {
namespace {

void check_block_size(int bs) {
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128) {
    throw InvalidArgument("block_size", "one of 16, 32, 64, 128, got " + std::to_string(bs));
  }
}

int check_heads(int num_heads, std::optional<int> num_kv_heads) {
  if (num_heads < 1 || num_heads > kMaxPatternHeads) {
    throw InvalidArgument("num_heads", "in [1, " + std::to_string(kMaxPatternHeads) + "], got " +
                                           std::to_string(num_heads));
  }
  const int kv = num_kv_heads.value_or(num_heads);
  if (kv < 1 || num_heads % kv != 0) {
    throw InvalidArgument("num_kv_heads", "a divisor of num_heads (" + std::to_string(num_heads) +
                                              "), got " + std::to_string(kv));
  }
  return kv;
}

void set_dense_head(PatternRules& r, int ph) { r.dense_heads[ph >> 6] |= uint64_t(1) << (ph & 63); }

int pattern_head_count(const PatternRules& r) { return r.per_q_head ? r.num_heads : r.num_kv_heads; }

}  // namespace

Pattern Pattern::local_stride(const LocalStrideParams& a) {
  check_block_size(a.block_size);
  const int kv = check_heads(a.num_heads, a.num_kv_heads);
  if (a.local_blocks < 1) {
    throw InvalidArgument("local_blocks", ">= 1, got " + std::to_string(a.local_blocks));
  }
  if (a.local_right && *a.local_right < 1) {
    throw InvalidArgument("local_right", ">= 1, got " + std::to_string(*a.local_right));
  }
  if (a.local_right && a.causal) {
    throw InvalidArgument("local_right", "only for bidirectional patterns (causal=false)");
  }
  if (a.vert_stride < 1) {
    throw InvalidArgument("vert_stride", ">= 1, got " + std::to_string(a.vert_stride));
  }
  if (a.head_sliding_step && *a.head_sliding_step < 0) {
    throw InvalidArgument("head_sliding_step", ">= 0, got " + std::to_string(*a.head_sliding_step));
  }
  Pattern p;
  PatternRules& r = p.rules_;
  r.block_size = a.block_size;
  r.causal = a.causal ? 1 : 0;
  r.num_heads = a.num_heads;
  r.num_kv_heads = kv;
  r.per_q_head = a.per_q_head ? 1 : 0;
  r.homo_head = a.homo_head ? 1 : 0;
  r.local_left = a.local_blocks;
  r.local_right = a.causal ? 1 : a.local_right.value_or(a.local_blocks);
  r.vert_stride = a.vert_stride;
  // dkernel: step = max(1, vert_stride // num_heads) with the query head count.
  r.head_step = a.head_sliding_step.value_or(std::max(1, a.vert_stride / a.num_heads));
  r.head_offset = a.head_sliding_offset;
  r.vert_position = static_cast<int32_t>(
      a.vert_position.value_or(a.causal ? VertPosition::absolute : VertPosition::relative));
  const int heads = pattern_head_count(r);
  if (a.num_dense_heads < 0 || a.num_dense_heads > heads) {
    throw InvalidArgument("num_dense_heads", "in [0, " + std::to_string(heads) + "], got " +
                                                 std::to_string(a.num_dense_heads));
  }
  if (a.homo_head && a.num_dense_heads > 0) {
    throw InvalidArgument("num_dense_heads", "0 when homo_head is set (every head has one pattern)");
  }
  for (int ph = heads - a.num_dense_heads; ph < heads; ++ph) set_dense_head(r, ph);
  return p;
}

Pattern Pattern::dense(int num_heads, int block_size, bool causal, std::optional<int> num_kv_heads) {
  check_block_size(block_size);
  const int kv = check_heads(num_heads, num_kv_heads);
  Pattern p;
  PatternRules& r = p.rules_;
  r.block_size = block_size;
  r.causal = causal ? 1 : 0;
  r.num_heads = num_heads;
  r.num_kv_heads = kv;
  r.local_left = 1;
  r.local_right = 1;
  for (int ph = 0; ph < kv; ++ph) set_dense_head(r, ph);
  return p;
}

Pattern Pattern::from_block_mask(const uint8_t* bits, int heads, int rows, int cols, int num_heads,
                                 int block_size, bool causal, std::optional<int> num_kv_heads) {
  check_block_size(block_size);
  const int kv = check_heads(num_heads, num_kv_heads);
  if (heads != 1 && heads != kv && heads != num_heads) {
    throw InvalidArgument("mask", "heads extent 1, num_kv_heads (" + std::to_string(kv) +
                                      ") or num_heads (" + std::to_string(num_heads) + "), got " +
                                      std::to_string(heads));
  }
  Pattern p;
  p.mask_ = std::make_shared<const BlockMask>(bits, heads, rows, cols, causal);
  p.device_masks_ = detail::make_device_mask_cache(p.mask_);
  PatternRules& r = p.rules_;
  r.block_size = block_size;
  r.causal = causal ? 1 : 0;
  r.num_heads = num_heads;
  r.num_kv_heads = kv;
  r.use_mask = 1;
  r.mask = p.mask_->view();
  return p;
}

void Pattern::require_rules(const char* what) const {
  if (rules_.use_mask) {
    throw InvalidArgument(what, "rules apply to analytic patterns; a block-mask pattern is already arbitrary");
  }
}

Pattern& Pattern::with_sink(int blocks) {
  require_rules("sink");
  if (blocks < 0) throw InvalidArgument("sink", ">= 0 blocks, got " + std::to_string(blocks));
  rules_.sink_blocks = blocks;
  return *this;
}

Pattern& Pattern::with_dense_prefix(int blocks) {
  require_rules("dense_prefix");
  if (blocks < 0) throw InvalidArgument("dense_prefix", ">= 0 blocks, got " + std::to_string(blocks));
  rules_.dense_prefix_blocks = blocks;
  return *this;
}

Pattern& Pattern::with_range(const RangeRule& rr) {
  require_rules("range");
  if (rules_.num_ranges >= kMaxRangeRules) {
    throw InvalidArgument("range", "at most " + std::to_string(kMaxRangeRules) + " range rules");
  }
  if (rr.stride < 1) throw InvalidArgument("range.stride", ">= 1, got " + std::to_string(rr.stride));
  if (rr.begin < 0 || rr.end < rr.begin) {
    throw InvalidArgument("range", "0 <= begin <= end, got [" + std::to_string(rr.begin) + ", " +
                                       std::to_string(rr.end) + ")");
  }
  RangeRule r = rr;
  r.relative = rr.relative ? 1 : 0;
  rules_.ranges[rules_.num_ranges++] = r;
  return *this;
}

Pattern& Pattern::with_dense_heads(const std::vector<int>& pattern_heads) {
  require_rules("dense_heads");
  const int heads = pattern_head_count(rules_);
  if (rules_.homo_head && !pattern_heads.empty()) {
    throw InvalidArgument("dense_heads", "empty when homo_head is set");
  }
  for (int ph : pattern_heads) {
    if (ph < 0 || ph >= heads) {
      throw InvalidArgument("dense_heads", "pattern head indices in [0, " + std::to_string(heads) +
                                               "), got " + std::to_string(ph));
    }
    set_dense_head(rules_, ph);
  }
  return *this;
}

std::vector<uint8_t> Pattern::to_block_mask(int nq_blocks, int nk_blocks, int q_first_block) const {
  if (nq_blocks < 0) throw InvalidArgument("nq_blocks", ">= 0, got " + std::to_string(nq_blocks));
  if (nk_blocks < 0) throw InvalidArgument("nk_blocks", ">= 0, got " + std::to_string(nk_blocks));
  if (q_first_block < 0) {
    throw InvalidArgument("q_first_block", ">= 0, got " + std::to_string(q_first_block));
  }
  std::vector<uint8_t> out(size_t(rules_.num_heads) * nq_blocks * nk_blocks, 0);
  for (int h = 0; h < rules_.num_heads; ++h) {
    for (int r = 0; r < nq_blocks; ++r) {
      BlockIterator it = row_blocks(rules_, h, q_first_block + r, nk_blocks);
      for (int32_t j = it.first(); j < it.end(); j = it.next(j)) {
        out[(size_t(h) * nq_blocks + r) * nk_blocks + j] = 1;
      }
    }
  }
  return out;
}

namespace {
// Visible (head, block pair) count over the query blocks of a seqlen_q-query chunk ending at seqlen_k.
int64_t count_blocks(const PatternRules& rules, int64_t seqlen_q, int64_t seqlen_k) {
  const int64_t bs = rules.block_size;
  const int64_t first_pos = seqlen_k - seqlen_q;
  const int32_t nk = static_cast<int32_t>((seqlen_k + bs - 1) / bs);
  const int32_t i0 = static_cast<int32_t>(std::max<int64_t>(first_pos, 0) / bs);
  const int32_t i1 = static_cast<int32_t>((seqlen_k + bs - 1) / bs);
  int64_t n = 0;
  for (int h = 0; h < rules.num_heads; ++h) {
    for (int32_t i = i0; i < i1; ++i) {
      BlockIterator it = row_blocks(rules, h, i, nk);
      for (int32_t j = it.first(); j < it.end(); j = it.next(j)) ++n;
    }
  }
  return n;
}
}  // namespace

int64_t Pattern::visible_blocks(int64_t seqlen_q, int64_t seqlen_k) const {
  if (seqlen_q < 0 || seqlen_k < seqlen_q) {
    throw InvalidArgument("seqlen_q", "0 <= seqlen_q <= seqlen_k");
  }
  return count_blocks(rules_, seqlen_q, seqlen_k);
}

double Pattern::density(int64_t seqlen_q, int64_t seqlen_k) const {
  PatternRules all = rules_;
  all.use_mask = 0;
  all.sink_blocks = all.dense_prefix_blocks = all.num_ranges = 0;
  all.per_q_head = 0;
  for (int ph = 0; ph < all.num_kv_heads; ++ph) all.dense_heads[ph >> 6] |= uint64_t(1) << (ph & 63);
  all.homo_head = 0;
  const int64_t full = count_blocks(all, seqlen_q, seqlen_k);
  return full == 0 ? 0.0 : double(visible_blocks(seqlen_q, seqlen_k)) / double(full);
}

}  // namespace s2attn

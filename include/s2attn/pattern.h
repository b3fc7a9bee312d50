// The public pattern value: validated constructors for the local-stride pattern (dkernel's
// LocalStrideSparseAttention), per-context-range rules, dense patterns and arbitrary per-head block masks.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "s2attn/errors.h"
#include "s2attn/pattern_rules.h"
#include "s2attn/tensor.h"

namespace s2attn {

// Parameters of the local-stride pattern, named as in dkernel.
struct LocalStrideParams {
  int num_heads = 1;                 // query heads
  int block_size = 64;               // 16, 32, 64 or 128
  int local_blocks = 4;              // local window incl. the diagonal block (left side when bidirectional)
  std::optional<int> local_right;    // bidirectional: right side incl. the diagonal; default local_blocks
  int vert_stride = 4;
  bool causal = true;
  bool homo_head = false;
  std::optional<int> head_sliding_step;  // default max(1, vert_stride / num_heads)
  int head_sliding_offset = 0;
  int num_dense_heads = 0;           // the last KV heads (pattern heads when per_q_head) are dense
  std::optional<int> num_kv_heads;   // default num_heads
  bool per_q_head = false;           // each q head of a GQA group gets its own phase
  std::optional<VertPosition> vert_position;  // default: absolute if causal else relative (as dkernel)
};

// An arbitrary per-head block mask, owned, with its row lists and transposed (column) lists.
class BlockMask {
 public:
  // bits: [heads, rows, cols] row-major, nonzero = visible. `causal` drops entries above the diagonal.
  BlockMask(const uint8_t* bits, int heads, int rows, int cols, bool causal);

  int heads() const { return heads_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  BlockMaskView view() const;  // host pointers, valid while this object lives
  const std::vector<uint8_t>& bits() const { return bits_; }
  const std::vector<int32_t>& row_ptr() const { return row_ptr_; }
  const std::vector<int32_t>& col_idx() const { return col_idx_; }
  const std::vector<int32_t>& col_ptr() const { return col_ptr_; }
  const std::vector<int32_t>& row_idx() const { return row_idx_; }

 private:
  int heads_, rows_, cols_;
  std::vector<uint8_t> bits_;
  std::vector<int32_t> row_ptr_, col_idx_, col_ptr_, row_idx_;
};

namespace detail {
class DeviceMaskCache;  // device copies of a BlockMask's lists, per device (src/pattern/device_mask.cpp)
}

class Pattern {
 public:
  static Pattern local_stride(const LocalStrideParams& params);
  // Every key block visible (causal: every block at or below the diagonal).
  static Pattern dense(int num_heads, int block_size = 64, bool causal = true,
                       std::optional<int> num_kv_heads = std::nullopt);
  // bits: [heads, rows, cols]; heads is 1, num_kv_heads or num_heads.
  static Pattern from_block_mask(const uint8_t* bits, int heads, int rows, int cols, int num_heads,
                                 int block_size = 64, bool causal = true,
                                 std::optional<int> num_kv_heads = std::nullopt);

  // Per-context-range rules, OR-ed with the pattern (analytic patterns only).
  Pattern& with_sink(int blocks);            // the first `blocks` key blocks are seen by every query
  Pattern& with_dense_prefix(int blocks);    // query blocks < `blocks` see everything (causal: the past)
  Pattern& with_range(const RangeRule& r);   // inside the range, stride r.stride (1: dense)
  Pattern& with_dense_heads(const std::vector<int>& pattern_heads);

  const PatternRules& rules() const { return rules_; }  // host pointers for a mask pattern
  const BlockMask* mask() const { return mask_.get(); }
  int block_size() const { return rules_.block_size; }
  bool causal() const { return rules_.causal != 0; }
  int num_heads() const { return rules_.num_heads; }
  int num_kv_heads() const { return rules_.num_kv_heads; }

  bool attends(int h, int i, int j) const { return s2attn::attends(rules_, h, i, j); }

  // Plan step of a block-mask pattern on CUDA: copies its compressed lists (row_ptr, col_idx, col_ptr,
  // row_idx; not the dense bits) to `device` once, allocating and synchronising on a private stream, and
  // caches them; later ops on that device neither allocate nor synchronise. Call it before capturing a
  // CUDA graph (an op on a cold cache does this itself, which graph capture does not allow: it then
  // throws). The cache is shared by copies of the pattern and freed with the last of them. Thread-safe;
  // a no-op for CPU devices and analytic patterns.
  void prepare(Device device) const;
  // The mask lists as the backend of `device` reads them: host pointers for the CPU, the cached device
  // copy for CUDA (prepared here when cold; `stream`: the op's stream, checked for graph capture then).
  // Device views carry no `bits`: the CUDA kernels walk the lists only. Empty for analytic patterns.
  BlockMaskView mask_view(Device device, void* stream = nullptr) const;

  // Block mask [num_heads, nq_blocks, nk_blocks] of query blocks q_first_block + [0, nq_blocks).
  std::vector<uint8_t> to_block_mask(int nq_blocks, int nk_blocks, int q_first_block = 0) const;

  // Visible (head, query block, key block) triples over the causal (or full) block grid, for a sequence
  // of seqlen_q queries ending where seqlen_k keys end; density = visible / the dense pattern's count.
  int64_t visible_blocks(int64_t seqlen_q, int64_t seqlen_k) const;
  double density(int64_t seqlen_q, int64_t seqlen_k) const;

 private:
  Pattern() = default;
  void require_rules(const char* what) const;
  PatternRules rules_;
  std::shared_ptr<const BlockMask> mask_;
  std::shared_ptr<detail::DeviceMaskCache> device_masks_;  // with mask_; shared by copies
};

}  // namespace s2attn

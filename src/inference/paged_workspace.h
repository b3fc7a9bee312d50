// The split-KV workspace of paged attention: fp32 partial outputs [num_splits, total_q, H, D] followed by
// their LSEs [num_splits, total_q, H]; row t of a call is the t-th query row (b * q_len + r, or the varlen
// token index). Host and device.
#pragma once
#include <cstddef>
#include <cstdint>

#include "s2attn/config.h"

namespace s2attn {

constexpr int kMaxPagedSplits = 64;

struct PagedWorkspace {
  float* out = nullptr;  // [splits, total_q, H, D]
  float* lse = nullptr;  // [splits, total_q, H]

  static S2_HD size_t out_floats(int splits, int64_t total_q, int heads, int head_dim) {
    return size_t(splits) * size_t(total_q) * size_t(heads) * size_t(head_dim);
  }
  static S2_HD size_t bytes(int splits, int64_t total_q, int heads, int head_dim) {
    if (splits <= 1) return 0;
    const size_t lse_off = (out_floats(splits, total_q, heads, head_dim) + 63) / 64 * 64;  // 256-byte aligned
    return (lse_off + size_t(splits) * size_t(total_q) * size_t(heads)) * sizeof(float);
  }
  static S2_HD PagedWorkspace carve(void* base, int splits, int64_t total_q, int heads, int head_dim) {
    PagedWorkspace w;
    w.out = static_cast<float*>(base);
    w.lse = w.out + (out_floats(splits, total_q, heads, head_dim) + 63) / 64 * 64;
    return w;
  }
};

}  // namespace s2attn

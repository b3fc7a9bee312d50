// The params structs the paged-KV backends receive: raw pointers, sizes and element strides, validated by
// the front door (src/api/validate_paged.cpp). Host and device code: plain fields and S2_HD accessors.
#pragma once
#include <cstdint>

#include "common/attention_params.h"
#include "s2attn/config.h"
#include "s2attn/pattern_rules.h"
#include "s2attn/tensor.h"

namespace s2attn {

struct PagedParams {
  // queries and outputs: [B, q_len, H, D] (batch stride set) or varlen [T, H, D] (batch stride 0)
  const void* q = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // may be null
  SeqStrides q_stride, out_stride;
  SeqStrides lse_stride;  // lse[b, h, s] at b*batch + h*head + s*seq (+ cu_seqlens_q[b] rows when varlen)
  const int32_t* cu_seqlens_q = nullptr;  // [batch + 1] or null
  int32_t q_len = 0;    // rows per sequence (dense batch) or the maximum / an upper bound (varlen)
  int32_t total_q = 0;  // rows in all: batch * q_len, or T

  // the cache
  const void* k_pages = nullptr;
  const void* v_pages = nullptr;
  int64_t k_page_stride = 0, k_token_stride = 0, k_head_stride = 0;  // head stride 0 when head-paged
  int64_t v_page_stride = 0, v_token_stride = 0, v_head_stride = 0;
  const int32_t* block_table = nullptr;
  int64_t bt_batch_stride = 0, bt_head_stride = 0, bt_page_stride = 1;  // head stride 0: vLLM layout
  const int32_t* context_lens = nullptr;
  int32_t num_pages = 0, page_size = 0, max_pages = 0;
  bool head_paged = false;

  DType dtype = DType::f32;
  int32_t batch = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float scale = 1.f;
  PatternRules pattern;  // analytic rules, or mask pointers on the tensors' device

  int32_t num_splits = 1;
  void* workspace = nullptr;  // num_splits > 1: partial outputs and LSEs (see paged_workspace.h)
  int32_t num_threads = 0;
  void* stream = nullptr;
  int32_t device = 0;  // CUDA device index of the tensors

  S2_HD int32_t group_size() const { return num_heads / num_kv_heads; }
  S2_HD int64_t q_begin(int32_t b) const { return cu_seqlens_q ? cu_seqlens_q[b] : 0; }
  S2_HD int32_t len_q(int32_t b) const { return cu_seqlens_q ? cu_seqlens_q[b + 1] - cu_seqlens_q[b] : q_len; }
  // Page-table entry of page `p` of (sequence b, KV head hk).
  S2_HD const int32_t* page_entry_at(int32_t b, int32_t hk, int64_t p) const {
    return block_table + (b * bt_batch_stride + hk * bt_head_stride + p * bt_page_stride);
  }
  S2_HD int32_t page_entry(int32_t b, int32_t hk, int64_t p) const { return *page_entry_at(b, hk, p); }
};

// combine_partitions: up to kMaxPartitions outputs (same shape, own strides) merged into out/lse.
struct CombineParams {
  static constexpr int kMaxPartitions = 16;
  int32_t num_partitions = 0;
  const void* outs[kMaxPartitions] = {};
  const float* lses[kMaxPartitions] = {};
  SeqStrides out_strides[kMaxPartitions];
  SeqStrides lse_strides[kMaxPartitions];
  void* out = nullptr;
  float* lse = nullptr;  // may be null
  SeqStrides out_stride, lse_stride;
  DType dtype = DType::f32;
  int32_t batch = 1, seqlen = 0, num_heads = 0, head_dim = 0;  // varlen: batch 1, seqlen = T
  int32_t num_threads = 0;
  void* stream = nullptr;
  int32_t device = 0;
};

}  // namespace s2attn

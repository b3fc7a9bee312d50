// The one params struct each backend receives: raw pointers, sizes and element strides, validated by the
// front door (src/api). Kernels know nothing of frameworks or of TensorView.
#pragma once
#include <cstdint>

#include "s2attn/pattern_rules.h"
#include "s2attn/tensor.h"

namespace s2attn {

// Strides of a [batch, seq, head, (dim)] operand; the dim stride is 1. For varlen operands batch == 0 and
// a sequence starts at token cu_seqlens[b].
struct SeqStrides {
  int64_t batch = 0, seq = 0, head = 0;
};

struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // may be null in forward
  SeqStrides q_stride, k_stride, v_stride, out_stride;
  SeqStrides lse_stride;  // lse[b, h, s] at b*batch + h*head + s*seq (+ cu_seqlens_q[b] tokens when varlen)
  DType dtype = DType::f32;

  int32_t batch = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t seqlen_q = 0;  // per-sequence length (dense batch) or the maximum (varlen)
  int32_t seqlen_k = 0;
  const int32_t* cu_seqlens_q = nullptr;  // [batch + 1] or null
  const int32_t* cu_seqlens_k = nullptr;
  int64_t q_offset = -1;  // absolute position of query row 0; -1: seqlen_k - seqlen_q of each sequence
  float scale = 1.f;

  PatternRules pattern;  // mask pointers are on the tensors' device
  int32_t num_threads = 0;
  void* stream = nullptr;
  bool deterministic = false;

  // Per-sequence geometry.
  int32_t group_size() const { return num_heads / num_kv_heads; }
  int64_t q_begin(int32_t b) const { return cu_seqlens_q ? cu_seqlens_q[b] : 0; }
  int64_t k_begin(int32_t b) const { return cu_seqlens_k ? cu_seqlens_k[b] : 0; }
  int32_t len_q(int32_t b) const {
    return cu_seqlens_q ? cu_seqlens_q[b + 1] - cu_seqlens_q[b] : seqlen_q;
  }
  int32_t len_k(int32_t b) const {
    return cu_seqlens_k ? cu_seqlens_k[b + 1] - cu_seqlens_k[b] : seqlen_k;
  }
  int64_t offset_q(int32_t b) const { return q_offset >= 0 ? q_offset : int64_t(len_k(b)) - len_q(b); }
};

struct AttentionBwdParams : AttentionParams {
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  SeqStrides dout_stride, dq_stride, dk_stride, dv_stride;
  // Device scratch of the CUDA backward (BackwardWorkspace below), or null: the backend then allocates
  // it stream-ordered on `stream`. Validated to hold at least BackwardWorkspace::bytes.
  void* workspace = nullptr;
  uint64_t workspace_bytes = 0;
  int64_t total_q = 0;  // query rows of the operands: batch * seqlen_q, or varlen total_q
};

// Layout of the CUDA backward's workspace, shared by the front door (its size, for
// backward_workspace_size) and the kernels (its sections). Per q head h and query row t of the operands
// (t = b * seqlen_q + r, or the varlen token index), fp32:
//   lse2[h][t]   the forward's lse in the log2 domain, +inf for a row that saw nothing (P = exp2(s - lse2))
//   dsum[h][t]   rowsum(dO * O)
//   dq[h][t][D]  the dQ accumulator (atomics); absent in deterministic mode, where dQ has its own kernel.
//                Sized for the Hopper fused-dQ layout too (cuda/sm90/dq_accum_tiles_sm90.h: tiles of 64
//                positions, up to 2 more per sequence than the rows fill), which is at least this
//   counter      int32: the Hopper KV kernel's work counter (dynamic scheduling; zeroed by each call)
// Each section starts on a 256-byte boundary.
struct BackwardWorkspace {
  static constexpr uint64_t kAlign = 256;
  static constexpr uint64_t round_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

  uint64_t stats_floats = 0;  // heads * rows
  uint64_t dq_floats = 0;     // heads * rows * head_dim, or 0

  // sequences: batch, or the varlen sequence count
  BackwardWorkspace(int64_t heads, int64_t rows, int64_t head_dim, int64_t sequences, bool deterministic)
      : stats_floats(uint64_t(heads) * uint64_t(rows)),
        dq_floats(deterministic ? 0
                                : uint64_t(heads) * uint64_t(head_dim) *
                                      uint64_t(rows / 64 * 64 + 128 * sequences)) {}

  uint64_t lse2_offset() const { return 0; }
  uint64_t dsum_offset() const { return round_up(stats_floats * 4); }
  uint64_t dq_offset() const { return dsum_offset() + round_up(stats_floats * 4); }
  uint64_t counter_offset() const { return dq_offset() + round_up(dq_floats * 4); }
  uint64_t bytes() const { return counter_offset() + kAlign; }
};

}  // namespace s2attn

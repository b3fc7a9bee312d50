// The op front doors. One call per op; the tensors' device picks the backend (CPU here; CUDA where built).
//
// Layouts (strides in elements, any order: bshd, bhsd and sbhd are views of the same logical tensor; the
// last (head) dimension must be contiguous):
//   q, out, dout, dq : [B, Sq, H, D]      or varlen [Tq, H, D] with cu_seqlens_q [B+1]
//   k, v, dk, dv     : [B, Sk, Hkv, D]    or varlen [Tk, Hkv, D] with cu_seqlens_k [B+1]
//   lse (float32)    : [B, H, Sq]         or varlen [H, Tq]
// Queries are aligned to the end of the keys: query row r of a sequence sits at absolute position
// q_offset + r, with q_offset = Sk - Sq unless given (decode, chunked prefill). Block indices of the
// pattern are absolute positions / block_size.
//
// A query row that sees no key gets output 0 and LSE = -inf (never NaN); its gradients are 0.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>

#include "s2attn/errors.h"
#include "s2attn/pattern.h"
#include "s2attn/tensor.h"

namespace s2attn {

enum class Backend : int32_t { automatic = 0, cpu = 1, cuda_sm80 = 2, cuda_sm90 = 3 };

struct AttentionOptions {
  std::optional<float> softmax_scale;  // default 1/sqrt(D)
  TensorView cu_seqlens_q;             // int32 [B+1], on the tensors' device; varlen when given
  TensorView cu_seqlens_k;
  std::optional<int64_t> q_offset;     // absolute position of the first query; default Sk - Sq
  int num_threads = 0;                 // CPU: 0 = all hardware threads (or S2ATTN_NUM_THREADS)
  void* stream = nullptr;              // CUDA: cudaStream_t to launch on
  bool deterministic = false;          // backward: bitwise-repeatable gradients
  // CUDA backward: caller-owned device scratch (uint8, contiguous, 16-byte aligned, on q's device) of at
  // least backward_workspace_size() bytes. Without one the backward allocates it stream-ordered
  // (cudaMallocAsync / cudaFreeAsync on `stream`). Ignored by the CPU backend.
  TensorView workspace;
  Backend backend = Backend::automatic;
};

// out = softmax(scale * q k^T + pattern mask) v; lse (optional: pass an empty view) = log-sum-exp of the
// scaled visible scores per query row.
void forward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
             const TensorView& out, const TensorView& lse, const AttentionOptions& options = {});

// Gradients of `forward`: dq, dk, dv written (not accumulated). lse is the one forward returned.
void backward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
              const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
              const TensorView& dk, const TensorView& dv, const AttentionOptions& options = {});

// Bytes of device scratch `backward` needs for these operands and options (the fp32 dQ accumulator and
// per-row statistics; deterministic mode needs no dQ accumulator). 0 for CPU tensors.
size_t backward_workspace_size(const Pattern& pattern, const TensorView& q, const TensorView& k,
                               const TensorView& v, const AttentionOptions& options = {});

// Which backends this build has, and whether the running machine can use them.
bool backend_available(Backend backend);

}  // namespace s2attn

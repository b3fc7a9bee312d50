// Device equivalents of AttentionParams' per-sequence helpers (those are host-only: they read cu_seqlens,
// which are device pointers for CUDA operands).
#pragma once
#include <cstdint>

#include "common/attention_params.h"

namespace s2attn::cuda {

struct SeqGeometry {
  int64_t q_begin = 0, k_begin = 0;  // first token of sequence b in the operands
  int len_q = 0, len_k = 0;
  int offset = 0;                    // absolute position of query row 0; negative rows see nothing
};

__device__ __forceinline__ SeqGeometry seq_geometry(const AttentionParams& p, int b) {
  SeqGeometry g;
  if (p.cu_seqlens_q != nullptr) {
    const int q0 = p.cu_seqlens_q[b], k0 = p.cu_seqlens_k[b];
    g.q_begin = q0;
    g.k_begin = k0;
    g.len_q = p.cu_seqlens_q[b + 1] - q0;
    g.len_k = p.cu_seqlens_k[b + 1] - k0;
  } else {
    g.len_q = p.seqlen_q;
    g.len_k = p.seqlen_k;
  }
  // the host checks q_offset + seqlen_q <= 2^30 (validate.cpp), so positions fit an int
  g.offset = p.q_offset >= 0 ? static_cast<int>(p.q_offset) : g.len_k - g.len_q;
  return g;
}

// Row `begin` (a sequence's first token) of head `head` of batch entry b in an operand with strides s.
template <typename Elem>
__device__ __forceinline__ Elem* seq_rows(Elem* base, const SeqStrides& s, int b, int64_t begin, int head) {
  return base + b * s.batch + begin * s.seq + head * s.head;
}

// A sequence-major unit scheduler (the Hopper forward's and backward's) moved to the sequence that holds unit
// u (u must not decrease between calls): `s` has b (-1 before the first call), base (the sequence's first
// unit), units (its unit count) and load(fp) (units and geometry of sequence b). False past the last one.
template <class Scheduler, class Params>
__device__ __forceinline__ bool seek_sequence_of_unit(Scheduler& s, const Params& fp, int u, int batch) {
  if (s.b < 0) {
    s.b = 0;
    s.load(fp);
  }
  while (u >= s.base + s.units) {
    s.base += s.units;
    if (++s.b >= batch) return false;
    s.load(fp);
  }
  return true;
}

}  // namespace s2attn::cuda

// Inference on a paged KV cache: decode, speculative decode and chunked prefill with per-head S2 patterns,
// the LSE combine of partial attention outputs, and the KV-cache efficiency queries (which key blocks a KV
// head still needs, and what a cache that drops the rest saves).
//
// Layouts (strides in elements; the last dimension contiguous):
//   k_pages, v_pages : [num_pages, page_size, Hkv, D]  vLLM layout: a page holds every KV head's keys
//                      [num_pages, page_size, 1, D]    head-paged layout (block_table of rank 3)
//   block_table      : int32 [B, max_pages]            vLLM layout: page p of sequence b
//                      int32 [B, Hkv, max_pages]       head-paged: page p of (sequence b, KV head)
//   context_lens     : int32 [B]                        cached tokens of each sequence (the queries included)
//   q, out           : [B, q_len, H, D]  or varlen [T, H, D] with cu_seqlens_q int32 [B+1]
//   lse (float32)    : [B, H, q_len]     or varlen [H, T]
// Queries are aligned to the end of the cached keys: query row r of sequence b sits at absolute position
// context_lens[b] - q_len_b + r (the tokens being decoded are already written into the cache). page_size is
// any value >= 1 (16..256 typical); it need not equal the pattern's block size.
//
// Pages: only the pages holding key blocks that some head of a KV group sees are read; block-table
// entries of the other pages are never read and may hold anything (e.g. -1 for a freed page). Entries
// that are read must lie in [0, num_pages): checked on the CPU (InvalidArgument "block_table"); on CUDA
// the caller guarantees it (an out-of-range entry is skipped, never dereferenced, and its keys are
// treated as hidden).
//
// CUDA graphs: paged_attention does not synchronise with the host and never allocates. With split-KV
// (num_splits > 1) it needs a workspace of paged_workspace_size(...) bytes, allocated by the caller before
// capture; the split count is a function of the shapes only (see PagedOptions::num_splits).
//
// A query row that sees no key gets output 0 and LSE -inf (never NaN).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "s2attn/errors.h"
#include "s2attn/ops.h"
#include "s2attn/pattern.h"
#include "s2attn/tensor.h"

namespace s2attn {

// A paged KV cache as seen by one call (views, no ownership).
struct PagedKV {
  TensorView k_pages;       // [num_pages, page_size, Hkv, D] (head-paged: Hkv = 1)
  TensorView v_pages;       // same shape and dtype as k_pages
  TensorView block_table;   // int32 [B, max_pages] or, head-paged, [B, Hkv, max_pages]
  TensorView context_lens;  // int32 [B]
};

struct PagedOptions {
  std::optional<float> softmax_scale;  // default 1/sqrt(D)
  TensorView cu_seqlens_q;             // int32 [B+1]: q is varlen [T, H, D]
  // Split-KV: each (sequence, KV head) is cut into num_splits key ranges processed in parallel and merged
  // by an LSE combine. 0 = automatic (from the shapes and the GPU's SM count only, never from device
  // data, so the choice is fixed before a graph capture). 1 = no split. The CPU backend ignores it.
  int num_splits = 0;
  TensorView workspace;  // CUDA with num_splits > 1: >= paged_workspace_size(...) bytes, any dtype
  int num_threads = 0;   // CPU: 0 = all hardware threads (or S2ATTN_NUM_THREADS)
  void* stream = nullptr;  // CUDA: cudaStream_t
  Backend backend = Backend::automatic;
};

// out = softmax(scale * q k^T + pattern mask) v over the cached keys of each sequence; lse optional (pass
// an empty view).
void paged_attention(const Pattern& pattern, const TensorView& q, const PagedKV& kv, const TensorView& out,
                     const TensorView& lse, const PagedOptions& options = {});

// Bytes of workspace paged_attention needs for these arguments (0 when it needs none: CPU, or one split).
// Reads shapes only. Validates like paged_attention (out/lse are not needed).
size_t paged_workspace_size(const Pattern& pattern, const TensorView& q, const PagedKV& kv,
                            const PagedOptions& options = {});

// The split count paged_attention uses for these arguments (1 on the CPU).
int paged_num_splits(const Pattern& pattern, const TensorView& q, const PagedKV& kv,
                     const PagedOptions& options = {});

// Merges attention outputs computed over disjoint key ranges of the same queries:
//   lse = log(sum_p exp(lse_p)),  out = sum_p exp(lse_p - lse) out_p.
// outs[p], out: [B, S, H, D] or [T, H, D] (float32/16/bf16, all the same dtype); lses[p], lse: float32
// [B, H, S] or [H, T]. A row whose partitions all have LSE -inf gets output 0 and LSE -inf. lse may be an
// empty view. At most kMaxCombinePartitions partitions.
constexpr int kMaxCombinePartitions = 16;
struct CombineOptions {
  int num_threads = 0;
  void* stream = nullptr;
};
void combine_partitions(const std::vector<TensorView>& outs, const std::vector<TensorView>& lses,
                        const TensorView& out, const TensorView& lse, const CombineOptions& options = {});

// ---------------------------------------------------------------------------------------------------------
// KV-cache efficiency (DESIGN §1.3). A sequence has context_len cached tokens; its future queries sit at
// absolute positions [context_len, max_context_len) (max_context_len 0: unbounded). A key block is still
// needed by a KV head when one of the q heads of its group sees it from one of those queries; the others
// can be freed (or never written). Block-mask patterns cannot see past their rows: queries beyond the
// mask's rows see nothing.

// Key blocks among [0, ceil(context_len / block_size)) that KV head `kv_head` still needs, ascending.
std::vector<int32_t> needed_key_blocks(const Pattern& pattern, int kv_head, int64_t context_len,
                                       int64_t max_context_len = 0);

struct KVFootprint {
  int64_t context_len = 0;
  int64_t page_size = 0;
  int32_t num_kv_heads = 0;
  int64_t dense_pages = 0;       // ceil(context_len / page_size): pages of the dense vLLM cache
  int64_t vllm_pages = 0;        // vLLM layout: pages holding a token some KV head still needs
  std::vector<int64_t> pages_per_kv_head;  // head-paged: pages KV head h still needs
  int64_t head_paged_pages = 0;  // sum of pages_per_kv_head (each page holds one head)
  int64_t dense_bytes = 0;       // K and V, bytes of the dense cache (either layout)
  int64_t vllm_bytes = 0;        // the needed pages in the vLLM layout
  int64_t head_paged_bytes = 0;  // the needed pages in the head-paged layout
};

// What a cache of one sequence keeps when it drops the key blocks no future query needs, in the vLLM
// layout (a page is kept when any KV head needs any of its tokens) and in the head-paged layout (per KV
// head). Bytes count K and V with head_dim elements of `dtype` per token and head.
KVFootprint kv_cache_footprint(const Pattern& pattern, int64_t context_len, int64_t page_size,
                               int64_t head_dim = 128, DType dtype = DType::bf16, int64_t max_context_len = 0);

}  // namespace s2attn

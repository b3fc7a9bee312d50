// The Hopper forward's kernel parameters and its launcher, as the dispatcher (forward_sm90.cu) sees them.
// Each (dtype, head dim) variant is instantiated once, in instantiations/.
#pragma once
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime_api.h>

#include "common/attention_params.h"

namespace s2attn::cuda {

// Chunked prefill over a paged K/V cache (paged_prefill_sm90): the keys of sequence b are its context
// (context_lens[b] tokens); key k sits in page table[b, KV head, k / page_size], row k % page_size. The forward's
// K / V tensor maps then cover the pages ({D, KV heads or 1, page_size, pages}, the same 64 x 64 boxes), and the
// one-row maps load the rows of a context's last, partial box (the rest of that page is not read: it may hold
// anything). Null block_table: contiguous K / V.
struct PagedKvSm90 {
  CUtensorMap tma_k_row;  // boxes of one row
  CUtensorMap tma_v_row;
  const int32_t* block_table = nullptr;
  int64_t bt_batch_stride = 0, bt_head_stride = 0, bt_page_stride = 1;
  const int32_t* context_lens = nullptr;
  int32_t page_shift = 0;  // log2(page_size); page_size is a power of two >= 64
  int32_t num_pages = 0;
  int32_t head_paged = 0;  // the maps have one head (each KV head has its own pages)
};

// Everything the kernel reads, passed by value as a __grid_constant__ parameter (the TMA descriptors must
// live in parameter, constant or global memory).
struct ForwardParamsSm90 {
  CUtensorMap tma_q;  // [batch, seq, head, dim] boxes of 64 rows x 64 elements, 128-byte swizzle
  CUtensorMap tma_k;
  CUtensorMap tma_v;
  AttentionParams p;
  int head_group = 1;  // heads per scheduling group (see tile_scheduler_sm90.cuh)
  // Dynamic scheduling (the forward, when set): a CTA takes its next unit from this counter (zero at launch)
  // instead of the static stride; null: static (the dQ kernel, and a grid of one wave).
  int* unit_counter = nullptr;
  PagedKvSm90 paged;
};

struct ForwardLaunchSm90 {
  int device = 0;
  cudaStream_t stream = nullptr;
  int grid = 0;  // persistent CTAs (<= SMs)
};

// The persistent grid over the forward's work units (sequence, head, 128-row query tile) and the heads per
// scheduling group (tile_scheduler_sm90.cuh); grid 0: no unit. Shared by the forward and the dQ kernel.
struct QueryTileGridSm90 {
  int grid = 0;
  int head_group = 1;
  int64_t units = 0;  // (sequence, head, 128-row query tile) units; varlen: an upper bound
};
QueryTileGridSm90 query_tile_grid_sm90(const AttentionParams& p, int sms);

// S2ATTN_SM90_STATIC_SCHEDULE=1: the forward and the backward's KV kernel keep the static strided order
// where they would schedule dynamically (read per call, so that one process can time both).
bool static_schedule_forced_sm90();

// Elem: cutlass::bfloat16_t or cutlass::half_t (declared as the CUDA types' bit twins in the .cu files).
template <typename Elem, int kHeadDim>
void run_forward_sm90(const ForwardParamsSm90& params, const ForwardLaunchSm90& launch);

}  // namespace s2attn::cuda

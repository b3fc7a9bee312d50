// Host side of the CUDA paged kernels: the split-KV heuristic, the variant dispatch (dtype x head dim x
// packed rows), the launches. No allocation, no synchronisation: graph-capturable.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "inference/cuda/combine_kernel.cuh"
#include "inference/cuda/paged_cuda.h"
#include "inference/cuda/paged_decode_kernel.cuh"

namespace s2attn::cuda {
namespace {

int sm_count(int device) {
  static std::mutex mutex;
  static int cached[64] = {};
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0 || device >= 64) return 108;
  if (cached[device] == 0) {
    S2_CUDA_CHECK(cudaDeviceGetAttribute(&cached[device], cudaDevAttrMultiProcessorCount, device));
  }
  return cached[device];
}

// Packed rows of a CTA: 4 when the group's heads times the query rows fit (decode with G <= 4: fewer
// registers, more CTAs per SM), else 8.
int rows_variant(const PagedParams& p) { return p.group_size() * std::max(1, p.q_len) <= 4 ? 4 : 8; }

struct Geometry {
  int heads_per_cta, rows_per_head, head_chunks, q_tiles;
};

Geometry geometry(const PagedParams& p, int rows) {
  Geometry g;
  const int G = p.group_size();
  g.heads_per_cta = std::min(G, rows);
  g.rows_per_head = std::max(1, std::min(rows / g.heads_per_cta, std::max(1, p.q_len)));
  g.head_chunks = (G + g.heads_per_cta - 1) / g.heads_per_cta;
  // varlen: q_len is the token count, an upper bound per sequence (tiles past a sequence exit at once)
  g.q_tiles = (std::max(1, p.q_len) + g.rows_per_head - 1) / g.rows_per_head;
  return g;
}

void check_aligned(const char* name, const void* ptr, std::initializer_list<int64_t> strides, int elem_bytes) {
  bool ok = reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  for (int64_t s : strides) ok = ok && (s * elem_bytes) % 16 == 0;
  if (!ok) {
    throw InvalidArgument(name, "16-byte aligned rows on CUDA (base pointer and every stride but the last "
                                "a multiple of 16 bytes)");
  }
}

template <typename T, int D, int ROWS, bool kList>
void launch_decode(const PagedParams& p) {
  using Tr = PagedDecodeTraits<T, D, ROWS>;
  const Geometry g = geometry(p, ROWS);
  auto* kernel = paged_decode_kernel<T, D, ROWS, kList>;
  static uint64_t configured = 0;
  set_dynamic_smem_once(reinterpret_cast<const void*>(kernel), Tr::kSmemBytes, p.device, &configured);
  const int64_t ctas = int64_t(p.batch) * p.num_kv_heads * g.head_chunks * p.num_splits;
  if (ctas > INT32_MAX) throw InvalidArgument("q", "fewer than 2^31 (sequence, KV head, split) work units");
  const dim3 grid(static_cast<unsigned>(ctas), static_cast<unsigned>(std::min(g.q_tiles, 65535)));
  auto stream = static_cast<cudaStream_t>(p.stream);
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, g.heads_per_cta, g.rows_per_head, g.head_chunks,
                                                         g.q_tiles);
  S2_CUDA_CHECK(cudaGetLastError());
  if (p.num_splits > 1 && p.total_q > 0) {
    const dim3 combine_grid(static_cast<unsigned>(p.total_q), static_cast<unsigned>(p.num_heads));
    paged_split_combine_kernel<T><<<combine_grid, kCombineThreads, 0, stream>>>(p);
    S2_CUDA_CHECK(cudaGetLastError());
  }
}

template <typename T, bool kList>
void dispatch_dim(const PagedParams& p) {
  const bool r4 = rows_variant(p) == 4;
  if (p.head_dim == 64) return r4 ? launch_decode<T, 64, 4, kList>(p) : launch_decode<T, 64, 8, kList>(p);
  if (p.head_dim == 128) return r4 ? launch_decode<T, 128, 4, kList>(p) : launch_decode<T, 128, 8, kList>(p);
  throw Unsupported("the CUDA paged kernels are built for head_dim 64 and 128, got " + std::to_string(p.head_dim));
}

}  // namespace

int paged_auto_splits(const PagedParams& p) {
  const Geometry g = geometry(p, rows_variant(p));
  const int64_t units = int64_t(p.batch) * p.num_kv_heads * g.head_chunks * std::min(g.q_tiles, 65535);
  // Many waves of CTAs (3 resident per SM at 128 threads): with few CTAs the last wave idles most of the
  // GPU (measured at batch 32 x 128k, 512 CTAs = 1.29 waves: DRAM at 17% of peak, ncu). Splits cost a
  // partial output per row and split (fp32, combined afterwards): small next to the K/V they divide.
  const int64_t target = 8 * 3 * int64_t(sm_count(p.device));
  if (units >= target) return 1;
  // Keys one query of the last block sees at the largest context the table allows (bounded count).
  const int32_t bs = p.pattern.block_size;
  const int64_t max_ctx = int64_t(p.max_pages) * p.page_size;
  const int32_t nk = static_cast<int32_t>((max_ctx + bs - 1) / bs);
  int64_t blocks = 0;
  if (p.pattern.use_mask) {
    blocks = nk;
  } else {
    const SegmentList s = row_segments(p.pattern, 0, nk - 1, nk);
    for (int32_t j = s.first(); j < s.end && blocks < 65536; j = s.next(j)) ++blocks;
  }
  const int64_t keys = blocks * bs;
  // >= 128 visible keys (two 64-key tiles) per split: a CTA is latency-bound (page table, then K/V, then
  // the dot products), so small batches want many short CTAs (batch 1 x 8k: 3 splits ran 202 us)
  const int64_t by_work = std::max<int64_t>(1, keys / 128);
  const int64_t want = (target + units - 1) / units;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, by_work, kMaxPagedSplits})));
}

void paged_forward(const PagedParams& p) {
  // Block masks: p.pattern.mask is the pattern's cached device copy (the front door's Pattern::mask_view);
  // the kernel walks its row lists (next_union_block<true>, mask_list_attends).
  if (p.pattern.use_mask && (p.pattern.mask.row_ptr == nullptr || p.pattern.mask.col_idx == nullptr)) {
    throw InvalidArgument("pattern", "a block mask with its lists on the device (Pattern::mask_view)");
  }
  const int eb = dtype_size(p.dtype);
  check_aligned("q", p.q, {p.q_stride.batch, p.q_stride.seq, p.q_stride.head}, eb);
  check_aligned("k_pages", p.k_pages, {p.k_page_stride, p.k_token_stride, p.k_head_stride}, eb);
  check_aligned("v_pages", p.v_pages, {p.v_page_stride, p.v_token_stride, p.v_head_stride}, eb);
  DeviceGuard guard(p.device);
  const bool list = p.pattern.use_mask != 0;
  switch (p.dtype) {
    case DType::bf16: return list ? dispatch_dim<__nv_bfloat16, true>(p) : dispatch_dim<__nv_bfloat16, false>(p);
    case DType::f16: return list ? dispatch_dim<__half, true>(p) : dispatch_dim<__half, false>(p);
    case DType::f32: return list ? dispatch_dim<float, true>(p) : dispatch_dim<float, false>(p);
    default: throw Unsupported("the CUDA paged kernels take float32, float16 or bfloat16");
  }
}

void combine_partitions(const CombineParams& p) {
  const int64_t rows = int64_t(p.batch) * p.seqlen;
  if (rows == 0) return;
  if (rows > INT32_MAX) throw InvalidArgument("out", "fewer than 2^31 rows");
  DeviceGuard guard(p.device);
  auto stream = static_cast<cudaStream_t>(p.stream);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(p.num_heads));
  switch (p.dtype) {
    case DType::bf16: combine_partitions_kernel<__nv_bfloat16><<<grid, kCombineThreads, 0, stream>>>(p); break;
    case DType::f16: combine_partitions_kernel<__half><<<grid, kCombineThreads, 0, stream>>>(p); break;
    case DType::f32: combine_partitions_kernel<float><<<grid, kCombineThreads, 0, stream>>>(p); break;
    default: throw Unsupported("combine_partitions takes float32, float16 or bfloat16 outputs");
  }
  S2_CUDA_CHECK(cudaGetLastError());
}

}  // namespace s2attn::cuda

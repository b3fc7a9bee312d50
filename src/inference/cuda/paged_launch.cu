// Host side of the CUDA paged kernels: the split-KV heuristic, the variant dispatch (dtype -> tensor-core
// or SIMT kernel, head dim, packed rows), the launches. No synchronisation: graph-capturable (no allocation
// either, but for the opt-in Hopper prefill's 4-byte stream-ordered work counter).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/launch.cuh"
#include "cuda/cuda_backend.h"
#include "inference/cuda/combine_kernel.cuh"
#include "inference/cuda/paged_cuda.h"
#include "inference/cuda/paged_decode_kernel.cuh"
#include "inference/cuda/paged_mma_kernel.cuh"
#include "inference/cuda/paged_tma.h"

namespace s2attn::cuda {
namespace {

// The kernel a call takes and its packed rows per CTA. 16-bit caches: the tensor-core kernel, one 16-row
// tile when the group's heads times the query rows fit (decode, speculative decode: the 4 warps split the
// keys), else 64 rows, or 128 from 128 on (prefill: a 16-row tile per warp). fp32: the SIMT kernel, 4 or 8 rows.
struct Variant {
  bool mma;
  int rows;
};

// Shared memory of the 128-row kernel (the dtype does not change it).
int smem_128_rows(int head_dim) {
  return head_dim == 64 ? PagedMmaTraits<__half, 64, 8>::kSmemBytes : PagedMmaTraits<__half, 128, 8>::kSmemBytes;
}

Variant variant(const PagedParams& p) {
  const int want = p.group_size() * std::max(1, p.q_len);
  if (p.dtype != DType::f32) {
    if (want <= 16) return Variant{true, 16};
    // 128 rows where a CTA may have the shared memory (not on sm_86 / sm_89 at D = 128: 64 rows there)
    const bool fits_128 = smem_128_rows(p.head_dim) <= max_dynamic_smem_per_block(p.device);
    return want < 128 || !fits_128 ? Variant{true, 64} : Variant{true, 128};
  }
  return Variant{false, want <= 4 ? 4 : 8};
}

// The decode kernel's TMA path (sm_90; docs/inference.md): opt-in with S2ATTN_PAGED_TMA=1 (read per call)
// while it is being measured. Power-of-two pages, 16-bit caches, boxes of at least 8 rows (the 128-byte
// swizzle's period), the default (not lean) decode kernel.
int tma_box_rows(const PagedParams& p) {
  const int w = std::min(p.pattern.block_size, 64);
  return std::min(p.page_size, w);
}

// Decided once per call (paged_forward, paged_auto_splits) and handed to with_kernel: the maps are built
// for exactly the calls that run the TMA kernel.
bool paged_tma_path(const PagedParams& p, const Variant& v) {
  const char* env = std::getenv("S2ATTN_PAGED_TMA");
  if (env == nullptr || env[0] != '1') return false;
  if (!v.mma || v.rows != 16 || p.dtype == DType::f32 || (p.head_dim != 64 && p.head_dim != 128)) return false;
  if ((p.page_size & (p.page_size - 1)) != 0 || tma_box_rows(p) < 8 || p.num_pages <= 0) return false;
  const bool d64 = p.head_dim == 64;
  const int smem = d64 ? PagedMmaTraits<__half, 64, 1, false, true>::kSmemBytes
                       : PagedMmaTraits<__half, 128, 1, false, true>::kSmemBytes;
  if (compute_capability(p.device) < 90 || smem > max_dynamic_smem_per_block(p.device)) return false;
  // the binary that runs must hold sm_90 code (a newer GPU JIT-compiles the sm_80 PTX, where the TMA
  // wrappers are traps): the same test as programmatic dependent launch's (its instructions are sm_90 too)
  const void* k = d64 ? reinterpret_cast<const void*>(paged_mma_kernel<__half, 64, 1, false, false, true>)
                      : reinterpret_cast<const void*>(paged_mma_kernel<__half, 128, 1, false, false, true>);
  return kernel_has_grid_dependency_control(k, p.device);
}

// The decode kernel's K and V maps: boxes of tma_box_rows rows (paged_kv_tma_map). The strides are 16-byte
// multiples (check_aligned, paged_forward).
PagedTmaMaps make_paged_tma_maps(const PagedParams& p) {
  PagedTmaMaps m;
  m.rows = tma_box_rows(p);
  const auto rows = static_cast<uint32_t>(m.rows);
  m.k = paged_kv_tma_map(p, p.k_pages, p.k_page_stride, p.k_token_stride, p.k_head_stride, rows);
  m.v = paged_kv_tma_map(p, p.v_pages, p.v_page_stride, p.v_token_stride, p.v_head_stride, rows);
  return m;
}

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

// head_dim is 64 or 128 here (with_kernel rejects the rest before the paged kernel runs). On sm_90 the
// combine is launched as a programmatic dependent of the paged kernel: its launch is processed while that
// kernel runs, and its CTAs wait (griddepcontrol.wait) for the partials; elsewhere (and wherever the binary
// that runs lacks griddepcontrol) launch_kernel_overlapping makes it a plain launch.
template <typename T, int D>
void launch_combine_kernel(const PagedParams& p, dim3 grid, cudaStream_t stream) {
  static uint64_t configured = 0;  // no shared-memory opt-in (static storage only)
  launch_kernel_overlapping(paged_split_combine_kernel<T, D>, grid, kCombineThreads, 0, stream, p.device,
                            &configured, p);
}

template <typename T>
void launch_combine_dim(const PagedParams& p, dim3 grid, cudaStream_t stream) {
  if (p.head_dim == 64) return launch_combine_kernel<T, 64>(p, grid, stream);
  launch_combine_kernel<T, 128>(p, grid, stream);
}

void launch_combine(const PagedParams& p) {
  if (p.num_splits <= 1 || p.total_q <= 0) return;
  auto stream = static_cast<cudaStream_t>(p.stream);
  const dim3 grid(static_cast<unsigned>(p.total_q), static_cast<unsigned>(p.num_heads));
  switch (p.dtype) {
    case DType::bf16: launch_combine_dim<__nv_bfloat16>(p, grid, stream); break;
    case DType::f16: launch_combine_dim<__half>(p, grid, stream); break;
    default: launch_combine_dim<float>(p, grid, stream); break;
  }
}

// One launch of `kernel` (either paged kernel: same arguments) over the (sequence, KV head, head chunk) x
// query-tile x split grid, then the split combine.
template <class Kernel>
void launch_paged(const PagedParams& p, Kernel* kernel, int threads, int smem_bytes, int rows, uint64_t* configured,
                  const PagedTmaMaps& maps) {
  const Geometry g = geometry(p, rows);
  const int64_t units = int64_t(p.batch) * p.num_kv_heads * g.head_chunks;
  if (units > INT32_MAX) throw InvalidArgument("q", "fewer than 2^31 (sequence, KV head) work units");
  // z: the split (cta_coords), outermost, so that the CTAs of one split are launched together
  const dim3 grid(static_cast<unsigned>(units), static_cast<unsigned>(std::min(g.q_tiles, 65535)),
                  static_cast<unsigned>(p.num_splits));
  launch_kernel(kernel, grid, threads, smem_bytes, static_cast<cudaStream_t>(p.stream), p.device, configured, p,
                maps, g.heads_per_cta, g.rows_per_head, g.head_chunks, g.q_tiles);
  launch_combine(p);
}

// `use(kernel, threads, smem_bytes, rows, configured)` for one instantiation; `configured` is its set of
// devices whose shared-memory opt-in is done.
template <typename T, int D, int RT, bool kList, class Use, bool kLean = false, bool kTma = false>
void use_mma(Use&& use) {
  using Tr = PagedMmaTraits<T, D, RT, kLean, kTma>;
  static uint64_t configured = 0;
  use(paged_mma_kernel<T, D, RT, kList, kLean, kTma>, Tr::kThreads, Tr::kSmemBytes, Tr::kRows, &configured);
}

template <int D, int ROWS, bool kList, class Use>
void use_simt(Use&& use) {
  using Tr = PagedDecodeTraits<float, D, ROWS>;
  static uint64_t configured = 0;
  use(paged_decode_kernel<float, D, ROWS, kList>, Tr::kThreads, Tr::kSmemBytes, ROWS, &configured);
}

// The kernel the call runs (dtype T, analytic rules or block-mask lists), handed to `use`: launching it and
// asking how many of its CTAs an SM holds go through this one choice.
template <typename T, bool kList, class Use>
void with_kernel(const PagedParams& p, bool tma, Use&& use) {
  const Variant v = variant(p);
  if (p.head_dim != 64 && p.head_dim != 128) {
    throw Unsupported("the CUDA paged kernels are built for head_dim 64 and 128, got " +
                      std::to_string(p.head_dim));
  }
  const bool d64 = p.head_dim == 64;
  if constexpr (std::is_same_v<T, float>) {
    const bool r4 = v.rows == 4;
    if (d64) return r4 ? use_simt<64, 4, kList>(use) : use_simt<64, 8, kList>(use);
    return r4 ? use_simt<128, 4, kList>(use) : use_simt<128, 8, kList>(use);
  } else {
    if (v.rows == 16) {
      if (tma) {
        if (d64) return use_mma<T, 64, 1, kList, Use, false, true>(use);
        return use_mma<T, 128, 1, kList, Use, false, true>(use);
      }
      if (d64) return use_mma<T, 64, 1, kList>(use);
      // the lean decode kernel where a CTA may not have the default one's shared memory (sm_86 / sm_89)
      if (PagedMmaTraits<T, 128, 1>::kSmemBytes > max_dynamic_smem_per_block(p.device)) {
        return use_mma<T, 128, 1, kList, Use, true>(use);
      }
      return use_mma<T, 128, 1, kList>(use);
    }
    if (v.rows == 64) return d64 ? use_mma<T, 64, 4, kList>(use) : use_mma<T, 128, 4, kList>(use);
    return d64 ? use_mma<T, 64, 8, kList>(use) : use_mma<T, 128, 8, kList>(use);
  }
}

// tma: paged_tma_path's answer for this call.
template <class Use>
void with_kernel(const PagedParams& p, bool tma, Use&& use) {
  const bool list = p.pattern.use_mask != 0;
  switch (p.dtype) {
    case DType::bf16:
      return list ? with_kernel<__nv_bfloat16, true>(p, tma, use) : with_kernel<__nv_bfloat16, false>(p, tma, use);
    case DType::f16: return list ? with_kernel<__half, true>(p, tma, use) : with_kernel<__half, false>(p, tma, use);
    case DType::f32: return list ? with_kernel<float, true>(p, tma, use) : with_kernel<float, false>(p, tma, use);
    default: throw Unsupported("the CUDA paged kernels take float32, float16 or bfloat16");
  }
}

// CTAs of the call's kernel resident on one SM of p.device (registers and shared memory, as the occupancy
// calculator counts them): the split heuristic's wave, right on any GPU (an A100 holds one decode CTA at
// D = 128 where an H100 holds two).
int resident_ctas(const PagedParams& p) {
  int n = 1;
  const bool tma = paged_tma_path(p, variant(p));
  with_kernel(p, tma, [&](auto kernel, int threads, int smem, int, uint64_t* configured) {
    const void* k = reinterpret_cast<const void*>(kernel);
    if (smem > 48 * 1024) set_dynamic_smem_once(k, smem, p.device, configured);  // as its launch does
    n = resident_ctas_per_sm(k, threads, smem, p.device);
  });
  return std::max(1, n);
}

#ifdef S2ATTN_WITH_SM90
// Chunked prefill through the Hopper forward over the pages (docs/inference.md; 128k in 8k chunks on the H100:
// 514 effective TFLOP/s against 191 for the packed kernel, gpu_prefill_2026-12-06_s12.json); off with
// S2ATTN_PAGED_PREFILL_SM90=0 (read per call). Prefill-shaped calls only (>= 64 query rows a sequence on
// average: each (sequence, q head) is a 128-row unit there, where the packed decode kernel reads a KV
// group's K / V once for all its heads), one split.
bool paged_prefill_on_sm90(const PagedParams& p) {
  const char* env = std::getenv("S2ATTN_PAGED_PREFILL_SM90");
  if (env != nullptr && env[0] == '0') return false;
  const int64_t rows_per_seq = p.cu_seqlens_q != nullptr ? int64_t(p.total_q) / std::max(1, p.batch) : p.q_len;
  if (rows_per_seq < 64 || p.dtype == DType::f32 || compute_capability(p.device) != 90) return false;
  PagedParams one = p;
  one.num_splits = 1;  // the automatic split count asks before it is set (paged_auto_splits)
  return p.num_splits <= 1 && paged_prefill_sm90_supports(one);
}
#endif

}  // namespace

int paged_auto_splits(const PagedParams& p) {
#ifdef S2ATTN_WITH_SM90
  if (paged_prefill_on_sm90(p)) return 1;  // the Hopper forward takes the call whole
#endif
  const Variant v = variant(p);
  const Geometry g = geometry(p, v.rows);
  const int64_t units = int64_t(p.batch) * p.num_kv_heads * g.head_chunks * std::min(g.q_tiles, 65535);
  // One wave of CTAs (resident_ctas per SM): a sweep of the split count on the H100
  // (tools/sweep_splits.py, graph-timed, tensor-core kernel) put the best count where units x splits is
  // just under one wave at every batch (1 x 128k: 32 splits 57 us, 64 splits 86 us; 8 x 32k: 4 splits
  // 84 us, 33 splits 177 us; 32 x 8k: 1 split 115 us, 9 splits 191 us): a second, partial wave and the
  // partial outputs cost more than the shorter CTAs save.
  const int64_t slots = int64_t(resident_ctas(p)) * sm_count(p.device);
  if (units * 2 > slots) return 1;
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
  // >= 128 visible keys (two 64-key tiles) per split. Re-swept after the kernel's start got cheaper
  // (tools/sweep_splits.py, graph-timed, H100, bench/results/sweep_splits_2026-12-06.json): at batch 1-2 the
  // best count is the wave or just under it down to about two tiles a split (1 x 8k V8: 7 splits 19.9 us,
  // 16 splits 16.0, 33 splits 15.5; V16: 5 splits 19.8 us, 12 splits 15.0; 2 x 8k V8: 7 splits 20.7 us,
  // 16 splits 18.1), where the old floor of four tiles a split stopped short; a second wave still costs more.
  const int64_t by_work = std::max<int64_t>(1, keys / 128);
  const int64_t want = slots / units;
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
#ifdef S2ATTN_WITH_SM90
  if (paged_prefill_on_sm90(p)) return paged_prefill_sm90(p);
#endif
  const bool tma = paged_tma_path(p, variant(p));
  PagedTmaMaps maps{};
  if (tma) maps = make_paged_tma_maps(p);
  with_kernel(p, tma, [&](auto kernel, int threads, int smem, int rows, uint64_t* configured) {
    launch_paged(p, kernel, threads, smem, rows, configured, maps);
  });
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

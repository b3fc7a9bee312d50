// The portable CUDA path's front: checks what the kernels need beyond the front door's validation
// (dtype, head dim, block size, 16-byte rows), picks the kernel variant (analytic or block-mask pattern) and launches
// it on the caller's stream. No synchronisation, no allocation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/host_math.h"
#include "cuda/cuda_backend.h"
#include "cuda/sm80/forward_sm80.h"
#include "cuda/sm80/forward_traits_sm80.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// The kernels move rows of D elements as 16-byte chunks (cp.async and vector stores).
void require_16b_rows(const char* name, const void* ptr, const SeqStrides& s, int64_t batch, int64_t seq,
                      int64_t heads) {
  // a stride along an extent of 1 is never used
  auto ok = [](int64_t stride, int64_t extent) { return extent <= 1 || stride % 8 == 0; };
  const bool aligned = (reinterpret_cast<uintptr_t>(ptr) & 15) == 0;
  if (!aligned || !ok(s.batch, batch) || !ok(s.seq, seq) || !ok(s.head, heads)) {
    throw InvalidArgument(name, "16-byte aligned rows for the CUDA backend (a 16-byte aligned data pointer and "
                                "batch, sequence and head strides that are multiples of 8 elements), got strides [" +
                                    std::to_string(s.batch) + ", " + std::to_string(s.seq) + ", " +
                                    std::to_string(s.head) + "] and pointer offset " +
                                    std::to_string(reinterpret_cast<uintptr_t>(ptr) & 15) + " bytes");
  }
}

template <typename Elem, int kHeadDim, bool kList>
void dispatch_key_tile(const AttentionParams& p, const ForwardLaunch& launch) {
  switch (key_tile_sm80(p.pattern.block_size)) {
    case 16: run_forward_sm80<Elem, kHeadDim, 16, kList>(p, launch); return;
    case 32: run_forward_sm80<Elem, kHeadDim, 32, kList>(p, launch); return;
    case 64: run_forward_sm80<Elem, kHeadDim, 64, kList>(p, launch); return;
    default: break;
  }
  throw Unsupported("the CUDA forward supports block sizes 16, 32, 64 and 128; got " +
                    std::to_string(p.pattern.block_size));
}

template <typename Elem>
void dispatch_head_dim(const AttentionParams& p, const ForwardLaunch& launch) {
  const bool list = p.pattern.use_mask != 0;
  switch (p.head_dim) {
    case 64: list ? dispatch_key_tile<Elem, 64, true>(p, launch) : dispatch_key_tile<Elem, 64, false>(p, launch); return;
    case 128:
      list ? dispatch_key_tile<Elem, 128, true>(p, launch) : dispatch_key_tile<Elem, 128, false>(p, launch);
      return;
    default: break;
  }
  throw Unsupported("the CUDA forward supports head_dim 64 and 128; got head_dim " + std::to_string(p.head_dim));
}

}  // namespace

void forward_sm80(const AttentionParams& p) {
  // Block-mask patterns: the front door put the pattern's cached device lists in p.pattern.mask
  // (Pattern::mask_view); the kernels walk the row lists (col_idx) instead of the analytic segments.
  if (p.pattern.use_mask && (p.pattern.mask.row_ptr == nullptr || p.pattern.mask.col_idx == nullptr)) {
    throw InvalidArgument("pattern", "a block mask with its lists on the device (Pattern::mask_view)");
  }
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) {
    throw Unsupported(std::string("the CUDA forward supports float16 and bfloat16; got ") + dtype_name(p.dtype));
  }
  if (p.head_dim != 64 && p.head_dim != 128) {
    throw Unsupported("the CUDA forward supports head_dim 64 and 128; got head_dim " + std::to_string(p.head_dim));
  }
  const int bs = p.pattern.block_size;
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128) {
    throw Unsupported("the CUDA forward supports block sizes 16, 32, 64 and 128; got " + std::to_string(bs));
  }
  require_16b_rows("q", p.q, p.q_stride, p.batch, p.seqlen_q, p.num_heads);
  require_16b_rows("k", p.k, p.k_stride, p.batch, p.seqlen_k, p.num_kv_heads);
  require_16b_rows("v", p.v, p.v_stride, p.batch, p.seqlen_k, p.num_kv_heads);
  require_16b_rows("out", p.out, p.out_stride, p.batch, p.seqlen_q, p.num_heads);
  if (p.q_offset >= kMaxKernelPosition || p.q_offset + p.seqlen_q >= kMaxKernelPosition) {
    throw InvalidArgument("q_offset", "q_offset + seqlen_q below 2^30 for the CUDA backend, got " +
                                          std::to_string(p.q_offset));
  }
  if (p.batch <= 0 || p.seqlen_q <= 0) return;

  ForwardLaunch launch;
  const int block_m = query_tile_sm80(key_tile_sm80(p.pattern.block_size));
  if (p.cu_seqlens_q != nullptr) {
    // lengths live on the device: seqlen_q is the total, an upper bound of every sequence; +1 for a
    // tile straddling an unaligned offset. CTAs beyond a sequence's tiles exit at once.
    launch.query_tiles = static_cast<int>((p.seqlen_q + block_m - 1) / block_m + 1);
  } else {
    const int64_t off = p.q_offset >= 0 ? p.q_offset : int64_t(p.seqlen_k) - p.seqlen_q;
    launch.query_tiles =
        static_cast<int>(floor_div(off + p.seqlen_q - 1, block_m) - floor_div(off, block_m) + 1);
  }
  const int64_t ctas = int64_t(launch.query_tiles) * p.batch * p.num_heads;
  if (ctas > 0x7fffffff) {
    throw Unsupported("the CUDA forward launches one CTA per (query tile, sequence, head): " +
                      std::to_string(ctas) + " exceed the grid limit");
  }
  launch.device = device_of(p.q, "q");
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);
  if (p.dtype == DType::bf16) {
    dispatch_head_dim<__nv_bfloat16>(p, launch);
  } else {
    dispatch_head_dim<__half>(p, launch);
  }
}

}  // namespace s2attn::cuda

// The portable CUDA backward's front: checks what the kernels need beyond the front door's validation
// (dtype, head dim, block size, 16-byte rows), takes the caller's workspace or
// allocates one stream-ordered, and enqueues on the caller's stream, with no host synchronisation:
//   1. pre-pass: lse2, dsum = rowsum(dO * O), zeroed dQ accumulator     (backward_preprocess_sm80.cuh)
//   2. KV kernel: dK, dV written once; dQ added to the accumulator      (backward_kernel_sm80.cuh; at
//      D = 128 with 64-row steps backward_kv_2x2_kernel_sm80.cuh)
//   3. post-process: dq = scale * accumulator                           (backward_postprocess_sm80.cuh)
// Deterministic mode: step 2 skips dQ and step 3 is the Q-stationary dQ kernel (backward_dq_kernel_sm80.cuh),
// which sums each dQ element in one thread in a fixed order: no atomics, bitwise repeatable.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/host_math.h"
#include "cuda/common/stream_scratch.h"
#include "cuda/cuda_backend.h"
#include "cuda/sm80/backward_sm80.h"
#include "cuda/sm80/backward_traits_sm80.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

struct Operand {
  const char* name;
  const void* ptr;
  SeqStrides stride;
  int64_t seq, heads;
};

// The kernels move rows of D elements as 16-byte chunks (cp.async, vector loads and stores).
void require_aligned_rows(const Operand& o, int64_t batch) {
  auto ok = [](int64_t stride, int64_t extent) { return extent <= 1 || stride % 8 == 0; };  // 8 x 16 bits
  if ((reinterpret_cast<uintptr_t>(o.ptr) & 15) != 0 || !ok(o.stride.batch, batch) || !ok(o.stride.seq, o.seq) ||
      !ok(o.stride.head, o.heads)) {
    throw InvalidArgument(o.name, "16-byte aligned rows for the CUDA backend (a 16-byte aligned data pointer and "
                                  "batch, sequence and head strides that are multiples of 8 elements), got strides [" +
                                      std::to_string(o.stride.batch) + ", " + std::to_string(o.stride.seq) + ", " +
                                      std::to_string(o.stride.head) + "]");
  }
}

template <typename Elem, int kHeadDim, bool kList>
void run_variant(const AttentionBwdParams& p, const BackwardLaunch& launch) {
  run_backward_rows_sm80<Elem, kHeadDim>(p, launch, /*post=*/false);
  if (launch.kv_order.tiles > 0) {
    // 64-row steps need 105 KiB of shared memory at D = 128: on GPUs that allow a CTA less (sm_86 / sm_89:
    // 99 KiB) the kernel takes 32-row steps (a 64- or 128-row block is then two or four steps)
    int rows = bwd_query_tile_sm80(p.pattern.block_size);
    if (rows == 64 && BackwardTraitsSm80<Elem, kHeadDim, 64>::kSmemBytes > max_dynamic_smem_per_block(launch.device)) {
      rows = 32;
    }
    // D = 128, 64-row steps: the 2 x 2 kernel (112.5 KiB) where a CTA may have it
    if constexpr (kHeadDim == 128) {
      using TwoByTwo = BackwardKv2x2TraitsSm80<Elem, kHeadDim>;
      if (rows == 64 && TwoByTwo::kSmemBytes <= max_dynamic_smem_per_block(launch.device)) {
        rows = 0;
        run_backward_kv_2x2_sm80<Elem, kHeadDim, kList>(p, launch);
      }
    }
    switch (rows) {
      case 0: break;  // done above
      case 16: run_backward_kv_sm80<Elem, kHeadDim, 16, kList>(p, launch); break;
      case 32: run_backward_kv_sm80<Elem, kHeadDim, 32, kList>(p, launch); break;
      default: run_backward_kv_sm80<Elem, kHeadDim, 64, kList>(p, launch); break;
    }
  }
  if (!p.deterministic) {
    run_backward_rows_sm80<Elem, kHeadDim>(p, launch, /*post=*/true);
  } else if (launch.query_tiles > 0) {
    switch (key_tile_sm80(p.pattern.block_size)) {
      case 16: run_backward_dq_sm80<Elem, kHeadDim, 16, kList>(p, launch); break;
      case 32: run_backward_dq_sm80<Elem, kHeadDim, 32, kList>(p, launch); break;
      default: run_backward_dq_sm80<Elem, kHeadDim, 64, kList>(p, launch); break;
    }
  }
}

template <typename Elem, int kHeadDim>
void dispatch_pattern_kind(const AttentionBwdParams& p, const BackwardLaunch& launch) {
  if (p.pattern.use_mask) {
    run_variant<Elem, kHeadDim, true>(p, launch);
  } else {
    run_variant<Elem, kHeadDim, false>(p, launch);
  }
}

template <typename Elem>
void dispatch_head_dim(const AttentionBwdParams& p, const BackwardLaunch& launch) {
  if (p.head_dim == 64) {
    dispatch_pattern_kind<Elem, 64>(p, launch);
  } else {
    dispatch_pattern_kind<Elem, 128>(p, launch);
  }
}

}  // namespace

void backward_sm80(const AttentionBwdParams& params) {
  AttentionBwdParams p = params;
  p.deterministic = params.deterministic || ordered_dq_preferred(params.pattern);
  // Block-mask patterns: the front door put the pattern's cached device lists in p.pattern.mask
  // (Pattern::mask_view); the KV kernel walks the column lists, the deterministic dQ kernel the row lists.
  const BlockMaskView& m = p.pattern.mask;
  if (p.pattern.use_mask && (m.row_ptr == nullptr || m.col_idx == nullptr || m.col_ptr == nullptr ||
                             m.row_idx == nullptr)) {
    throw InvalidArgument("pattern", "a block mask with its lists on the device (Pattern::mask_view)");
  }
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) {
    throw Unsupported(std::string("the CUDA backward supports float16 and bfloat16; got ") + dtype_name(p.dtype));
  }
  if (p.head_dim != 64 && p.head_dim != 128) {
    throw Unsupported("the CUDA backward supports head_dim 64 and 128; got head_dim " + std::to_string(p.head_dim));
  }
  const int bs = p.pattern.block_size;
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128) {
    throw Unsupported("the CUDA backward supports block sizes 16, 32, 64 and 128; got " + std::to_string(bs));
  }
  const Operand operands[] = {
      {"q", p.q, p.q_stride, p.seqlen_q, p.num_heads},          {"k", p.k, p.k_stride, p.seqlen_k, p.num_kv_heads},
      {"v", p.v, p.v_stride, p.seqlen_k, p.num_kv_heads},       {"out", p.out, p.out_stride, p.seqlen_q, p.num_heads},
      {"dout", p.dout, p.dout_stride, p.seqlen_q, p.num_heads}, {"dq", p.dq, p.dq_stride, p.seqlen_q, p.num_heads},
      {"dk", p.dk, p.dk_stride, p.seqlen_k, p.num_kv_heads},    {"dv", p.dv, p.dv_stride, p.seqlen_k, p.num_kv_heads},
  };
  for (const Operand& o : operands) require_aligned_rows(o, p.batch);
  if (p.q_offset >= kMaxKernelPosition || p.q_offset + p.seqlen_q >= kMaxKernelPosition) {
    throw InvalidArgument("q_offset", "q_offset + seqlen_q below 2^30 for the CUDA backend, got " +
                                          std::to_string(p.q_offset));
  }
  if (p.batch <= 0) return;

  BackwardLaunch launch;
  const int block_n = bwd_key_tile_sm80(), block_m = dq_query_tile_sm80(key_tile_sm80(p.pattern.block_size));
  launch.kv_order = kv_tile_order(p.pattern, static_cast<int>((int64_t(p.seqlen_k) + block_n - 1) / block_n), block_n);
  if (p.seqlen_q > 0) {
    if (p.cu_seqlens_q != nullptr) {
      // lengths live on the device: seqlen_q is the total, an upper bound; +1 for an unaligned offset
      launch.query_tiles = static_cast<int>((p.seqlen_q + block_m - 1) / block_m + 1);
    } else {
      const int64_t off = p.q_offset >= 0 ? p.q_offset : int64_t(p.seqlen_k) - p.seqlen_q;
      launch.query_tiles =
          static_cast<int>(floor_div64(off + p.seqlen_q - 1, block_m) - floor_div64(off, block_m) + 1);
    }
  }
  const int64_t kv_ctas = kv_grid_ctas(p, launch.kv_order);
  const int64_t dq_ctas = p.deterministic ? int64_t(launch.query_tiles) * p.batch * p.num_heads : 0;
  const int64_t row_ctas = int64_t(p.num_heads) * p.total_q * (p.head_dim / 8) / 256 + 1;
  if (kv_ctas > 0x7fffffff || dq_ctas > 0x7fffffff || row_ctas > 0x7fffffff) {
    throw Unsupported("the CUDA backward's grid would exceed 2^31 - 1 CTAs for these shapes");
  }

  if (p.total_q == 0 && p.seqlen_k == 0) return;  // nothing to write
  // an empty q may have no data pointer: then the keys name the device
  launch.device = p.total_q > 0 ? device_of(p.q, "q") : device_of(p.k, "k");
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);
  const BackwardWorkspace layout(p.num_heads, p.total_q, p.head_dim, p.batch, p.deterministic);
  // the front door checked a caller's workspace (size, alignment, device); else one of our own
  StreamScratch own(p.workspace != nullptr ? 0 : layout.bytes(), launch.stream);
  char* base = static_cast<char*>(p.workspace != nullptr ? p.workspace : own.get());
  if (base != nullptr) {
    launch.lse2 = reinterpret_cast<float*>(base + layout.lse2_offset());
    launch.dsum = reinterpret_cast<float*>(base + layout.dsum_offset());
    if (!p.deterministic) launch.dq_accum = reinterpret_cast<float*>(base + layout.dq_offset());
  }
  if (p.dtype == DType::bf16) {
    dispatch_head_dim<__nv_bfloat16>(p, launch);
  } else {
    dispatch_head_dim<__half>(p, launch);
  }
}

}  // namespace s2attn::cuda

// Definitions of the portable backward's launchers: included by the instantiation files only.
#pragma once
#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/sm80/backward_dq_kernel_sm80.cuh"
#include "cuda/sm80/backward_kernel_sm80.cuh"
#include "cuda/sm80/backward_postprocess_sm80.cuh"
#include "cuda/sm80/backward_preprocess_sm80.cuh"
#include "cuda/sm80/backward_sm80.h"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim>
void run_backward_rows_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch, bool post) {
  const int64_t rows = int64_t(params.num_heads) * params.total_q;
  if (rows == 0) return;
  constexpr int kChunks = kHeadDim / 8;
  if (!post) {
    const int64_t ctas = (rows * kChunks + kRowKernelThreads - 1) / kRowKernelThreads;
    backward_preprocess_sm80<Elem, kHeadDim><<<static_cast<unsigned>(ctas), kRowKernelThreads, 0, launch.stream>>>(
        params, launch.lse2, launch.dsum, launch.dq_accum);
  } else {
    const int64_t ctas = (rows * kChunks + kRowKernelThreads - 1) / kRowKernelThreads;
    backward_postprocess_sm80<Elem, kHeadDim><<<static_cast<unsigned>(ctas), kRowKernelThreads, 0, launch.stream>>>(
        params, launch.dq_accum);
  }
  S2_CUDA_CHECK(cudaGetLastError());
}

template <typename Elem, int kHeadDim, int kBlockM, bool kList>
void run_backward_kv_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch) {
  using T = BackwardTraitsSm80<Elem, kHeadDim, kBlockM>;
  static uint64_t smem_configured = 0;  // devices on which the kernel may use kSmemBytes
  const auto kernel = backward_kv_kernel_sm80<T, kList>;
  if (T::kSmemBytes > 48 * 1024) {
    set_dynamic_smem_once(reinterpret_cast<const void*>(kernel), T::kSmemBytes, launch.device, &smem_configured);
  }
  const int64_t ctas = int64_t(launch.key_tiles) * params.batch * params.num_kv_heads;
  kernel<<<static_cast<unsigned>(ctas), T::kThreads, T::kSmemBytes, launch.stream>>>(
      params, launch.key_tiles, launch.lse2, launch.dsum, launch.dq_accum);
  S2_CUDA_CHECK(cudaGetLastError());
}

template <typename Elem, int kHeadDim, int kBlockN, bool kList>
void run_backward_dq_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch) {
  using T = DqTraitsSm80<Elem, kHeadDim, kBlockN>;
  static uint64_t smem_configured = 0;
  const auto kernel = backward_dq_kernel_sm80<T, kList>;
  if (T::kSmemBytes > 48 * 1024) {
    set_dynamic_smem_once(reinterpret_cast<const void*>(kernel), T::kSmemBytes, launch.device, &smem_configured);
  }
  const int64_t ctas = int64_t(launch.query_tiles) * params.batch * params.num_heads;
  kernel<<<static_cast<unsigned>(ctas), T::kThreads, T::kSmemBytes, launch.stream>>>(params, launch.query_tiles,
                                                                                      launch.lse2, launch.dsum);
  S2_CUDA_CHECK(cudaGetLastError());
}

}  // namespace s2attn::cuda

// The variants of one (dtype, head dim), analytic and block-mask (LIST); use inside namespace s2attn::cuda.
#define S2ATTN_INSTANTIATE_BACKWARD_SM80_KIND(ELEM, HEAD_DIM, LIST)                                              \
  template void run_backward_kv_sm80<ELEM, HEAD_DIM, 16, LIST>(const AttentionBwdParams&, const BackwardLaunch&); \
  template void run_backward_kv_sm80<ELEM, HEAD_DIM, 32, LIST>(const AttentionBwdParams&, const BackwardLaunch&); \
  template void run_backward_kv_sm80<ELEM, HEAD_DIM, 64, LIST>(const AttentionBwdParams&, const BackwardLaunch&); \
  template void run_backward_dq_sm80<ELEM, HEAD_DIM, 16, LIST>(const AttentionBwdParams&, const BackwardLaunch&); \
  template void run_backward_dq_sm80<ELEM, HEAD_DIM, 32, LIST>(const AttentionBwdParams&, const BackwardLaunch&); \
  template void run_backward_dq_sm80<ELEM, HEAD_DIM, 64, LIST>(const AttentionBwdParams&, const BackwardLaunch&);
#define S2ATTN_INSTANTIATE_BACKWARD_SM80(ELEM, HEAD_DIM)                                                        \
  template void run_backward_rows_sm80<ELEM, HEAD_DIM>(const AttentionBwdParams&, const BackwardLaunch&, bool); \
  S2ATTN_INSTANTIATE_BACKWARD_SM80_KIND(ELEM, HEAD_DIM, false)                                                  \
  S2ATTN_INSTANTIATE_BACKWARD_SM80_KIND(ELEM, HEAD_DIM, true)

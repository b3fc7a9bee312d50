// Definitions of the portable backward's launchers: included by the instantiation files only.
#pragma once
#include "cuda/common/launch.cuh"
#include "cuda/sm80/backward_dq_kernel_sm80.cuh"
#include "cuda/sm80/backward_kernel_sm80.cuh"
#include "cuda/sm80/backward_kv_2x2_kernel_sm80.cuh"
#include "cuda/sm80/backward_postprocess_sm80.cuh"
#include "cuda/sm80/backward_preprocess_sm80.cuh"
#include "cuda/sm80/backward_sm80.h"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim>
void run_backward_rows_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch, bool post) {
  const int64_t rows = int64_t(params.num_heads) * params.total_q;
  if (rows == 0) return;
  constexpr int kChunks = kHeadDim / 8;
  const unsigned grid = grid_extent((rows * kChunks + kRowKernelThreads - 1) / kRowKernelThreads,
                                    "the CUDA backward's row pass");
  static uint64_t configured = 0;  // (no opt-in: no dynamic shared memory)
  if (!post) {
    launch_kernel(backward_preprocess_sm80<Elem, kHeadDim>, grid, kRowKernelThreads, 0, launch.stream, launch.device,
                  &configured, params, launch.lse2, launch.dsum, launch.dq_accum);
  } else {
    launch_kernel(backward_postprocess_sm80<Elem, kHeadDim>, grid, kRowKernelThreads, 0, launch.stream,
                  launch.device, &configured, params, launch.dq_accum);
  }
}

template <typename Elem, int kHeadDim, int kBlockM, bool kList>
void run_backward_kv_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch) {
  using T = BackwardTraitsSm80<Elem, kHeadDim, kBlockM>;
  static uint64_t configured = 0;
  launch_kernel(backward_kv_kernel_sm80<T, kList>,
                grid_extent(kv_grid_ctas(params, launch.kv_order), "the CUDA backward"), T::kThreads,
                T::kSmemBytes, launch.stream, launch.device, &configured, params, launch.kv_order, launch.lse2,
                launch.dsum, launch.dq_accum);
}

template <typename Elem, int kHeadDim, bool kList>
void run_backward_kv_2x2_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch) {
  using T = BackwardKv2x2TraitsSm80<Elem, kHeadDim>;
  static uint64_t configured = 0;
  launch_kernel(backward_kv_2x2_kernel_sm80<T, kList>,
                grid_extent(kv_grid_ctas(params, launch.kv_order), "the CUDA backward"), T::kThreads,
                T::kSmemBytes, launch.stream, launch.device, &configured, params, launch.kv_order, launch.lse2,
                launch.dsum, launch.dq_accum);
}

template <typename Elem, int kHeadDim, int kKeyTile, bool kList>
void run_backward_dq_sm80(const AttentionBwdParams& params, const BackwardLaunch& launch) {
  using T = DqTraitsSm80<Elem, kHeadDim, dq_key_tile_sm80(kKeyTile), dq_query_tile_sm80(kKeyTile)>;
  static uint64_t configured = 0;
  const int64_t ctas = int64_t(launch.query_tiles) * params.batch * params.num_heads;
  launch_kernel(backward_dq_kernel_sm80<T, kList>, grid_extent(ctas, "the CUDA backward's dQ pass"), T::kThreads,
                T::kSmemBytes, launch.stream, launch.device, &configured, params, launch.query_tiles, launch.lse2,
                launch.dsum);
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
// The 2 x 2 KV kernel (head dim 128 only).
#define S2ATTN_INSTANTIATE_BACKWARD_KV_2X2_SM80(ELEM)                                                            \
  template void run_backward_kv_2x2_sm80<ELEM, 128, false>(const AttentionBwdParams&, const BackwardLaunch&);   \
  template void run_backward_kv_2x2_sm80<ELEM, 128, true>(const AttentionBwdParams&, const BackwardLaunch&);
#define S2ATTN_INSTANTIATE_BACKWARD_SM80(ELEM, HEAD_DIM)                                                        \
  template void run_backward_rows_sm80<ELEM, HEAD_DIM>(const AttentionBwdParams&, const BackwardLaunch&, bool); \
  S2ATTN_INSTANTIATE_BACKWARD_SM80_KIND(ELEM, HEAD_DIM, false)                                                  \
  S2ATTN_INSTANTIATE_BACKWARD_SM80_KIND(ELEM, HEAD_DIM, true)

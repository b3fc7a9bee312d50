// Definition of run_forward_sm80: included by the instantiation files only.
#pragma once
#include "cuda/common/launch.cuh"
#include "cuda/sm80/forward_kernel_sm80.cuh"
#include "cuda/sm80/forward_sm80.h"

namespace s2attn::cuda {

template <typename Elem, int kHeadDim, int kBlockN, bool kList>
void run_forward_sm80(const AttentionParams& params, const ForwardLaunch& launch) {
  using T = ForwardTraitsSm80<Elem, kHeadDim, query_tile_sm80(kBlockN), kBlockN>;
  static uint64_t configured = 0;
  const int64_t ctas = int64_t(launch.query_tiles) * params.batch * params.num_heads;
  launch_kernel(forward_kernel_sm80<T, kList>, grid_extent(ctas, "the CUDA forward"), T::kThreads, T::kSmemBytes,
                launch.stream, launch.device, &configured, params, launch.query_tiles);
}

}  // namespace s2attn::cuda

// One explicit instantiation per (dtype, head dim, key tile, pattern kind); use inside namespace s2attn::cuda.
#define S2ATTN_INSTANTIATE_FORWARD_SM80_KIND(ELEM, HEAD_DIM, LIST)                                              \
  template void run_forward_sm80<ELEM, HEAD_DIM, 16, LIST>(const AttentionParams&, const ForwardLaunch&); \
  template void run_forward_sm80<ELEM, HEAD_DIM, 32, LIST>(const AttentionParams&, const ForwardLaunch&); \
  template void run_forward_sm80<ELEM, HEAD_DIM, 64, LIST>(const AttentionParams&, const ForwardLaunch&);
#define S2ATTN_INSTANTIATE_FORWARD_SM80(ELEM, HEAD_DIM)    \
  S2ATTN_INSTANTIATE_FORWARD_SM80_KIND(ELEM, HEAD_DIM, false) \
  S2ATTN_INSTANTIATE_FORWARD_SM80_KIND(ELEM, HEAD_DIM, true)

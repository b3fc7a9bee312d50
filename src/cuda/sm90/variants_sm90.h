// Which Hopper kernel variants (dtype x head dim) this build has: sm90.cmake defines
// S2ATTN_SM90_HAS_<DTYPE>_D<HEAD_DIM> for each entry of S2ATTN_SM90_VARIANTS. A variant that is not built is
// never dispatched to, and its kernels are not referenced (no link error for a reduced build).
#pragma once
#include <type_traits>

#include <cutlass/numeric_types.h>

namespace s2attn::cuda {

template <typename Elem, int kHeadDim>
constexpr bool variant_built_sm90_v() {
  constexpr bool kBf16 = std::is_same_v<Elem, cutlass::bfloat16_t>;
  return
#if defined(S2ATTN_SM90_HAS_BF16_D128)
      (kBf16 && kHeadDim == 128) ||
#endif
#if defined(S2ATTN_SM90_HAS_FP16_D128)
      (!kBf16 && kHeadDim == 128) ||
#endif
#if defined(S2ATTN_SM90_HAS_BF16_D64)
      (kBf16 && kHeadDim == 64) ||
#endif
#if defined(S2ATTN_SM90_HAS_FP16_D64)
      (!kBf16 && kHeadDim == 64) ||
#endif
      false;
}

}  // namespace s2attn::cuda

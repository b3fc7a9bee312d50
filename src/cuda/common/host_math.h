// Host-side integer helpers and limits shared by the CUDA fronts (launch geometry and support checks).
#pragma once
#include <cstdint>

namespace s2attn::cuda {

// Positions (query and key tokens, relative to their sequence) are 32-bit ints in every CUDA kernel.
constexpr int64_t kMaxKernelPosition = int64_t(1) << 30;

// floor(a / b) for b > 0 (a may be negative: queries placed before the keys).
inline int64_t floor_div64(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace s2attn::cuda

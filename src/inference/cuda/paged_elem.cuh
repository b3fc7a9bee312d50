// Element conversions of the paged kernels: a 16-byte vector of T (shared or global memory) to fp32, and
// fp32 back to T. T is float, __half or __nv_bfloat16.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace s2attn::cuda {

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// dst[e] = mul * src[e] for the kVec elements (16 bytes, 16-byte aligned) at src.
template <typename T, int kVec>
__device__ __forceinline__ void load_vec(const T* src, float (&dst)[kVec], float mul) {
  static_assert(kVec * sizeof(T) == 16, "one 16-byte vector");
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec; ++i) dst[i] = to_float<T>(e[i]) * mul;
}

}  // namespace s2attn::cuda

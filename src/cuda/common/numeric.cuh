// Device helpers for the 16-bit float formats: packing two fp32 values into one register of the element
// type (round to nearest even), as the mma A operand and the output stores need.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace s2attn::cuda {

template <typename Elem>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragment of an mma.sync m16n8k16 step from the fp32 accumulators of the two m16n8 tiles that hold
// its k columns 0..7 (lo) and 8..15 (hi): an accumulator's layout is the A operand's, packed to 16 bits.
template <typename Elem>
__device__ __forceinline__ void accum_to_a_frag(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<Elem>(lo[0], lo[1]);
  a[1] = pack2<Elem>(lo[2], lo[3]);
  a[2] = pack2<Elem>(hi[0], hi[1]);
  a[3] = pack2<Elem>(hi[2], hi[3]);
}

// The inverse of pack2: two 16-bit values of one register as fp32 (exact).
template <typename Elem>
__device__ __forceinline__ float2 unpack2(uint32_t v);

template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t v) {
  return __half22float2(*reinterpret_cast<const __half2*>(&v));
}

constexpr float kLog2e = 1.4426950408889634f;  // scores go to the log2 domain: exp(x) = exp2(x * log2 e)
constexpr float kLn2 = 0.6931471805599453f;     // and the LSE back: ln(x) = log2(x) * ln 2

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// floor(a / b) for b > 0 (positions before the first key are negative).
__device__ __forceinline__ int floor_div(int a, int b) {
  const int q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace s2attn::cuda

// Host conversions between float and the 16-bit float formats (bf16, IEEE fp16), bit-exact and portable:
// round-to-nearest-even on the way down, NaN kept a NaN (bf16 keeps the payload's top bits), infinities and
// subnormals handled. Written without branches that depend on data, so loops over them vectorize.
// Host only: device code uses the CUDA intrinsics.
#pragma once
#include <cstdint>
#include <cstring>

namespace s2attn {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bf16 is the top half of a float.
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // carries into the exponent: to inf
  const uint32_t nan = (u >> 16) | 0x40u;                           // quiet, payload's top bits kept
  return static_cast<uint16_t>(is_nan ? nan : rounded);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  // normal: rebias the exponent (15 -> 127); inf/nan: exponent all ones; subnormal: m * 2^-24, exact.
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t infnan = (em << 13) | 0x7f800000u;
  const uint32_t subnormal = float_bits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  const uint32_t mag = em < 0x400u ? subnormal : (em >= 0x7c00u ? infnan : normal);
  return bits_float(sign | mag);
}

inline uint16_t float_to_half(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // overflow (|f| >= 65520 rounds to inf), inf, nan
  const uint32_t big = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : 0x7c00u;
  // normal half range: round the 13 dropped mantissa bits to nearest even; may carry into inf
  const uint32_t normal = (a - ((127u - 15u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // subnormal half (|f| < 2^-14): adding 0.5 aligns the half's subnormal ulp (2^-24) to the float's ulp,
  // and the float addition rounds to nearest even.
  const uint32_t sub = float_bits(bits_float(a) + 0.5f) - float_bits(0.5f);
  const uint32_t mag = a >= 0x477ff000u ? big : (a < 0x38800000u ? sub : normal);
  return static_cast<uint16_t>(sign | mag);
}

}  // namespace s2attn

// Moving tiles between the operands (f32, f16 or bf16 rows with a row stride, dim stride 1) and fp32
// scratch: loads convert once per tile (optionally scaling), row-major or transposed, and zero the padding
// columns; stores convert back. Shared by the CPU forward and backward kernels.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/attention_params.h"
#include "common/half.h"
#include "s2attn/tensor.h"

namespace s2attn::cpu {

inline int64_t element_bytes(DType t) { return t == DType::f32 ? 4 : 2; }  // f32, f16, bf16 only

// Address of element `index` (in elements) of an operand of type t.
inline const void* element_ptr(const void* base, DType t, int64_t index) {
  return static_cast<const char*>(base) + index * element_bytes(t);
}
inline void* element_ptr(void* base, DType t, int64_t index) {
  return static_cast<char*>(base) + index * element_bytes(t);
}

// Element (b, token, h, 0) of a [batch, seq, head, dim] operand with strides s.
inline const void* operand_row(const void* base, DType t, const SeqStrides& s, int64_t b, int64_t token,
                               int64_t h) {
  return element_ptr(base, t, b * s.batch + token * s.seq + h * s.head);
}
inline void* operand_row(void* base, DType t, const SeqStrides& s, int64_t b, int64_t token, int64_t h) {
  return element_ptr(base, t, b * s.batch + token * s.seq + h * s.head);
}

// dst[0, n) = src[0, n) converted to fp32, times mul.
inline void convert_row(DType t, const void* src, int n, float mul, float* __restrict dst) {
  if (t == DType::f32) {
    const float* s = static_cast<const float*>(src);
    if (mul == 1.f) {
      std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(float));
    } else {
      for (int c = 0; c < n; ++c) dst[c] = s[c] * mul;
    }
  } else if (t == DType::bf16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int c = 0; c < n; ++c) dst[c] = bf16_to_float(s[c]) * mul;
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int c = 0; c < n; ++c) dst[c] = half_to_float(s[c]) * mul;
  }
}

// dst[0, n) = src[0, n) converted from fp32, times mul.
inline void store_row(DType t, const float* __restrict src, int n, float mul, void* dst) {
  if (t == DType::f32) {
    float* d = static_cast<float*>(dst);
    for (int c = 0; c < n; ++c) d[c] = src[c] * mul;
  } else if (t == DType::bf16) {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int c = 0; c < n; ++c) d[c] = float_to_bf16(src[c] * mul);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int c = 0; c < n; ++c) d[c] = float_to_half(src[c] * mul);
  }
}

// Row-major tile: dst[r * ld + c] = mul * src(r, c) for r < rows, c < cols; columns [cols, ld) zeroed.
// src(r, c) is element r * row_stride + c of `src`.
inline void load_tile(DType t, const void* src, int64_t row_stride, int rows, int cols, float mul, float* dst,
                      int64_t ld) {
  for (int r = 0; r < rows; ++r) {
    float* d = dst + r * ld;
    convert_row(t, element_ptr(src, t, r * row_stride), cols, mul, d);
    for (int64_t c = cols; c < ld; ++c) d[c] = 0.f;
  }
}

// Transposed tile: dst[c * ld + r] = mul * src(r, c) for c < cols, r < rows, and 0 for r in [rows, width).
// `row` is scratch for one converted row (cols floats).
inline void load_tile_transposed(DType t, const void* src, int64_t row_stride, int rows, int cols, float mul,
                                 float* __restrict dst, int64_t ld, int width, float* __restrict row) {
  for (int r = 0; r < rows; ++r) {
    convert_row(t, element_ptr(src, t, r * row_stride), cols, mul, row);
    for (int c = 0; c < cols; ++c) dst[c * ld + r] = row[c];
  }
  for (int c = 0; c < cols; ++c) {
    for (int r = rows; r < width; ++r) dst[c * ld + r] = 0.f;
  }
}

// dst(r, c) = row_mul[r] * src[r * ld + c] for r < rows, c < cols (row_mul null: mul for every row).
inline void store_tile(DType t, const float* src, int64_t ld, int rows, int cols, float mul,
                       const float* row_mul, void* dst, int64_t row_stride) {
  for (int r = 0; r < rows; ++r) {
    store_row(t, src + r * ld, cols, row_mul ? row_mul[r] : mul, element_ptr(dst, t, r * row_stride));
  }
}

// Hints the cache to fetch rows [0, rows) x [0, cols) of an operand (the next key block, while the
// current one is being computed).
inline void prefetch_tile(DType t, const void* src, int64_t row_stride, int rows, int cols) {
#if defined(__GNUC__)
  const int64_t bytes = cols * element_bytes(t);
  for (int r = 0; r < rows; ++r) {
    const char* row = static_cast<const char*>(element_ptr(src, t, r * row_stride));
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(row + b);
  }
#else
  (void)t, (void)src, (void)row_stride, (void)rows, (void)cols;
#endif
}

// Zero rows of an output operand.
inline void zero_rows(DType t, void* dst, int64_t row_stride, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    std::memset(element_ptr(dst, t, r * row_stride), 0, static_cast<size_t>(cols) * element_bytes(t));
  }
}

}  // namespace s2attn::cpu

// fp32 tile math shared by the CPU forward and backward kernels: a register-blocked GEMM micro-kernel and
// its driver, a vectorizable exp2, and the width padding the tiles use. Plain C++ written so that gcc
// vectorizes it at -O3 without -ffast-math (explicit fma where the target has it, no reductions across
// vector lanes: row reductions are element-wise over the rows of a transposed tile).
//
// Include only from translation units compiled with the same flags (forward_cpu.cpp, backward_cpu.cpp): the
// register blocking depends on the target ISA.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/half.h"

namespace s2attn::cpu {

// Register blocking of the micro-kernel: kMR rows x kNR columns of C stay in registers.
#if defined(__AVX512F__)
constexpr int kMR = 8, kNR = 32;  // 16 zmm accumulators
#elif defined(__AVX__)
constexpr int kMR = 6, kNR = 16;  // 12 ymm accumulators
#else
constexpr int kMR = 4, kNR = 8;  // 8 xmm accumulators
#endif

// Every B/C width the kernels use is padded to a multiple of kColPad (zero-filled padding).
constexpr int kColPad = 16;
static_assert(kNR % kColPad == 0 || kColPad % kNR == 0, "column padding and kNR must nest");

// Forces inlining of the small element-wise functions, so the loops calling them vectorize whatever the
// inliner's budget for the enclosing kernel.
#if defined(__GNUC__)
#define S2_CPU_INLINE inline __attribute__((always_inline))
#else
#define S2_CPU_INLINE inline
#endif

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int pad_cols(int n) { return static_cast<int>(round_up(n, kColPad)); }

S2_CPU_INLINE float madd(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);  // a single vfmadd when FMA is enabled
#else
  return a * b + c;
#endif
}

// C[MR x NR] (+)= A[MR x K] B[K x NR]. A(m, k) is A[m * lda + k], or A[k * lda + m] when kAT (A given
// transposed: the K x M row-major matrix whose transpose is multiplied). B and C row-major.
template <int MR, int NR, bool kAcc, bool kAT>
inline void micro_kernel(int K, const float* __restrict A, int64_t lda, const float* __restrict B,
                         int64_t ldb, float* __restrict C, int64_t ldc) {
  float acc[MR][NR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 32
    for (int c = 0; c < NR; ++c) acc[r][c] = kAcc ? C[r * ldc + c] : 0.f;
  }
  for (int k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float a = kAT ? A[k * lda + r] : A[r * lda + k];
#pragma GCC unroll 32
      for (int c = 0; c < NR; ++c) acc[r][c] = madd(a, b[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 32
    for (int c = 0; c < NR; ++c) C[r * ldc + c] = acc[r][c];
  }
}

// The last `rows` (< MR) rows of a column panel.
template <int MR, int NR, bool kAcc, bool kAT>
inline void micro_kernel_rows(int rows, int K, const float* A, int64_t lda, const float* B, int64_t ldb,
                              float* C, int64_t ldc) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      micro_kernel<MR, NR, kAcc, kAT>(K, A, lda, B, ldb, C, ldc);
    } else {
      micro_kernel_rows<MR - 1, NR, kAcc, kAT>(rows, K, A, lda, B, ldb, C, ldc);
    }
  }
}

template <int NR, bool kAcc, bool kAT>
inline void gemm_panel(int M, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                       int64_t ldc) {
  int m = 0;
  for (; m + kMR <= M; m += kMR) {
    micro_kernel<kMR, NR, kAcc, kAT>(K, kAT ? A + m : A + m * lda, lda, B, ldb, C + m * ldc, ldc);
  }
  if (m < M) {
    micro_kernel_rows<kMR - 1, NR, kAcc, kAT>(M - m, K, kAT ? A + m : A + m * lda, lda, B, ldb, C + m * ldc,
                                              ldc);
  }
}

// C[M x N] (+)= op(A)[M x K] B[K x N], N a multiple of kColPad; op(A)(m, k) = A[m * lda + k], or
// A[k * lda + m] when kAT. Any M >= 0 and K >= 0 (K == 0 leaves C, or zeroes it when !kAcc).
template <bool kAcc, bool kAT>
inline void gemm(int M, int N, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc) {
  int n = 0;
  for (; n + kNR <= N; n += kNR) gemm_panel<kNR, kAcc, kAT>(M, K, A, lda, B + n, ldb, C + n, ldc);
  if constexpr (kNR > kColPad) {
    for (; n < N; n += kColPad) gemm_panel<kColPad, kAcc, kAT>(M, K, A, lda, B + n, ldb, C + n, ldc);
  }
}

// 2^x to about 2e-7 relative error; exactly 0 for x < -126 (and for -inf), NaN for NaN. Branch-free so
// loops over it vectorize: x = n + f with n = round(x), |f| <= 1/2, 2^f by the Cephes exp2f polynomial.
S2_CPU_INLINE float fast_exp2(float x) {
  const float xc = std::min(std::max(x, -127.f), 127.f);
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float t = xc + kRound;
  const float n = t - kRound;
  const float f = xc - n;
  float p = 1.535336188319500e-4f;
  p = madd(p, f, 1.339887440266574e-3f);
  p = madd(p, f, 9.618437357674640e-3f);
  p = madd(p, f, 5.550332471162809e-2f);
  p = madd(p, f, 2.402264791363012e-1f);
  p = madd(p, f, 6.931472028550421e-1f);
  p = madd(p, f, 1.f);
  const int32_t ni = static_cast<int32_t>(float_bits(t) - float_bits(kRound));  // n, in [-127, 127]
  const float two_n = bits_float(static_cast<uint32_t>(ni + 127) << 23);
  return x < -126.f ? 0.f : p * two_n;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace s2attn::cpu

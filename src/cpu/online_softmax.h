// The online-softmax step of the CPU forward kernels (the tiled forward and the paged-KV one), over a
// transposed score tile: keys are rows, query columns are reduced element-wise across rows (vectorized).
// Include only from translation units compiled with the CPU kernels' flags (see tile_math.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/tile_math.h"

namespace s2attn::cpu {

// Online-softmax update of the running max m and sum l (log2 domain) of each query column with the
// scores st[0, N) x [0, W) (one key per row, -inf where hidden): st becomes the probabilities
// exp2(st - m_new) and alpha the factor exp2(m_old - m_new) the column's running output must be scaled by.
// m_use and sum are scratch of W floats.
inline void online_softmax(float* __restrict st, int N, int W, float* __restrict m, float* __restrict l,
                           float* __restrict alpha, float* __restrict m_use, float* __restrict sum) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int c = 0; c < W; ++c) m_use[c] = kNegInf;
  for (int r = 0; r < N; ++r) {
    const float* row = st + int64_t(r) * W;
    for (int c = 0; c < W; ++c) m_use[c] = std::max(m_use[c], row[c]);
  }
  for (int c = 0; c < W; ++c) {
    const float m_new = std::max(m[c], m_use[c]);
    const float ref = m_new == kNegInf ? 0.f : m_new;  // a column with nothing visible yet stays at 0
    alpha[c] = fast_exp2(m[c] - ref);
    m[c] = m_new;
    m_use[c] = ref;
    sum[c] = 0.f;
  }
  for (int r = 0; r < N; ++r) {
    float* row = st + int64_t(r) * W;
    for (int c = 0; c < W; ++c) {
      const float e = fast_exp2(row[c] - m_use[c]);
      row[c] = e;
      sum[c] += e;
    }
  }
  for (int c = 0; c < W; ++c) l[c] = madd(l[c], alpha[c], sum[c]);
}

// Scales each of the W running output rows o[c][0, Dp) by alpha[c] (skipping the factor 1).
inline void rescale_rows(float* __restrict o, int Dp, const float* __restrict alpha, int W) {
  for (int c = 0; c < W; ++c) {
    if (alpha[c] != 1.f) {
      float* row = o + int64_t(c) * Dp;
      const float a = alpha[c];
      for (int d = 0; d < Dp; ++d) row[d] *= a;
    }
  }
}

// The end of the walk: m becomes each row's natural-log LSE and scale its output factor 1 / l; a row that
// saw nothing (l = 0, O = 0) gets output 0 and LSE -inf.
inline void finish_rows(float* __restrict m, const float* __restrict l, float* __restrict scale, int W) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int c = 0; c < W; ++c) {
    const bool seen = l[c] > 0.f;
    m[c] = seen ? (m[c] + std::log2(l[c])) * kLn2 : kNegInf;
    scale[c] = seen ? 1.f / l[c] : 0.f;
  }
}

}  // namespace s2attn::cpu

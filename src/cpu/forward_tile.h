// What the CPU forward's tile and the paged forward's share: one query block of nh packed q heads (column
// g * M + r of the transposed tiles is row r of head h0 + g), its scratch, Q^T, the online-softmax step of one
// visible key block and the normalised store. The two differ only in where a key block's K and V come from
// (the operands, or the pages of the block table): the caller fills kb / vb, then calls add_key_block.
// Include only from translation units compiled with the CPU kernels' flags (see tile_math.h).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "cpu/online_softmax.h"
#include "cpu/scratch.h"
#include "cpu/tile_io.h"
#include "cpu/tile_math.h"

namespace s2attn::cpu {

class ForwardTileCpu {
 public:
  // D: head dim; M: rows of the block; nh: packed heads; bs: the most keys a key block has.
  ForwardTileCpu(Scratch& scratch, int D, int M, int nh, int bs)
      : D_(D), M_(M), nh_(nh), MG_(nh * M), W_(pad_cols(nh * M)), Dp_(pad_cols(D)) {
    scratch.carve({{&qt_, size_t(D) * W_},
                   {&kb, size_t(bs) * D},
                   {&vb, size_t(bs) * Dp_},
                   {&st_, size_t(bs) * W_},
                   {&o_, size_t(MG_) * Dp_},
                   {&m_, size_t(W_)},
                   {&l_, size_t(W_)},
                   {&alpha_, size_t(W_)},
                   {&m_use_, size_t(W_)},
                   {&sum_, size_t(W_)},
                   {&row_, size_t(D)}});
    std::fill(o_, o_ + size_t(MG_) * Dp_, 0.f);
    std::fill(m_, m_ + W_, -std::numeric_limits<float>::infinity());
    std::fill(l_, l_ + W_, 0.f);
  }

  // Q^T of the packed heads, scaled by scale * log2(e): head g's M rows at q_at(g), q_stride elements apart.
  template <class QAt>
  void load_q(DType dt, QAt q_at, int64_t q_stride, float scale) {
    for (int g = 0; g < nh_; ++g) {
      load_tile_transposed(dt, q_at(g), q_stride, M_, D_, scale * kLog2e, qt_ + g * M_, W_,
                           g + 1 < nh_ ? M_ : W_ - g * M_, row_);
    }
  }

  // The key block of N keys at positions t0 .. t0 + N - 1, its K in kb (ld D) and V in vb (ld vb_ld()); pos0: the
  // position of the block's query row 0. Only a key block that crosses the causal diagonal is masked.
  void add_key_block(int N, int64_t t0, int64_t pos0, bool causal) {
    gemm<false, false>(N, W_, D_, kb, D_, qt_, W_, st_, W_);  // S^T = K Q^T
    if (causal && t0 + N - 1 > pos0) {
      for (int r = 0; r < N; ++r) {  // key t0 + r is hidden from the rows r' with pos0 + r' < t0 + r, every head
        const int hide = static_cast<int>(std::clamp<int64_t>(t0 + r - pos0, 0, M_));
        float* srow = st_ + int64_t(r) * W_;
        for (int g = 0; g < nh_; ++g) {
          for (int c = g * M_; c < g * M_ + hide; ++c) srow[c] = -std::numeric_limits<float>::infinity();
        }
      }
    }
    online_softmax(st_, N, W_, m_, l_, alpha_, m_use_, sum_);
    rescale_rows(o_, Dp_, alpha_, MG_);
    gemm<true, true>(MG_, Dp_, N, st_, W_, vb, Dp_, o_, Dp_);  // O += P V, P = (S^T)^T
  }

  // out = O / l and the LSE of each row (rows that saw nothing: 0 and -inf). Head g's rows go to out_at(g)
  // (out_stride elements apart) and, where lse_at(g) is not null, its LSE to lse_at(g)[r * lse_stride].
  template <class OutAt, class LseAt>
  void store(DType dt, OutAt out_at, int64_t out_stride, LseAt lse_at, int64_t lse_stride) {
    finish_rows(m_, l_, alpha_, MG_);
    for (int g = 0; g < nh_; ++g) {
      if (float* lse = lse_at(g)) {
        for (int r = 0; r < M_; ++r) lse[r * lse_stride] = m_[g * M_ + r];
      }
      store_tile(dt, o_ + int64_t(g) * M_ * Dp_, Dp_, M_, D_, 1.f, alpha_ + g * M_, out_at(g), out_stride);
    }
  }

  // V's leading dimension in vb (the head dim padded to whole column groups)
  int vb_ld() const { return Dp_; }

  float* kb = nullptr;  // the key block's K, filled by the caller (N x D)
  float* vb = nullptr;  // its V (N x vb_ld())

 private:
  int D_, M_, nh_, MG_, W_, Dp_;
  float *qt_ = nullptr, *st_ = nullptr, *o_ = nullptr, *m_ = nullptr, *l_ = nullptr, *alpha_ = nullptr;
  float *m_use_ = nullptr, *sum_ = nullptr, *row_ = nullptr;
};

}  // namespace s2attn::cpu

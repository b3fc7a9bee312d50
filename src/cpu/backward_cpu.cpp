// CPU backward. With P = exp(scale * Q K^T - lse) recomputed per block and Di = rowsum(dO * O):
//   dS = P * (dO V^T - Di),  dQ = scale * dS K,  dK = scale * dS^T Q,  dV = P^T dO.
// Two kinds of task, run in one longest-first parallel loop:
//   KV-stationary, per (sequence, KV head, key block): walks, for each q head of the group, the query
//     blocks that see the key block (the pattern's column enumeration) and accumulates dK and dV;
//   Q-stationary, per (sequence, query block, q head or the q heads of a GQA group sharing the pattern):
//     walks the visible key blocks and accumulates dQ.
// Every output element is written by exactly one task, which sums its terms in a fixed order (q heads, then
// query blocks, ascending), so results are bitwise reproducible for any thread count and schedule without
// atomics: params.deterministic needs nothing extra.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/block_schedule.h"
#include "cpu/cpu_backend.h"
#include "cpu/scratch.h"
#include "cpu/thread_pool.h"
#include "cpu/tile_io.h"
#include "cpu/tile_math.h"

namespace s2attn::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Per (q head, query row) statistics: Di = rowsum(dO * O) and the lse in the log2 domain, +inf for a row
// that saw nothing (lse = -inf), so that exp2(s - lse2) is 0 there. Indexed [h * rows + row_base(b) + r].
struct RowStats {
  std::vector<float> di, lse2;
  int64_t rows = 0;  // per head
  int64_t row_base(const AttentionParams& p, int32_t b) const {
    return p.cu_seqlens_q ? p.cu_seqlens_q[b] : int64_t(b) * p.seqlen_q;
  }
  const float* di_at(const AttentionParams& p, int32_t h, int32_t b, int32_t r) const {
    return di.data() + h * rows + row_base(p, b) + r;
  }
  const float* lse2_at(const AttentionParams& p, int32_t h, int32_t b, int32_t r) const {
    return lse2.data() + h * rows + row_base(p, b) + r;
  }
};

float dot(const float* __restrict a, const float* __restrict b, int n) {
  constexpr int kLanes = 16;  // independent partial sums, so the loop vectorizes without reassociation
  float part[kLanes] = {};
  int d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int c = 0; c < kLanes; ++c) part[c] = madd(a[d + c], b[d + c], part[c]);
  }
  for (; d < n; ++d) part[0] = madd(a[d], b[d], part[0]);
  float s = 0.f;
  for (int c = 0; c < kLanes; ++c) s += part[c];
  return s;
}

void row_stats(const AttentionBwdParams& p, const SeqBlocks& s, int32_t b, int32_t h, RowStats& st,
               Scratch& scratch) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  float *o, *g;
  scratch.carve({{&o, size_t(D)}, {&g, size_t(D)}});
  float* di = st.di.data() + h * st.rows + st.row_base(p, b);
  float* lse2 = st.lse2.data() + h * st.rows + st.row_base(p, b);
  const float* lse = p.lse + b * p.lse_stride.batch + h * p.lse_stride.head + s.q_begin * p.lse_stride.seq;
  for (int32_t r = 0; r < s.len_q; ++r) {
    convert_row(dt, operand_row(p.out, dt, p.out_stride, b, s.q_begin + r, h), D, 1.f, o);
    convert_row(dt, operand_row(p.dout, dt, p.dout_stride, b, s.q_begin + r, h), D, 1.f, g);
    di[r] = dot(o, g, D);
    const float l = lse[r * p.lse_stride.seq];
    lse2[r] = l == -kInf ? kInf : l * kLog2e;
  }
}

// dK, dV of key block j of KV head hk (all q heads of its group).
void kv_tile(const AttentionBwdParams& p, const SeqBlocks& s, int32_t b, int32_t hk, int32_t j,
             const RowStats& stats, Scratch& scratch) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  const int Dp = pad_cols(D);
  const int bs = s.bs;
  const int64_t t0 = int64_t(j) * bs;
  const int N = s.keys(j);
  const int Wk = pad_cols(N);  // key columns of the score tiles
  const int G = p.group_size();
  const float c2 = p.scale * kLog2e;
  const bool causal = p.pattern.causal != 0;

  float *kt, *vt, *dk, *dv, *qb, *gb, *sc, *dp, *row;
  scratch.carve({{&kt, size_t(D) * Wk},
                 {&vt, size_t(D) * Wk},
                 {&dk, size_t(N) * Dp},
                 {&dv, size_t(N) * Dp},
                 {&qb, size_t(bs) * Dp},
                 {&gb, size_t(bs) * Dp},
                 {&sc, size_t(bs) * Wk},
                 {&dp, size_t(bs) * Wk},
                 {&row, size_t(D)}});

  const int64_t krow = s.k_begin + t0;
  load_tile_transposed(dt, operand_row(p.k, dt, p.k_stride, b, krow, hk), p.k_stride.seq, N, D, 1.f, kt, Wk,
                       Wk, row);
  load_tile_transposed(dt, operand_row(p.v, dt, p.v_stride, b, krow, hk), p.v_stride.seq, N, D, 1.f, vt, Wk,
                       Wk, row);
  std::fill(dk, dk + size_t(N) * Dp, 0.f);
  std::fill(dv, dv + size_t(N) * Dp, 0.f);

  for (int32_t h = hk * G; h < (hk + 1) * G; ++h) {
    const void* q = operand_row(p.q, dt, p.q_stride, b, s.q_begin, h);
    const void* g = operand_row(p.dout, dt, p.dout_stride, b, s.q_begin, h);
    BlockIterator it = col_blocks(p.pattern, h, j, s.q_end);
    for (int32_t i = first_block_from(it, std::max(0, s.q_first)); i < it.end(); i = it.next(i)) {
      const int r_lo = s.row_lo(i);
      const int M = s.row_hi(i) - r_lo;
      const int64_t pos0 = s.offset + r_lo;
      load_tile(dt, element_ptr(q, dt, r_lo * p.q_stride.seq), p.q_stride.seq, M, D, 1.f, qb, Dp);
      load_tile(dt, element_ptr(g, dt, r_lo * p.dout_stride.seq), p.dout_stride.seq, M, D, 1.f, gb, Dp);
      gemm<false, false>(M, Wk, D, qb, Dp, kt, Wk, sc, Wk);  // S = Q K^T
      gemm<false, false>(M, Wk, D, gb, Dp, vt, Wk, dp, Wk);  // dP = dO V^T
      const float* lse2 = stats.lse2_at(p, h, b, r_lo);
      const float* di = stats.di_at(p, h, b, r_lo);
      // Columns past the block's keys and, on the diagonal, keys after the row's position are hidden.
      const bool masked = N < Wk || (causal && t0 + N - 1 > pos0);
      for (int r = 0; r < M; ++r) {
        int vis = Wk;
        if (masked) {
          const int64_t last = causal ? std::min<int64_t>(N, pos0 + r - t0 + 1) : N;
          vis = static_cast<int>(std::max<int64_t>(0, last));
        }
        float* srow = sc + int64_t(r) * Wk;
        float* drow = dp + int64_t(r) * Wk;
        const float l2 = lse2[r], d = di[r];
        for (int c = 0; c < vis; ++c) {
          const float pr = fast_exp2(madd(srow[c], c2, -l2));
          srow[c] = pr;
          drow[c] = pr * (drow[c] - d);
        }
        for (int c = vis; c < Wk; ++c) srow[c] = drow[c] = 0.f;
      }
      gemm<true, true>(N, Dp, M, sc, Wk, gb, Dp, dv, Dp);  // dV += P^T dO
      gemm<true, true>(N, Dp, M, dp, Wk, qb, Dp, dk, Dp);  // dK += dS^T Q
    }
  }

  store_tile(dt, dk, Dp, N, D, p.scale, nullptr, operand_row(p.dk, dt, p.dk_stride, b, krow, hk),
             p.dk_stride.seq);
  store_tile(dt, dv, Dp, N, D, 1.f, nullptr, operand_row(p.dv, dt, p.dv_stride, b, krow, hk),
             p.dv_stride.seq);
}

// dQ of query block i of the nh q heads h0 .. h0 + nh - 1 (sharing the pattern), packed as in the forward:
// column g * M + r of the transposed tiles is row r of head h0 + g.
void q_tile(const AttentionBwdParams& p, const SeqBlocks& s, int32_t b, int32_t h0, int nh, int32_t i,
            const RowStats& stats, Scratch& scratch) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  const int Dp = pad_cols(D);
  const int bs = s.bs;
  const int r_lo = s.row_lo(i);
  const int M = s.row_hi(i) - r_lo;
  const int64_t row0 = s.q_begin + r_lo;
  auto dq_at = [&](int g) { return operand_row(p.dq, dt, p.dq_stride, b, row0, h0 + g); };
  if (i < 0) {  // rows before key position 0 see nothing
    for (int g = 0; g < nh; ++g) zero_rows(dt, dq_at(g), p.dq_stride.seq, M, D);
    return;
  }
  const int MG = nh * M;
  const int W = pad_cols(MG);  // query columns of the transposed tiles
  const int hk = h0 / p.group_size();
  const float c2 = p.scale * kLog2e;
  const bool causal = p.pattern.causal != 0;

  float *qt, *gt, *kb, *vb, *sc, *dp, *dq, *lse2, *di, *row;
  scratch.carve({{&qt, size_t(D) * W},
                 {&gt, size_t(D) * W},
                 {&kb, size_t(bs) * Dp},
                 {&vb, size_t(bs) * D},
                 {&sc, size_t(bs) * W},
                 {&dp, size_t(bs) * W},
                 {&dq, size_t(MG) * Dp},
                 {&lse2, size_t(W)},
                 {&di, size_t(W)},
                 {&row, size_t(D)}});

  for (int g = 0; g < nh; ++g) {
    const int32_t h = h0 + g;
    const int width = g + 1 < nh ? M : W - g * M;
    load_tile_transposed(dt, operand_row(p.q, dt, p.q_stride, b, row0, h), p.q_stride.seq, M, D, 1.f,
                         qt + g * M, W, width, row);
    load_tile_transposed(dt, operand_row(p.dout, dt, p.dout_stride, b, row0, h), p.dout_stride.seq, M, D, 1.f,
                         gt + g * M, W, width, row);
    std::copy_n(stats.lse2_at(p, h, b, r_lo), M, lse2 + g * M);
    std::copy_n(stats.di_at(p, h, b, r_lo), M, di + g * M);
  }
  std::fill(lse2 + MG, lse2 + W, kInf);  // padding columns get P = 0
  std::fill(di + MG, di + W, 0.f);
  std::fill(dq, dq + size_t(MG) * Dp, 0.f);

  const void* k = operand_row(p.k, dt, p.k_stride, b, s.k_begin, hk);
  const void* v = operand_row(p.v, dt, p.v_stride, b, s.k_begin, hk);
  const int64_t pos0 = s.offset + r_lo;

  BlockIterator it = row_blocks(p.pattern, h0, i, s.nk);
  for (int32_t j = it.first(); j < it.end(); j = it.next(j)) {
    const int64_t t0 = int64_t(j) * bs;
    const int N = s.keys(j);
    load_tile(dt, element_ptr(k, dt, t0 * p.k_stride.seq), p.k_stride.seq, N, D, 1.f, kb, Dp);
    load_tile(dt, element_ptr(v, dt, t0 * p.v_stride.seq), p.v_stride.seq, N, D, 1.f, vb, D);
    gemm<false, false>(N, W, D, kb, Dp, qt, W, sc, W);  // S^T = K Q^T
    gemm<false, false>(N, W, D, vb, D, gt, W, dp, W);   // dP^T = V dO^T
    const bool diagonal = causal && t0 + N - 1 > pos0;
    for (int r = 0; r < N; ++r) {
      const float* srow = sc + int64_t(r) * W;
      float* drow = dp + int64_t(r) * W;
      for (int c = 0; c < W; ++c) {
        const float pr = fast_exp2(madd(srow[c], c2, -lse2[c]));
        drow[c] = pr * (drow[c] - di[c]);
      }
      if (diagonal) {
        // On the diagonal, key t is hidden from the rows r with pos0 + r < t, in every packed head.
        const int hide = static_cast<int>(std::clamp<int64_t>(t0 + r - pos0, 0, M));
        for (int g = 0; g < nh; ++g) std::fill(drow + g * M, drow + g * M + hide, 0.f);
      }
    }
    gemm<true, true>(MG, Dp, N, dp, W, kb, Dp, dq, Dp);  // dQ += dS K, dS = (dS^T)^T
  }
  for (int g = 0; g < nh; ++g) {
    store_tile(dt, dq + int64_t(g) * M * Dp, Dp, M, D, p.scale, nullptr, dq_at(g), p.dq_stride.seq);
  }
}

}  // namespace

void backward(const AttentionBwdParams& p) {
  std::vector<SeqBlocks> seqs(p.batch);
  for (int32_t b = 0; b < p.batch; ++b) seqs[b] = seq_blocks(p, b);

  RowStats stats;
  stats.rows = p.cu_seqlens_q ? p.cu_seqlens_q[p.batch] : int64_t(p.batch) * p.seqlen_q;
  stats.di.resize(size_t(stats.rows) * p.num_heads);
  stats.lse2.resize(size_t(stats.rows) * p.num_heads);
  parallel_for(int64_t(p.batch) * p.num_heads, p.num_threads, [&](int64_t t) {
    Scratch& scratch = thread_scratch();
    const int32_t b = static_cast<int32_t>(t / p.num_heads);
    row_stats(p, seqs[b], b, static_cast<int32_t>(t % p.num_heads), stats, scratch);
  });

  // Both kinds of task in one list, longest first: they write disjoint outputs (dK/dV vs dQ).
  enum Kind : int32_t { kKeyBlock = 0, kQueryBlock = 1 };
  const int nh = heads_per_task(p);  // q heads per dQ task
  std::vector<BlockTask> tasks;
  const int G = p.group_size();
  for (int32_t b = 0; b < p.batch; ++b) {
    const SeqBlocks& s = seqs[b];
    for (int32_t hk = 0; hk < p.num_kv_heads; ++hk) {
      for (int32_t j = 0; j < s.nk; ++j) {
        int64_t rows = 0;  // query rows that see the block, over the group (upper bound: whole blocks)
        for (int32_t h = hk * G; h < (hk + 1) * G; ++h) {
          rows += count_blocks(col_blocks(p.pattern, h, j, s.q_end), std::max(0, s.q_first)) * s.bs;
        }
        tasks.push_back({b, hk, j, (4 * rows + 2) * s.keys(j), kKeyBlock});
      }
    }
    for (int32_t h = 0; h < p.num_heads; h += nh) {
      for (int32_t i = s.q_first; i < s.q_end; ++i) {
        const int64_t blocks = i < 0 ? 0 : count_blocks(row_blocks(p.pattern, h, i, s.nk), 0);
        tasks.push_back({b, h, i, (3 * blocks * s.bs + 2) * nh * (s.row_hi(i) - s.row_lo(i)), kQueryBlock});
      }
    }
  }
  order_longest_first(tasks);
  parallel_for(static_cast<int64_t>(tasks.size()), p.num_threads, [&](int64_t t) {
    Scratch& scratch = thread_scratch();
    const BlockTask& task = tasks[t];
    if (task.kind == kKeyBlock) {
      kv_tile(p, seqs[task.b], task.b, task.h, task.blk, stats, scratch);
    } else {
      q_tile(p, seqs[task.b], task.b, task.h, nh, task.blk, stats, scratch);
    }
  });
}

}  // namespace s2attn::cpu

// CPU forward: one task per (sequence, query block, q head or the q heads of a GQA group that share the
// pattern), an online softmax over the visible key blocks only, fp32 throughout. The tile is computed
// transposed, S^T = K (scale * log2(e) * Q)^T with keys as rows and queries as columns: the stationary Q
// tile is transposed once per task, each key block is read row-major, and the softmax reductions over keys
// run element-wise across rows (vectorized). Only a key block that crosses the causal diagonal is masked;
// a partial last key block just has fewer rows.
#include <limits>
#include <vector>

#include "cpu/block_schedule.h"
#include "cpu/cpu_backend.h"
#include "cpu/forward_tile.h"
#include "cpu/scratch.h"
#include "cpu/thread_pool.h"
#include "cpu/tile_io.h"
#include "cpu/tile_math.h"

namespace s2attn::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Query block i of the nh q heads h0 .. h0 + nh - 1 (one GQA group, or part of one, sharing the pattern):
// their rows are packed side by side as the columns of the transposed tiles (column g * M + r is row r of
// head h0 + g), so each key block is loaded and multiplied once for all of them.
void forward_tile(const AttentionParams& p, const SeqBlocks& s, int32_t b, int32_t h0, int nh, int32_t i,
                  Scratch& scratch) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  const int bs = s.bs;
  const int r_lo = s.row_lo(i);
  const int M = s.row_hi(i) - r_lo;
  const int64_t row0 = s.q_begin + r_lo;  // token index of the tile's first row
  const int hk = h0 / p.group_size();
  auto out_at = [&](int g) { return operand_row(p.out, dt, p.out_stride, b, row0, h0 + g); };
  auto lse_at = [&](int g) -> float* {  // null: the caller asked for no LSE
    return p.lse ? p.lse + b * p.lse_stride.batch + (h0 + g) * p.lse_stride.head + row0 * p.lse_stride.seq
                 : nullptr;
  };
  if (i < 0) {  // rows before key position 0 see nothing
    for (int g = 0; g < nh; ++g) {
      zero_rows(dt, out_at(g), p.out_stride.seq, M, D);
      if (float* lse = lse_at(g)) {
        for (int r = 0; r < M; ++r) lse[r * p.lse_stride.seq] = -kInf;
      }
    }
    return;
  }

  ForwardTileCpu tile(scratch, D, M, nh, bs);
  tile.load_q(dt, [&](int g) { return operand_row(p.q, dt, p.q_stride, b, row0, h0 + g); }, p.q_stride.seq,
              p.scale);
  const void* k = operand_row(p.k, dt, p.k_stride, b, s.k_begin, hk);
  const void* v = operand_row(p.v, dt, p.v_stride, b, s.k_begin, hk);
  const int64_t pos0 = s.offset + r_lo;  // absolute position of row 0
  const bool causal = p.pattern.causal != 0;

  BlockIterator it = row_blocks(p.pattern, h0, i, s.nk);
  for (int32_t j = it.first(), j_next; j < it.end(); j = j_next) {
    const int64_t t0 = int64_t(j) * bs;
    const int N = s.keys(j);
    load_tile(dt, element_ptr(k, dt, t0 * p.k_stride.seq), p.k_stride.seq, N, D, 1.f, tile.kb, D);
    load_tile(dt, element_ptr(v, dt, t0 * p.v_stride.seq), p.v_stride.seq, N, D, 1.f, tile.vb, tile.vb_ld());
    j_next = it.next(j);
    if (j_next < it.end()) {
      const int64_t t1 = int64_t(j_next) * bs;
      prefetch_tile(dt, element_ptr(k, dt, t1 * p.k_stride.seq), p.k_stride.seq, s.keys(j_next), D);
      prefetch_tile(dt, element_ptr(v, dt, t1 * p.v_stride.seq), p.v_stride.seq, s.keys(j_next), D);
    }
    tile.add_key_block(N, t0, pos0, causal);
  }
  tile.store(dt, out_at, p.out_stride.seq, lse_at, p.lse_stride.seq);
}

}  // namespace

void forward(const AttentionParams& p) {
  const int nh = heads_per_task(p);
  std::vector<SeqBlocks> seqs(p.batch);
  for (int32_t b = 0; b < p.batch; ++b) seqs[b] = seq_blocks(p, b);
  const std::vector<BlockTask> tasks = query_block_tasks(p.pattern, p.num_heads, nh, seqs);
  parallel_for(static_cast<int64_t>(tasks.size()), p.num_threads, [&](int64_t t) {
    Scratch& scratch = thread_scratch();
    const BlockTask& task = tasks[t];
    forward_tile(p, seqs[task.b], task.b, task.h, nh, task.blk, scratch);
  });
}

}  // namespace s2attn::cpu

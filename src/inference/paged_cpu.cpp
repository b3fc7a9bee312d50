// CPU paged attention: the CPU forward's query-block tile (cpu/forward_tile.h: its online softmax and store),
// with each visible key block gathered from the pages it spans through the block table. One task per
// (sequence, query block, q heads of a GQA group that share the pattern): the packed heads share each key
// block's gather and GEMMs. Only pages of visible key blocks are touched; their table entries are checked.
#include <algorithm>
#include <string>
#include <vector>

#include "cpu/block_schedule.h"
#include "cpu/forward_tile.h"
#include "cpu/scratch.h"
#include "cpu/thread_pool.h"
#include "cpu/tile_io.h"
#include "cpu/tile_math.h"
#include "inference/paged_cpu.h"
#include "s2attn/errors.h"

namespace s2attn::cpu {
namespace {

// Sequence b of a paged call as the CPU kernels' block geometry: keys are the context_lens[b] cached tokens.
SeqBlocks paged_seq_blocks(const PagedParams& p, int32_t b) {
  const int32_t len_q = p.len_q(b), len_k = p.context_lens[b];
  return make_seq_blocks(p.q_begin(b), 0, len_q, len_k, int64_t(len_k) - len_q, p.pattern.block_size);
}

// Rows [0, n) of key tokens t0 .. t0 + n - 1 of (sequence b, KV head hk) into kb (ld D) and vb (ld Dp),
// page run by page run.
void gather_keys(const PagedParams& p, int32_t b, int32_t hk, int64_t t0, int n, float* kb, float* vb, int Dp) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  for (int64_t t = t0; t < t0 + n;) {
    const int64_t page = t / p.page_size, off = t % p.page_size;
    const int run = static_cast<int>(std::min<int64_t>(p.page_size - off, t0 + n - t));
    const int32_t entry = p.page_entry(b, hk, page);
    if (entry < 0 || entry >= p.num_pages) {
      throw InvalidArgument("block_table", "entries in [0, num_pages = " + std::to_string(p.num_pages) +
                                               ") for the pages the pattern reads; sequence " + std::to_string(b) +
                                               (p.head_paged ? ", KV head " + std::to_string(hk) : std::string()) +
                                               ", page " + std::to_string(page) + " has " + std::to_string(entry));
    }
    const int64_t r = t - t0;
    const void* k = element_ptr(p.k_pages, dt, entry * p.k_page_stride + off * p.k_token_stride + hk * p.k_head_stride);
    const void* v = element_ptr(p.v_pages, dt, entry * p.v_page_stride + off * p.v_token_stride + hk * p.v_head_stride);
    load_tile(dt, k, p.k_token_stride, run, D, 1.f, kb + r * D, D);
    load_tile(dt, v, p.v_token_stride, run, D, 1.f, vb + r * Dp, Dp);
    t += run;
  }
}

// Query block i of sequence b for the nh q heads h0 .. h0 + nh - 1 (packed as the columns of the
// transposed tiles: column g * M + r is row r of head h0 + g).
void paged_tile(const PagedParams& p, const SeqBlocks& s, int32_t b, int32_t h0, int nh, int32_t i,
                Scratch& scratch) {
  const DType dt = p.dtype;
  const int D = p.head_dim;
  const int r_lo = s.row_lo(i);
  const int M = s.row_hi(i) - r_lo;
  const int64_t row0 = s.q_begin + r_lo;
  const int32_t hk = h0 / p.group_size();
  auto out_at = [&](int g) { return operand_row(p.out, dt, p.out_stride, b, row0, h0 + g); };
  auto lse_at = [&](int g) -> float* {  // null: the caller asked for no LSE
    return p.lse ? p.lse + b * p.lse_stride.batch + (h0 + g) * p.lse_stride.head + row0 * p.lse_stride.seq
                 : nullptr;
  };

  ForwardTileCpu tile(scratch, D, M, nh, s.bs);
  if (i >= 0) {  // rows before key position 0 see nothing
    tile.load_q(dt, [&](int g) { return operand_row(p.q, dt, p.q_stride, b, row0, h0 + g); }, p.q_stride.seq,
                p.scale);
    const int64_t pos0 = s.offset + r_lo;  // absolute position of row 0
    const bool causal = p.pattern.causal != 0;
    BlockIterator it = row_blocks(p.pattern, h0, i, s.nk);
    for (int32_t j = it.first(); j < it.end(); j = it.next(j)) {
      const int64_t t0 = int64_t(j) * s.bs;
      const int N = s.keys(j);
      gather_keys(p, b, hk, t0, N, tile.kb, tile.vb, tile.vb_ld());
      tile.add_key_block(N, t0, pos0, causal);
    }
  }
  tile.store(dt, out_at, p.out_stride.seq, lse_at, p.lse_stride.seq);
}

}  // namespace

void paged_forward(const PagedParams& p) {
  const int rows = std::max(1, std::min(p.q_len, p.pattern.block_size));
  const int nh = heads_per_task(p.pattern, p.num_heads, p.group_size(), rows);
  std::vector<SeqBlocks> seqs(p.batch);
  for (int32_t b = 0; b < p.batch; ++b) seqs[b] = paged_seq_blocks(p, b);
  const std::vector<BlockTask> tasks = query_block_tasks(p.pattern, p.num_heads, nh, seqs);
  parallel_for(static_cast<int64_t>(tasks.size()), p.num_threads, [&](int64_t t) {
    const BlockTask& task = tasks[t];
    paged_tile(p, seqs[task.b], task.b, task.h, nh, task.blk, thread_scratch());
  });
}

}  // namespace s2attn::cpu

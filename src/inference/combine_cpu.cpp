// CPU LSE combine: out = sum_p exp(lse_p - lse) out_p with lse = log(sum_p exp(lse_p)), in fp32 per row.
// Partitions whose LSE is -inf (they saw no key) contribute nothing, whatever their output holds.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/thread_pool.h"
#include "cpu/tile_io.h"
#include "inference/paged_cpu.h"

namespace s2attn::cpu {

void combine_partitions(const CombineParams& p) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const int64_t rows = int64_t(p.batch) * p.seqlen;
  parallel_for(rows, p.num_threads, [&](int64_t task) {
    const int32_t b = static_cast<int32_t>(task / p.seqlen), s = static_cast<int32_t>(task % p.seqlen);
    std::vector<float> acc(p.head_dim), part(p.head_dim);
    for (int32_t h = 0; h < p.num_heads; ++h) {
      auto lse_of = [&](int i) {
        const SeqStrides& ls = p.lse_strides[i];
        return p.lses[i][b * ls.batch + h * ls.head + s * ls.seq];
      };
      float mx = -kInf;
      for (int i = 0; i < p.num_partitions; ++i) {
        const float x = lse_of(i);
        if (x > mx) mx = x;  // NaN never wins
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      float total = 0.f;
      if (mx > -kInf) {
        for (int i = 0; i < p.num_partitions; ++i) {
          const float x = lse_of(i);
          if (!(x > -kInf)) continue;
          const float w = std::exp(x - mx);
          total += w;
          convert_row(p.dtype, operand_row(p.outs[i], p.dtype, p.out_strides[i], b, s, h), p.head_dim, 1.f,
                      part.data());
          for (int d = 0; d < p.head_dim; ++d) acc[d] += w * part[d];
        }
      }
      const bool seen = total > 0.f;
      store_row(p.dtype, acc.data(), p.head_dim, seen ? 1.f / total : 0.f,
                operand_row(p.out, p.dtype, p.out_stride, b, s, h));
      if (p.lse) p.lse[b * p.lse_stride.batch + h * p.lse_stride.head + s * p.lse_stride.seq] =
          seen ? mx + std::log(total) : -kInf;
    }
  });
}

}  // namespace s2attn::cpu

// KV-cache efficiency (DESIGN §1.3): the key blocks a KV head still needs for the queries to come, and the
// pages a cache keeps in the vLLM layout (a page holds every KV head) versus the head-paged layout.
// Analytic patterns answer from the column enumerator (which query blocks see key block j): a block is
// needed when that set meets the future query blocks. No dependence on the backend.
#include <algorithm>
#include <string>

#include "cpu/block_schedule.h"
#include "s2attn/paged.h"

namespace s2attn {
namespace {

constexpr int64_t kMaxContext = int64_t(1) << 30;

void check_lengths(int64_t context_len, int64_t max_context_len) {
  if (context_len < 0 || context_len > kMaxContext) {
    throw InvalidArgument("context_len", "in [0, 2^30], got " + std::to_string(context_len));
  }
  if (max_context_len < 0 || max_context_len > kMaxContext) {
    throw InvalidArgument("max_context_len", "in [0, 2^30] (0: unbounded), got " + std::to_string(max_context_len));
  }
}

// Per key block of [0, nk): whether a q head of KV head hk's group sees it from a query block in
// [i_first, i_end), with queries at positions >= context_len.
std::vector<uint8_t> needed_mask(const PatternRules& r, int hk, int64_t context_len, int64_t max_context_len) {
  const int32_t bs = r.block_size;
  const int32_t nk = static_cast<int32_t>((context_len + bs - 1) / bs);
  std::vector<uint8_t> need(static_cast<size_t>(nk), 0);
  if (max_context_len != 0 && max_context_len <= context_len) return need;  // no query to come
  const int32_t i_first = static_cast<int32_t>(context_len / bs);
  // one past the last future query block (unbounded: far past any block the rules distinguish)
  int32_t i_end = max_context_len ? static_cast<int32_t>((max_context_len - 1) / bs + 1)
                                  : static_cast<int32_t>(kMaxContext);
  if (r.use_mask) i_end = std::min(i_end, r.mask.rows);
  const int32_t G = r.num_heads / r.num_kv_heads;
  for (int32_t j = 0; j < nk; ++j) {
    for (int32_t h = hk * G; h < (hk + 1) * G && !need[j]; ++h) {
      BlockIterator it = col_blocks(r, h, j, i_end);
      need[j] = cpu::first_block_from(it, i_first) < it.end();
    }
  }
  return need;
}

// Pages of page_size tokens among the first context_len tokens that hold a token of a needed block.
std::vector<uint8_t> needed_pages(const std::vector<uint8_t>& blocks, int32_t bs, int64_t context_len,
                                  int64_t page_size) {
  const int64_t np = (context_len + page_size - 1) / page_size;
  std::vector<uint8_t> pages(static_cast<size_t>(np), 0);
  for (size_t j = 0; j < blocks.size(); ++j) {
    if (!blocks[j]) continue;
    const int64_t t0 = int64_t(j) * bs, t1 = std::min<int64_t>(t0 + bs, context_len);
    for (int64_t pg = t0 / page_size; pg <= (t1 - 1) / page_size; ++pg) pages[pg] = 1;
  }
  return pages;
}

}  // namespace

std::vector<int32_t> needed_key_blocks(const Pattern& pattern, int kv_head, int64_t context_len,
                                       int64_t max_context_len) {
  check_lengths(context_len, max_context_len);
  if (kv_head < 0 || kv_head >= pattern.num_kv_heads()) {
    throw InvalidArgument("kv_head", "in [0, " + std::to_string(pattern.num_kv_heads()) + "), got " +
                                         std::to_string(kv_head));
  }
  const std::vector<uint8_t> need = needed_mask(pattern.rules(), kv_head, context_len, max_context_len);
  std::vector<int32_t> out;
  for (size_t j = 0; j < need.size(); ++j) {
    if (need[j]) out.push_back(static_cast<int32_t>(j));
  }
  return out;
}

KVFootprint kv_cache_footprint(const Pattern& pattern, int64_t context_len, int64_t page_size, int64_t head_dim,
                               DType dtype, int64_t max_context_len) {
  check_lengths(context_len, max_context_len);
  if (page_size < 1 || page_size > (int64_t(1) << 20)) {
    throw InvalidArgument("page_size", "in [1, 2^20], got " + std::to_string(page_size));
  }
  if (head_dim < 1 || head_dim > 4096) {
    throw InvalidArgument("head_dim", "in [1, 4096], got " + std::to_string(head_dim));
  }
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16 && dtype != DType::f64 &&
      dtype != DType::u8) {
    throw InvalidArgument("dtype", std::string("a cache element type (float32, float16, bfloat16, float64, "
                                               "uint8 for fp8), got ") + dtype_name(dtype));
  }
  const PatternRules& r = pattern.rules();
  KVFootprint f;
  f.context_len = context_len;
  f.page_size = page_size;
  f.num_kv_heads = r.num_kv_heads;
  f.dense_pages = (context_len + page_size - 1) / page_size;
  std::vector<uint8_t> any(static_cast<size_t>(f.dense_pages), 0);
  for (int32_t hk = 0; hk < r.num_kv_heads; ++hk) {
    const std::vector<uint8_t> pages =
        needed_pages(needed_mask(r, hk, context_len, max_context_len), r.block_size, context_len, page_size);
    int64_t n = 0;
    for (size_t pg = 0; pg < pages.size(); ++pg) {
      n += pages[pg];
      any[pg] |= pages[pg];
    }
    f.pages_per_kv_head.push_back(n);
    f.head_paged_pages += n;
  }
  for (uint8_t a : any) f.vllm_pages += a;
  const int64_t token_head_bytes = 2 * head_dim * dtype_size(dtype);  // K and V of one token, one head
  f.dense_bytes = f.dense_pages * page_size * r.num_kv_heads * token_head_bytes;
  f.vllm_bytes = f.vllm_pages * page_size * r.num_kv_heads * token_head_bytes;
  f.head_paged_bytes = f.head_paged_pages * page_size * token_head_bytes;
  return f;
}

}  // namespace s2attn

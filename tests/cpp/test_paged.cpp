// The paged-KV C++ API on the CPU: decode and chunked prefill against the contiguous forward on the gathered
// cache, pages the pattern never reads, combine_partitions, the KV-footprint queries, and typed errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "expect_invalid.h"
#include "inference/split_ranges.h"
#include "s2attn/s2attn.h"

using namespace s2attn;

namespace {

using s2test::expect_invalid;

// A small paged cache: B sequences, pages shuffled, H q heads over Hkv KV heads.
struct Cache {
  int B = 3, H = 4, Hkv = 2, D = 32, page = 24, max_pages = 0, num_pages = 0, q_len = 2;
  std::vector<int32_t> ctx{70, 1, 150};
  std::vector<float> kp, vp, q, out, lse;
  std::vector<int32_t> table;
  std::mt19937 rng{7};

  Cache() {
    max_pages = (*std::max_element(ctx.begin(), ctx.end()) + page - 1) / page;
    num_pages = B * max_pages + 3;
    std::normal_distribution<float> n;
    kp.resize(size_t(num_pages) * page * Hkv * D);
    vp.resize(kp.size());
    for (auto& x : kp) x = n(rng);
    for (auto& x : vp) x = n(rng);
    q.resize(size_t(B) * q_len * H * D);
    for (auto& x : q) x = n(rng);
    out.assign(q.size(), NAN);
    lse.assign(size_t(B) * H * q_len, NAN);
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(size_t(B) * max_pages, -1);
    int next = 0;
    for (int b = 0; b < B; ++b) {
      for (int p = 0; p < (ctx[b] + page - 1) / page; ++p) table[b * max_pages + p] = perm[next++];
    }
  }
  PagedKV kv() {
    PagedKV c;
    c.k_pages = make_view(kp.data(), DType::f32, {num_pages, page, Hkv, D});
    c.v_pages = make_view(vp.data(), DType::f32, {num_pages, page, Hkv, D});
    c.block_table = make_view(table.data(), DType::i32, {B, max_pages});
    c.context_lens = make_view(ctx.data(), DType::i32, {B});
    return c;
  }
  TensorView Q() { return make_view(q.data(), DType::f32, {B, q_len, H, D}); }
  TensorView O() { return make_view(out.data(), DType::f32, {B, q_len, H, D}); }
  TensorView L() { return make_view(lse.data(), DType::f32, {B, H, q_len}); }

  // Sequence b's keys gathered contiguously: [1, ctx, Hkv, D].
  std::vector<float> gathered(const std::vector<float>& pages, int b) const {
    std::vector<float> g(size_t(ctx[b]) * Hkv * D);
    for (int t = 0; t < ctx[b]; ++t) {
      const int entry = table[b * max_pages + t / page];
      const float* src = pages.data() + (size_t(entry) * page + t % page) * Hkv * D;
      std::copy(src, src + Hkv * D, g.begin() + size_t(t) * Hkv * D);
    }
    return g;
  }
};

Pattern pattern(int H = 4, int Hkv = 2, int bs = 16) {
  LocalStrideParams a;
  a.num_heads = H;
  a.num_kv_heads = Hkv;
  a.block_size = bs;
  a.local_blocks = 2;
  a.vert_stride = 3;
  return Pattern::local_stride(a);
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.f;
  for (size_t i = 0; i < n; ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    m = std::max(m, std::fabs(a[i] - b[i]));
  }
  return m;
}

}  // namespace

S2_TEST(paged_matches_contiguous_forward) {
  Cache c;
  const Pattern p = pattern();
  paged_attention(p, c.Q(), c.kv(), c.O(), c.L());
  for (int b = 0; b < c.B; ++b) {
    std::vector<float> k = c.gathered(c.kp, b), v = c.gathered(c.vp, b);
    std::vector<float> out(size_t(c.q_len) * c.H * c.D), lse(size_t(c.H) * c.q_len);
    AttentionOptions o;
    o.q_offset = int64_t(c.ctx[b]) - c.q_len;  // the 1-token context: row 0 sits at -1 and sees nothing
    if (*o.q_offset < 0) o.q_offset = 0;
    float* qb = c.q.data() + size_t(b) * c.q_len * c.H * c.D;
    int rows = c.q_len, skip = 0;
    if (c.ctx[b] < c.q_len) {  // rows at negative positions: compare only the others
      skip = c.q_len - c.ctx[b];
      rows = c.ctx[b];
    }
    forward(p, make_view(qb + size_t(skip) * c.H * c.D, DType::f32, {1, rows, c.H, c.D}),
            make_view(k.data(), DType::f32, {1, c.ctx[b], c.Hkv, c.D}),
            make_view(v.data(), DType::f32, {1, c.ctx[b], c.Hkv, c.D}),
            make_view(out.data(), DType::f32, {1, rows, c.H, c.D}), make_view(lse.data(), DType::f32, {1, c.H, rows}),
            o);
    const float* po = c.out.data() + (size_t(b) * c.q_len + skip) * c.H * c.D;
    CHECK_MSG(max_abs_diff(po, out.data(), size_t(rows) * c.H * c.D) < 1e-5f, "out of sequence %d", b);
    for (int h = 0; h < c.H; ++h) {
      const float* pl = c.lse.data() + (size_t(b) * c.H + h) * c.q_len + skip;
      CHECK_MSG(max_abs_diff(pl, lse.data() + size_t(h) * rows, rows) < 1e-5f, "lse of sequence %d", b);
      for (int r = 0; r < skip; ++r) {
        CHECK(c.lse[(size_t(b) * c.H + h) * c.q_len + r] == -INFINITY);
        for (int d = 0; d < c.D; ++d) CHECK(c.out[((size_t(b) * c.q_len + r) * c.H + h) * c.D + d] == 0.f);
      }
    }
  }
}

S2_TEST(unread_pages_may_be_invalid_read_pages_may_not) {
  Cache d;  // three 200-token contexts in pages of 16, one page per key block
  d.ctx = {200, 200, 200};
  d.page = 16;
  d.max_pages = 13;
  d.num_pages = d.B * d.max_pages;
  d.kp.assign(size_t(d.num_pages) * d.page * d.Hkv * d.D, 0.1f);
  d.vp = d.kp;
  d.table.assign(size_t(d.B) * d.max_pages, 0);
  for (int b = 0; b < d.B; ++b) {
    for (int p = 0; p < d.max_pages; ++p) d.table[b * d.max_pages + p] = b * d.max_pages + p;
  }
  // block 16, local 2, stride 3: the last query (block 12) of KV head 0 reads blocks 11, 12 and j % 3 == 0;
  // KV head 1 (phase 1 * max(1, 3 / 4) = 1) reads j % 3 == 2. Block 1 (page 1) is read by neither.
  const Pattern p = pattern();
  for (int b = 0; b < d.B; ++b) d.table[b * d.max_pages + 1] = -1;
  d.q_len = 1;
  d.q.assign(size_t(d.B) * d.H * d.D, 0.3f);
  d.out.assign(d.q.size(), NAN);
  d.lse.assign(size_t(d.B) * d.H, NAN);
  paged_attention(p, d.Q(), d.kv(), d.O(), d.L());
  CHECK(std::all_of(d.out.begin(), d.out.end(), [](float x) { return std::fabs(x - 0.1f) < 1e-6f; }));
  d.table[2] = 9999;  // page 2 (block 2) is read by KV head 1
  expect_invalid("block_table", [&] { paged_attention(p, d.Q(), d.kv(), d.O(), d.L()); });
  d.table[2] = -5;
  expect_invalid("block_table", [&] { paged_attention(p, d.Q(), d.kv(), d.O(), d.L()); });
}

S2_TEST(combine_of_two_halves_is_the_whole) {
  // Attention over keys [0, 40) split as [0, 16) and [16, 40) via two dense calls on key slices.
  const int S = 40, H = 2, D = 16;
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> q(size_t(H) * D), k(size_t(S) * H * D), v(k.size());
  for (auto* vec : {&q, &k, &v}) {
    for (auto& x : *vec) x = n(rng);
  }
  const Pattern p = Pattern::dense(H, 16, false);
  auto run = [&](int k0, int k1, std::vector<float>& out, std::vector<float>& lse) {
    out.assign(size_t(H) * D, 0.f);
    lse.assign(H, 0.f);
    forward(p, make_view(q.data(), DType::f32, {1, 1, H, D}),
            make_view(k.data() + size_t(k0) * H * D, DType::f32, {1, k1 - k0, H, D}),
            make_view(v.data() + size_t(k0) * H * D, DType::f32, {1, k1 - k0, H, D}),
            make_view(out.data(), DType::f32, {1, 1, H, D}), make_view(lse.data(), DType::f32, {1, H, 1}));
  };
  std::vector<float> oa, la, ob, lb, ow, lw;
  run(0, 16, oa, la);
  run(16, S, ob, lb);
  run(0, S, ow, lw);
  std::vector<float> out(size_t(H) * D, NAN), lse(H, NAN);
  combine_partitions({make_view(oa.data(), DType::f32, {1, 1, H, D}), make_view(ob.data(), DType::f32, {1, 1, H, D})},
                     {make_view(la.data(), DType::f32, {1, H, 1}), make_view(lb.data(), DType::f32, {1, H, 1})},
                     make_view(out.data(), DType::f32, {1, 1, H, D}), make_view(lse.data(), DType::f32, {1, H, 1}));
  CHECK(max_abs_diff(out.data(), ow.data(), out.size()) < 1e-5f);
  CHECK(max_abs_diff(lse.data(), lw.data(), lse.size()) < 1e-5f);
  // every partition empty: 0 and -inf
  std::vector<float> ninf(H, -INFINITY), junk(size_t(H) * D, NAN);
  combine_partitions({make_view(junk.data(), DType::f32, {1, 1, H, D})}, {make_view(ninf.data(), DType::f32, {1, H, 1})},
                     make_view(out.data(), DType::f32, {1, 1, H, D}), make_view(lse.data(), DType::f32, {1, H, 1}));
  CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 0.f; }));
  CHECK(std::all_of(lse.begin(), lse.end(), [](float x) { return x == -INFINITY; }));
  expect_invalid("lses", [&] {
    combine_partitions({make_view(oa.data(), DType::f32, {1, 1, H, D})}, {},
                       make_view(out.data(), DType::f32, {1, 1, H, D}), TensorView{});
  });
  expect_invalid("outs", [&] {
    combine_partitions({make_view(oa.data(), DType::f32, {1, 1, 1, D})}, {make_view(la.data(), DType::f32, {1, H, 1})},
                       make_view(out.data(), DType::f32, {1, 1, H, D}), TensorView{});
  });
  expect_invalid("outs", [&] { combine_partitions({}, {}, make_view(out.data(), DType::f32, {1, 1, H, D}), TensorView{}); });
}

S2_TEST(needed_blocks_and_footprint) {
  const Pattern p = pattern(4, 2, 16);  // local 2, stride 3; KV head 0 phase 0, KV head 1 phase 1
  // context 200 tokens = 13 blocks (last partial); future queries start in block 12
  const std::vector<int32_t> h0 = needed_key_blocks(p, 0, 200);
  const std::vector<int32_t> want0{0, 3, 6, 9, 11, 12};
  CHECK(h0 == want0);
  const std::vector<int32_t> h1 = needed_key_blocks(p, 1, 200);
  const std::vector<int32_t> want1{2, 5, 8, 11, 12};
  CHECK(h1 == want1);
  // a bounded horizon inside block 12: block 11 is still in the local window of block 12
  CHECK(needed_key_blocks(p, 0, 200, 201) == want0);
  CHECK(needed_key_blocks(p, 0, 200, 200).empty());
  const KVFootprint f = kv_cache_footprint(p, 200, 16, 64, DType::bf16);
  CHECK(f.dense_pages == 13);
  CHECK(f.pages_per_kv_head.size() == 2 && f.pages_per_kv_head[0] == 6 && f.pages_per_kv_head[1] == 5);
  CHECK(f.head_paged_pages == 11);
  CHECK(f.vllm_pages == 9);  // union: 0 2 3 5 6 8 9 11 12
  CHECK(f.dense_bytes == 13 * 16 * 2 * 2 * 64 * 2);
  CHECK(f.head_paged_bytes == 11 * 16 * 2 * 64 * 2);
  expect_invalid("kv_head", [&] { needed_key_blocks(p, 2, 10); });
  expect_invalid("context_len", [&] { needed_key_blocks(p, 0, -1); });
  expect_invalid("page_size", [&] { kv_cache_footprint(p, 10, 0); });
}

S2_TEST(typed_errors_name_the_argument) {
  Cache c;
  const Pattern p = pattern();
  PagedKV kv = c.kv();
  expect_invalid("pattern", [&] { paged_attention(pattern(8, 2), c.Q(), c.kv(), c.O(), c.L()); });
  kv = c.kv();
  kv.block_table.dtype = DType::i64;
  try {
    paged_attention(p, c.Q(), kv, c.O(), c.L());
    CHECK(false);
  } catch (const DTypeMismatch& e) {
    CHECK(e.argument() == "block_table");
  }
  kv = c.kv();
  kv.k_pages.shape[3] = 16;
  expect_invalid("k_pages", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L()); });
  kv = c.kv();
  kv.v_pages.shape[1] = 8;
  expect_invalid("v_pages", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L()); });
  kv = c.kv();
  kv.context_lens.shape[0] = 2;
  expect_invalid("context_lens", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L()); });
  kv = c.kv();
  c.ctx[1] = c.max_pages * c.page + 1;
  expect_invalid("context_lens", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L()); });
  c.ctx[1] = -1;
  expect_invalid("context_lens", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L()); });
  c.ctx[1] = 1;
  expect_invalid("out", [&] { paged_attention(p, c.Q(), kv, TensorView{}, c.L()); });
  expect_invalid("lse", [&] {
    paged_attention(p, c.Q(), kv, c.O(), make_view(c.lse.data(), DType::f32, {c.B, c.q_len, c.H}));
  });
  PagedOptions o;
  o.num_splits = -1;
  expect_invalid("num_splits", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L(), o); });
  o = PagedOptions{};
  o.backend = Backend::cuda_sm80;
  expect_invalid("backend", [&] { paged_attention(p, c.Q(), kv, c.O(), c.L(), o); });
  // the CPU needs no workspace and no split
  CHECK(paged_workspace_size(p, c.Q(), kv) == 0);
  CHECK(paged_num_splits(p, c.Q(), kv) == 1);
}

// The split-KV key ranges of the CUDA decode (computed on the host here): for every split count they
// partition [0, nk) into consecutive ranges, and each holds at most ceil(counted / splits) + 1 +
// kMaxSegments of the row's visible blocks (counted: the segments' members, overlaps counted twice).
S2_TEST(split_ranges_partition_the_keys_and_balance_the_visible_blocks) {
  std::mt19937 rng(7);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 300; ++trial) {
    LocalStrideParams a;
    a.num_heads = 4;
    a.block_size = 64;
    a.local_blocks = pick(1, 20);
    a.vert_stride = pick(1, 32);
    a.num_kv_heads = 2;
    a.num_dense_heads = pick(0, 4) == 0 ? 1 : 0;
    Pattern p = Pattern::local_stride(a);
    if (pick(0, 2) == 0) p.with_sink(pick(1, 3));
    if (pick(0, 3) == 0) {
      RangeRule r;
      r.begin = pick(0, 50);
      r.end = r.begin + pick(1, 100);
      r.stride = pick(1, 4);
      p.with_range(r);
    }
    const PatternRules& rules = p.rules();
    const int32_t nk = pick(1, 3000), i = nk - 1, h = pick(0, 3), splits = pick(1, 64);
    std::vector<int32_t> visible;  // the row's visible blocks, from the enumerator
    const SegmentList segs = row_segments(rules, h, i, nk);
    for (int32_t j = segs.first(); j < segs.end; j = segs.next(j)) visible.push_back(j);
    const int64_t counted = segments_count_below(segs, nk);  // what the boundaries divide
    CHECK(counted >= static_cast<int64_t>(visible.size()));
    int32_t prev_hi = 0;
    for (int32_t s = 0; s < splits; ++s) {
      int32_t lo = -1, hi = -1;
      balanced_split_range(rules, h, i, nk, s, splits, &lo, &hi);
      CHECK(lo == prev_hi);
      CHECK(lo <= hi);
      prev_hi = hi;
      const int64_t in = std::count_if(visible.begin(), visible.end(), [&](int32_t j) { return j >= lo && j < hi; });
      CHECK(in <= (counted + splits - 1) / splits + 1 + kMaxSegments);
    }
    CHECK(prev_hi == nk);
  }
}

S2_TEST_MAIN()

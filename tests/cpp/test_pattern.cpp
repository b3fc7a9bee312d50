// The enumerators (row and column, analytic and mask) agree with attends() on random patterns; the
// constructors validate their arguments.
#include <random>
#include <set>

#include "check.h"
#include "s2attn/pattern.h"

using namespace s2attn;

namespace {

Pattern random_pattern(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int kv_choices[] = {1, 2, 4};
  const int kv = kv_choices[pick(0, 2)];
  LocalStrideParams a;
  a.num_kv_heads = kv;
  a.num_heads = kv * pick(1, 3);
  a.block_size = 16 << pick(0, 3);
  a.causal = pick(0, 1) == 1;
  a.local_blocks = pick(1, 5);
  if (!a.causal && pick(0, 1)) a.local_right = pick(1, 4);
  a.vert_stride = pick(1, 9);
  a.homo_head = pick(0, 4) == 0;
  if (pick(0, 1)) a.head_sliding_step = pick(0, 3);
  a.head_sliding_offset = pick(-3, 5);
  a.per_q_head = pick(0, 2) == 0;
  if (!a.homo_head) a.num_dense_heads = pick(0, 1);
  if (pick(0, 1)) a.vert_position = pick(0, 1) ? VertPosition::relative : VertPosition::absolute;
  Pattern p = Pattern::local_stride(a);
  if (pick(0, 2) == 0) p.with_sink(pick(0, 3));
  if (pick(0, 3) == 0) p.with_dense_prefix(pick(0, 4));
  for (int r = pick(0, 2); r > 0; --r) {
    RangeRule rr;
    rr.begin = pick(0, 8);
    rr.end = rr.begin + pick(0, 12);
    rr.stride = pick(1, 4);
    rr.relative = pick(0, 1);
    p.with_range(rr);
  }
  return p;
}

void check_enumerators(const Pattern& p, int nq, int nk, const char* what) {
  const PatternRules& r = p.rules();
  for (int h = 0; h < r.num_heads; ++h) {
    for (int i = 0; i < nq; ++i) {
      std::set<int> want;
      for (int j = 0; j < nk; ++j)
        if (attends(r, h, i, j)) want.insert(j);
      std::set<int> got;
      BlockIterator it = row_blocks(r, h, i, nk);
      int prev = -1;
      for (int j = it.first(); j < it.end(); j = it.next(j)) {
        CHECK_MSG(j > prev, "%s: row enumeration not ascending", what);
        prev = j;
        got.insert(j);
      }
      CHECK_MSG(got == want, "%s: row h=%d i=%d: %zu enumerated vs %zu visible", what, h, i, got.size(),
                want.size());
    }
    for (int j = 0; j < nk; ++j) {
      std::set<int> want;
      for (int i = 0; i < nq; ++i)
        if (attends(r, h, i, j)) want.insert(i);
      std::set<int> got;
      BlockIterator it = col_blocks(r, h, j, nq);
      for (int i = it.first(); i < it.end(); i = it.next(i)) got.insert(i);
      CHECK_MSG(got == want, "%s: col h=%d j=%d: %zu enumerated vs %zu visible", what, h, j, got.size(),
                want.size());
    }
  }
}

}  // namespace

S2_TEST(enumerators_match_attends_for_random_rules) {
  std::mt19937 rng(1234);
  for (int t = 0; t < 300; ++t) {
    const Pattern p = random_pattern(rng);
    check_enumerators(p, 23, 23, "rules");
    if (!p.causal()) check_enumerators(p, 17, 29, "rules, nk > nq");
  }
}

S2_TEST(enumerators_match_attends_for_masks) {
  std::mt19937 rng(99);
  for (int t = 0; t < 50; ++t) {
    const int heads_choice = t % 3;
    const int H = 4, Hkv = 2;
    const int mh = heads_choice == 0 ? 1 : heads_choice == 1 ? Hkv : H;
    const int rows = 11, cols = 13;
    std::vector<uint8_t> bits(size_t(mh) * rows * cols);
    for (auto& b : bits) b = (rng() % 3 == 0);
    const bool causal = t % 2 == 0;
    const Pattern p = Pattern::from_block_mask(bits.data(), mh, rows, cols, H, 32, causal, Hkv);
    check_enumerators(p, rows, cols, "mask");
    check_enumerators(p, rows - 4, cols - 3, "mask, truncated");
    // the mask itself, AND causality
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) {
          const int m = mh == 1 ? 0 : mh == H ? h : h / (H / Hkv);
          const bool want = bits[(size_t(m) * rows + i) * cols + j] && !(causal && j > i);
          CHECK(p.attends(h, i, j) == want);
        }
  }
}

S2_TEST(mask_list_attends_and_views) {
  // The list-only attends (what CUDA code asks of a device view, which has no bits) agrees with attends;
  // the CPU view is the host lists; prepare on the CPU and views of analytic patterns are no-ops.
  std::mt19937 rng(11);
  const int H = 4, Hkv = 2, rows = 13, cols = 11;
  for (int mh : {1, Hkv, H}) {
    std::vector<uint8_t> bits(size_t(mh) * rows * cols);
    for (auto& b : bits) b = (rng() % 3 == 0);
    for (bool causal : {true, false}) {
      const Pattern p = Pattern::from_block_mask(bits.data(), mh, rows, cols, H, 16, causal, Hkv);
      p.prepare(Device{DeviceType::cpu, 0});
      const BlockMaskView v = p.mask_view(Device{DeviceType::cpu, 0});
      CHECK(v.row_ptr == p.mask()->row_ptr().data() && v.bits == p.mask()->bits().data());
      PatternRules lists = p.rules();
      lists.mask.bits = nullptr;  // as on the device
      for (int h = 0; h < H; ++h)
        for (int i = -1; i <= rows; ++i)
          for (int j = -1; j <= cols; ++j) CHECK(mask_list_attends(lists, h, i, j) == p.attends(h, i, j));
    }
  }
  LocalStrideParams a;
  const Pattern ls = Pattern::local_stride(a);
  ls.prepare(Device{DeviceType::cuda, 0});  // analytic: nothing to copy, on any device
  CHECK(ls.mask_view(Device{DeviceType::cuda, 0}).row_ptr == nullptr);
  const int32_t list[] = {1, 4, 4, 9};
  CHECK(sorted_lower_bound(list, 4, 0) == 0 && sorted_lower_bound(list, 4, 4) == 1 &&
        sorted_lower_bound(list, 4, 5) == 3 && sorted_lower_bound(list, 4, 10) == 4 &&
        sorted_lower_bound(list, 0, 3) == 0);
}

S2_TEST(dkernel_local_stride_definition) {
  // H=4, V=4, L=2, causal: step = max(1, 4/4) = 1; head h sees j with (j + h) % 4 == 0 below its window.
  LocalStrideParams a;
  a.num_heads = 4;
  a.local_blocks = 2;
  a.vert_stride = 4;
  const Pattern p = Pattern::local_stride(a);
  for (int h = 0; h < 4; ++h)
    for (int i = 0; i < 20; ++i)
      for (int j = 0; j < 20; ++j) {
        const bool want = j <= i && (i - j < 2 || (j + h) % 4 == 0);
        CHECK(p.attends(h, i, j) == want);
      }
  // GQA 8:2 with 1 dense KV head: q heads 4..7 are dense.
  a.num_heads = 8;
  a.num_kv_heads = 2;
  a.num_dense_heads = 1;
  const Pattern g = Pattern::local_stride(a);
  CHECK(g.attends(5, 10, 3) && g.attends(7, 10, 1));
  CHECK(!g.attends(5, 10, 11));
  // q heads 0..3 share KV head 0's pattern: (j + 0*step) % 4 == 0, step = max(1, 4/8) = 1
  for (int h = 0; h < 4; ++h) CHECK(g.attends(h, 10, 4) && !g.attends(h, 10, 5));
}

S2_TEST(density_of_dense_is_one_and_local_stride_below) {
  const Pattern d = Pattern::dense(4, 64, true);
  CHECK(d.density(1000, 1000) == 1.0);
  LocalStrideParams a;
  a.num_heads = 8;
  a.local_blocks = 16;
  a.vert_stride = 8;
  const Pattern p = Pattern::local_stride(a);
  const double dens = p.density(8192, 8192);
  CHECK_MSG(dens > 0.2 && dens < 0.35, "density %f", dens);
}

S2_TEST(constructors_reject_bad_arguments) {
  LocalStrideParams a;
  a.num_heads = 4;
  auto with = [&](auto mutate) {
    LocalStrideParams b = a;
    mutate(b);
    return b;
  };
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) { b.block_size = 48; })));
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) { b.local_blocks = 0; })));
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) { b.vert_stride = 0; })));
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) { b.num_kv_heads = 3; })));
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) { b.num_dense_heads = 5; })));
  CHECK_THROWS(InvalidArgument, Pattern::local_stride(with([](auto& b) {
                 b.homo_head = true;
                 b.num_dense_heads = 1;
               })));
  try {
    Pattern::local_stride(with([](auto& b) { b.vert_stride = -2; }));
    CHECK(false);
  } catch (const InvalidArgument& e) {
    CHECK(e.argument() == "vert_stride");
  }
  std::vector<uint8_t> bits(2 * 3 * 3, 1);
  CHECK_THROWS(InvalidArgument, Pattern::from_block_mask(bits.data(), 3, 2, 3, 4));  // heads 3 of 4
  CHECK_THROWS(InvalidArgument, Pattern::from_block_mask(bits.data(), 1, 0, 3, 4));
  Pattern p = Pattern::local_stride(a);
  RangeRule bad;
  bad.stride = 0;
  CHECK_THROWS(InvalidArgument, p.with_range(bad));
  CHECK_THROWS(InvalidArgument, p.with_sink(-1));
  CHECK_THROWS(InvalidArgument, p.with_dense_heads({7}));
  Pattern m = Pattern::from_block_mask(bits.data(), 1, 2, 3, 4);
  CHECK_THROWS(InvalidArgument, m.with_sink(1));
}

S2_TEST_MAIN()

// The portable backward KV kernel's CTA order (src/cuda/common/kv_tile_order.h, host-compiled here): every
// (KV head, key tile) exactly once, and under an absolute vertical rule every vertical tile before the rest.
#include <cstdint>
#include <random>
#include <vector>

#include "check.h"
#include "cuda/common/kv_tile_order.h"
#include "s2attn/pattern.h"

using namespace s2attn;
using s2attn::cuda::kv_tile_of;
using s2attn::cuda::kv_tile_order;
using s2attn::cuda::KvTileOrder;

namespace {

constexpr int kTileKeys = 64;  // the KV kernels' key tile (bwd_key_tile_sm80)

// Whether key tile x of KV head hk holds a vertical key block of the pattern's absolute rule.
bool vertical_tile(const PatternRules& r, int hk, int x) {
  const int bs = r.block_size;
  const int first = x * kTileKeys / bs, last = ((x + 1) * kTileKeys - 1) / bs;
  for (int j = first; j <= last; ++j) {
    if (pmod(j + vertical_phase(r, hk), r.vert_stride) == 0) return true;
  }
  return false;
}

void check_order(const Pattern& p, int key_tiles, const char* what) {
  const PatternRules& r = p.rules();
  const KvTileOrder o = kv_tile_order(r, key_tiles, kTileKeys);
  const int heads = r.num_kv_heads;
  CHECK_MSG(o.per_head >= key_tiles, "%s: %d CTAs a head for %d tiles", what, o.per_head, key_tiles);
  CHECK_MSG(o.per_head <= key_tiles + 2 * o.tiles_per, "%s: %d CTAs a head for %d tiles: too many without work",
            what, o.per_head, key_tiles);
  std::vector<int> seen(static_cast<size_t>(heads) * key_tiles, 0);
  bool rest_started = false, order_ok = true;
  for (int u = 0; u < heads * o.per_head; ++u) {
    int hk = -1, x = -2;
    kv_tile_of(r, o, u, &hk, &x);
    CHECK_MSG(hk >= 0 && hk < heads, "%s: CTA %d: KV head %d", what, u, hk);
    if (hk < 0 || hk >= heads) return;
    if (x < 0) continue;
    CHECK_MSG(x < key_tiles, "%s: CTA %d: tile %d of %d", what, u, x, key_tiles);
    if (x >= key_tiles) return;
    ++seen[static_cast<size_t>(hk) * key_tiles + x];
    if (o.stride > 0) {
      const bool vert = vertical_tile(r, hk, x);
      if (!vert) rest_started = true;
      if (vert && rest_started) order_ok = false;
    }
  }
  int missing = 0, twice = 0;
  for (int n : seen) {
    missing += n == 0;
    twice += n > 1;
  }
  CHECK_MSG(missing == 0 && twice == 0, "%s: %d tiles missing, %d taken twice", what, missing, twice);
  CHECK_MSG(order_ok, "%s: a vertical tile after the first other one", what);
}

}  // namespace

S2_TEST(s2_patterns_take_vertical_tiles_first) {
  for (int bs : {16, 32, 64, 128}) {
    for (int V : {2, 3, 4, 8, 16, 32}) {
      for (int tiles : {1, 2, 7, 64, 129}) {
        LocalStrideParams lp;
        lp.num_heads = 8;
        lp.block_size = bs;
        lp.local_blocks = 4;
        lp.vert_stride = V;
        lp.num_kv_heads = 4;
        const Pattern p = Pattern::local_stride(lp);
        char what[96];
        std::snprintf(what, sizeof what, "bs %d V %d tiles %d", bs, V, tiles);
        check_order(p, tiles, what);
        const KvTileOrder o = kv_tile_order(p.rules(), tiles, kTileKeys);
        // the reorder applies where the vertical tiles form a progression of stride >= 2 in tiles
        const bool expect = bs >= kTileKeys ? V >= 2 : V % (kTileKeys / bs) == 0 && V / (kTileKeys / bs) >= 2;
        CHECK_MSG((o.stride > 0) == expect, "%s: stride %d", what, o.stride);
      }
    }
  }
}

S2_TEST(other_patterns_keep_the_grid_order) {
  LocalStrideParams lp;
  lp.num_heads = 4;
  lp.vert_stride = 8;
  lp.causal = false;  // relative vertical position by default when bidirectional
  lp.local_right = 2;
  const Pattern rel = Pattern::local_stride(lp);
  lp.causal = true;
  lp.local_right.reset();
  lp.vert_stride = 1;
  const Pattern stride1 = Pattern::local_stride(lp);
  const Pattern dense = Pattern::dense(4);
  for (const Pattern* p : {&rel, &stride1, &dense}) {
    const KvTileOrder o = kv_tile_order(p->rules(), 37, kTileKeys);
    CHECK(o.stride == 0 && o.per_head == 37);
    check_order(*p, 37, "grid order");
    int hk = -1, x = -1;
    kv_tile_of(p->rules(), o, 37 + 5, &hk, &x);
    CHECK(hk == 1 && x == 5);
  }
}

S2_TEST(random_phases_and_gqa) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    LocalStrideParams lp;
    const int kv = pick(1, 6);
    lp.num_kv_heads = kv;
    lp.num_heads = kv * pick(1, 3);
    lp.block_size = 16 << pick(0, 3);
    lp.local_blocks = pick(1, 8);
    lp.vert_stride = pick(2, 40);
    lp.head_sliding_step = pick(0, 9);
    lp.head_sliding_offset = pick(0, 50);
    lp.homo_head = pick(0, 3) == 0;
    const Pattern p = Pattern::local_stride(lp);
    check_order(p, pick(1, 300), "random");
  }
}

int main() { return s2test::run_all(); }

#!/usr/bin/env python3
"""How often the fused-dQ KV kernel's reductions find their accumulator tile still in L2, in a model (CPU, no
GPU). Dense causal attention: the KV kernel's pass 2 units (a 128-key tile of one KV head) in the scheduler's
order, KV heads side by side or in groups of `--group` (tools/pending/bwd-head-group.patch), taken greedily by
`--ctas` persistent CTAs. Each unit walks its query steps (64 rows) from the last one down to the diagonal, one
step per tick, and each step adds into the (head, 64-row tile) accumulator: 2 x 16 KiB. L2 is an LRU cache of
`--l2-mib` MiB of these tiles (only the accumulator's share of L2: K, V, Q and dO are left out). Prints, per
shape and group, the fraction of steps whose tile missed: each miss costs a 32 KiB read and, later, a 32 KiB
write-back to DRAM.

    python3 tools/dq_accum_l2_model.py [--S 32768,131072] [--H 32] [--groups 32,8,4] [--scale 4]

--scale k models H / k heads on ctas / k CTAs with l2 / k MiB (the same per-head picture, k times fewer steps:
the 128k case at full scale is ~34 M steps).
"""
import argparse
from collections import OrderedDict


def unit_order(tiles, heads, group):
    """Pass 2's units (tile, head) in the scheduler's order: groups of `group` heads one after the other; in a
    group, tiles ascending, heads side by side (backward_scheduler_sm90.cuh, pass2_unit)."""
    order = []
    for g0 in range(0, heads, group):
        in_group = min(group, heads - g0)
        for x in range(tiles):
            for h in range(g0, g0 + in_group):
                order.append((x, h))
    return order


def miss_rate(S, heads, ctas, l2_tiles, group):
    tiles = S // 128  # 128-key units
    nq = S // 64      # 64-row query steps
    order = unit_order(tiles, heads, group)
    nxt = 0
    walks = []  # per CTA: [head, current query step, last step]
    for _ in range(min(ctas, len(order))):
        x, h = order[nxt]
        nxt += 1
        walks.append([h, nq - 1, 2 * x])  # descending from the last step to the diagonal (rows 128 x on)
    cache = OrderedDict()
    steps = misses = 0
    while walks:
        alive = []
        for w in walks:
            key = (w[0], w[1])
            steps += 1
            if key in cache:
                cache.move_to_end(key)
            else:
                misses += 1
                cache[key] = True
                if len(cache) > l2_tiles:
                    cache.popitem(last=False)
            w[1] -= 1
            if w[1] < w[2]:  # unit done: the next one
                if nxt < len(order):
                    x, h = order[nxt]
                    nxt += 1
                    alive.append([h, nq - 1, 2 * x])
            else:
                alive.append(w)
        walks = alive
    return steps, misses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--S", default="32768,131072")
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--ctas", type=int, default=132)
    ap.add_argument("--l2-mib", type=float, default=40.0, help="L2 left to the accumulator (H100: 50 MiB in all)")
    ap.add_argument("--groups", default="32,8,4", help="KV heads per group at full scale (modelled as group / scale)")
    ap.add_argument("--scale", type=int, default=4)
    a = ap.parse_args()
    heads = a.H // a.scale
    ctas = a.ctas // a.scale
    l2_tiles = int(a.l2_mib * 1024 / 32 / a.scale)
    print(f"model: {heads} heads, {ctas} CTAs, L2 of {l2_tiles} accumulator tiles of 32 KiB (scale 1/{a.scale})")
    for S in (int(s) for s in a.S.split(",")):
        for g in (int(x) for x in a.groups.split(",")):
            g_model = max(1, min(heads, g // a.scale))
            steps, misses = miss_rate(S, heads, ctas, l2_tiles, g_model)
            print(f"S={S:6d} group {g:2d} (model {g_model:2d} of {heads}): {steps} steps, "
                  f"{misses / steps:.3f} miss, DRAM {2 * 32 * misses / steps:.1f} KiB a step")


if __name__ == "__main__":
    main()

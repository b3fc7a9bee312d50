"""Model of the Hopper KV kernel's memory traffic under its unit order, without a GPU: which Q / dO tiles, K / V
tiles and (fused dQ) fp32 dQ accumulator tiles the CTAs touch, step by step, through an LRU cache the size of
the L2, and what that sends to DRAM. For choosing a unit order (backward_scheduler_sm90.cuh) before device
time is spent on it.

    .venv/bin/python tools/kv_schedule_l2_model.py [--S 32768] [--V 32] [--groups 0,4,1] [--l2-mb 40] [--fold]

--V 1: the dense pattern (no vertical pass). --fold: pass 1 also in folded units (docs/hopper_notes.md,
session 20).

The model: B = 1, H = Hkv = 32, block 64, local 16 blocks, causal (DESIGN.md's shapes); 132 CTAs that each
take the next unit in the scheduler's order when they finish one (greedy list scheduling, as the kernel's
counter does), one 64-row query step per tick each. A step reads Q and dO of its (head, query block), 32 KB;
fused dQ adds a read-modify-write of that (head, query block)'s 64 x 128 fp32 accumulator tile, 32 KB, whose
eviction writes it back. A unit reads its K and V once, 64 KB. Units: pass 1, the vertical key blocks of each
head in pairs, head-major, longest first; pass 2, the other blocks in pairs, ascending, in groups of `group`
KV heads side by side (0: all heads, main's order). Steps: the query blocks that see either block of the
unit, descending. Only the order of accesses is modelled (no timing, no sectors, no L2 partitions), so the
numbers rank orders rather than predict bytes; session 20's ncu at 32k V32 measured 3.6 GB (ordered) and 10.6
GB (fused) of DRAM traffic for the KV kernel.
"""
import argparse
import collections
import heapq

import numpy as np

import s2attn


def units_of(mask, V, group, fold=False):
    """The scheduler's units: (head, [key blocks]) in order (pass 1, then pass 2 in head groups). fold: pass 1's
    units of a head as pairs (m, last - m), the first walked down, the second up (head, [blocks], [blocks])."""
    H, nq, nk = mask.shape
    if V <= 1:  # dense: no vertical pass; every 128-key tile (two adjacent blocks), in head groups
        g = group if 0 < group < H else H
        return [(h, [j, j + 1][:nk - j]) for g0 in range(0, H, g) for j in range(0, nk, 2)
                for h in range(g0, min(g0 + g, H))]
    vertical = {}
    for h in range(H):
        # a head's vertical blocks: the ones every later query block sees (column full below the window)
        cols = [j for j in range(nk) if j + 16 < nq and mask[h, j + 16:, j].all()]
        vertical[h] = cols
    p1 = [(h, vertical[h][i:i + 2]) for h in range(H) for i in range(0, len(vertical[h]), 2)]
    if fold:
        folded = []
        for h in range(H):
            mine = [u for u in p1 if u[0] == h]
            for m in range((len(mine) + 1) // 2):
                folded.append((h, mine[m][1], mine[-1 - m][1]) if m != len(mine) - 1 - m else mine[m])
        p1 = folded
    others = {h: [j for j in range(nk) if j not in set(vertical[h])] for h in range(H)}  # pass 2's blocks
    pairs = {h: [others[h][i:i + 2] for i in range(0, len(others[h]), 2)] for h in range(H)}
    g = group if 0 < group < H else H
    p2 = []
    for g0 in range(0, H, g):
        heads = range(g0, min(g0 + g, H))
        for x in range(max(len(pairs[h]) for h in heads)):
            p2 += [(h, pairs[h][x]) for h in heads if x < len(pairs[h])]
    return p1 + p2


def steps_of(mask, h, blocks, up_blocks=None):
    """The unit's query steps: descending; a folded unit's second part (up_blocks) ascending after it."""
    seen = mask[h][:, blocks].any(axis=1)
    steps = [i for i in range(mask.shape[1] - 1, -1, -1) if seen[i]]
    if up_blocks is not None:
        up = mask[h][:, up_blocks].any(axis=1)
        steps += [i for i in range(mask.shape[1]) if up[i]]
    return steps


def simulate(mask, units, fused, l2_bytes, ctas=132):
    tile = 32 * 1024
    lru = collections.OrderedDict()  # key -> (bytes, dirty)
    used = 0
    dram = collections.Counter()

    def touch(key, size, write=False):
        nonlocal used
        if key in lru:
            b, dirty = lru.pop(key)
            lru[key] = (b, dirty or write)
            return
        dram["read"] += size  # a miss (an RMW miss reads the line first)
        lru[key] = (size, write)
        used += size
        while used > l2_bytes:
            _, (b, dirty) = lru.popitem(last=False)
            used -= b
            if dirty:
                dram["write"] += b

    queue = collections.deque(units)
    # (next free tick, cta, remaining steps, head, unit id)
    running = []
    for c in range(min(ctas, len(queue))):
        h, *parts = queue.popleft()
        heapq.heappush(running, (0, c, h, steps_of(mask, h, *parts), tuple(map(tuple, parts))))
    while running:
        t, c, h, steps, blocks = heapq.heappop(running)
        if not steps:  # unit done: the CTA takes the next one
            if queue:
                h2, *parts = queue.popleft()
                touch(("kv", h2, tuple(map(tuple, parts))), 2 * tile * len(parts))
                heapq.heappush(running, (t, c, h2, steps_of(mask, h2, *parts), tuple(map(tuple, parts))))
            continue
        i = steps[0]
        touch(("qdo", h, i), tile)
        if fused:
            touch(("dq", h, i), tile, write=True)
        heapq.heappush(running, (t + 1, c, h, steps[1:], blocks))
    dram["write"] += sum(b for b, dirty in lru.values() if dirty)  # flushed at the end
    return dram


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--S", type=int, default=32768)
    ap.add_argument("--V", type=int, default=32, help="vertical stride; 1: the dense causal pattern")
    ap.add_argument("--groups", default="0,8,4,2,1", help="pass-2 head groups to compare (0: all heads)")
    ap.add_argument("--l2-mb", type=float, default=40.0, help="modelled L2 capacity in MiB")
    ap.add_argument("--fold", action="store_true", help="also pass 1 folded (units m and last - m together)")
    a = ap.parse_args()
    H = 32
    pattern = s2attn.dense(H, 64, causal=True) if a.V <= 1 else s2attn.local_stride(H, 64, 16, a.V, causal=True)
    mask = np.asarray(pattern.to_block_mask(a.S // 64)).astype(bool)  # [H, query blocks, key blocks]
    print(f"S={a.S} V={a.V}: mask {mask.shape}, density {float(pattern.density(a.S)):.3f}, L2 {a.l2_mb} MiB")
    for fold in (False, True) if a.fold else (False,):
        for group in (int(x) for x in a.groups.split(",")):
            units = units_of(mask, a.V, group, fold)
            for fused in (False, True):
                d = simulate(mask, units, fused, a.l2_mb * 2**20)
                print(f"  {'folded ' if fold else ''}group {group or 'all':>3} {'fused  ' if fused else 'ordered'}: "
                      f"DRAM read {d['read'] / 1e9:6.2f} GB, write {d['write'] / 1e9:6.2f} GB")


if __name__ == "__main__":
    main()

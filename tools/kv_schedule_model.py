#!/usr/bin/env python3
"""How evenly the Hopper backward's KV kernel spreads its work over the persistent CTAs, from the pattern alone
(CPU). Its units (backward_scheduler_sm90.cuh): pass 1, each KV head's vertical key blocks in pairs (j, j + V),
head-major; pass 2, the other blocks in pairs, heads side by side. A unit's work is counted as the query blocks
that see either of its two key blocks, plus `--unit-cost` for its fixed part. Prints, per shape, the busiest
CTA's work over the mean under the static stride (CTA c takes units c, c + grid, ...) and under greedy list
scheduling (each CTA takes the next unit when it finishes one: the counter).

    python3 tools/kv_schedule_model.py [--H 32] [--ctas 132]
"""
import argparse
import heapq
import sys

import numpy as np

import s2attn


def first_block_below_window(mask, h, L):
    """The first key block that head h's last query block sees below its local window of L blocks (a block of
    the head's vertical progression), or None when it sees none there."""
    nb = mask.shape[2]
    return next((j for j in range(nb - L - 1) if mask[h, nb - 1, j]), None)


def kv_units(S, H, L, V, block=64, vert_position="absolute"):
    """The KV kernel's units in the scheduler's order (causal self-attention of length S, one KV head per q
    head), each as (full steps, half steps): query blocks that see both of its key blocks (both consumer
    warpgroups work) or only one (one warpgroup skips its GEMMs)."""
    nb = S // block
    p = s2attn.local_stride(H, block, L, V, causal=True, vert_position=vert_position)
    mask = np.asarray(p.to_block_mask(nb, nb, 0)).astype(bool)
    pass1, pass2 = [], []
    for h in range(H):
        # the head's vertical residue
        first = first_block_below_window(mask, h, L)
        r = first % V if first is not None and vert_position == "absolute" else 0
        vertical = list(range(r, nb, V)) if vert_position == "absolute" and V >= 2 else []
        vset = set(vertical)
        other = [j for j in range(nb) if j not in vset]

        def pairs(blocks):
            out = []
            for i in range(0, len(blocks), 2):
                a = mask[h, :, blocks[i]]
                b = mask[h, :, blocks[i + 1]] if i + 1 < len(blocks) else np.zeros_like(a)
                out.append((int((a & b).sum()), int((a ^ b).sum())))
            return out

        pass1.append(pairs(vertical))
        pass2.append(pairs(other))
    order = [u for h in range(H) for u in pass1[h]]
    for x in range(max(len(q) for q in pass2)):
        order += [pass2[h][x] for h in range(H) if x < len(pass2[h])]
    return order


def unit_work(S, H, L, V, block=64, unit_cost=1.0):
    """The units' work in the scheduler's order: query steps (full or half) plus `unit_cost`."""
    return np.array([f + hlf + unit_cost for f, hlf in kv_units(S, H, L, V, block)], dtype=float)


def busiest_over_mean(work, ctas, greedy):
    if greedy:
        heap = [(0.0, c) for c in range(ctas)]
        for w in work:
            load, c = heapq.heappop(heap)
            heapq.heappush(heap, (load + w, c))
        busiest = max(load for load, _ in heap)
    else:
        load = np.zeros(ctas)
        for u, w in enumerate(work):
            load[u % ctas] += w
        busiest = load.max()
    return busiest / (work.sum() / ctas)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--ctas", type=int, default=132)
    ap.add_argument("--unit-cost", type=float, default=1.0)
    a = ap.parse_args()
    for S in (8192, 32768, 131072):
        for V in (8, 16, 32):
            work = unit_work(S, a.H, a.L, V, unit_cost=a.unit_cost)
            print(f"S={S:6d} V={V:2d}: {len(work) / a.ctas:6.1f} units a CTA; busiest / mean: static "
                  f"{busiest_over_mean(work, a.ctas, False):.3f}, greedy {busiest_over_mean(work, a.ctas, True):.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

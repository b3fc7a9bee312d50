#!/usr/bin/env python3
"""How long the portable backward's KV kernel waits on its last CTAs, from the pattern alone (CPU).

The kernel (backward_kernel_sm80.cuh, backward_kv_2x2_kernel_sm80.cuh) launches one CTA per (KV head, 64-key
tile); the GPU starts CTAs in grid order as slots free up (SMs x CTAs per SM). A CTA's work is the query
steps that see its key block (64-row steps at block size 64) plus `--cta-cost` steps of fixed work (K / V
loads, dK / dV stores). Under the S2 patterns a vertical key block j is seen by every later query block
(nq - j steps), a local-only one by about L: the long CTAs are few, and where they start decides the end.

Orders compared (the makespan of greedy dispatch over the mean slot load, 1.0 = perfectly even):
  grid:       (KV head, key tile), tiles ascending within a head (the kernel's order before session 21);
  vertical-first: every head's vertical key blocks first (head-major, ascending), then the grid order of
              the rest (kv_tile_order.h).

    python3 tools/sm80_kv_grid_model.py [--H 32] [--slots 264] [--cta-cost 4]
"""
import argparse
import sys

import numpy as np

import s2attn
from kv_schedule_model import busiest_over_mean, first_block_below_window


def tile_work(S, H, L, V, block=64):
    """[head][key block] -> query blocks that see it (causal self-attention, one KV head per q head), and
    each head's vertical blocks (those its last query block sees below its local window, with their
    stride: the absolute vertical rule)."""
    nb = S // block
    p = s2attn.local_stride(H, block, L, V, causal=True)
    mask = np.asarray(p.to_block_mask(nb, nb, 0)).astype(bool)
    work = mask.sum(axis=1)  # [H][nb]: query blocks per key block
    vertical = []
    for h in range(H):
        first = first_block_below_window(mask, h, L)
        r = first % V if first is not None else nb
        vertical.append(set(range(r, nb, V)))
    return work, vertical


def grid_order(work, vertical, vertical_first):
    H, nb = work.shape
    if not vertical_first:
        return [work[h, j] for h in range(H) for j in range(nb)]
    first = [work[h, j] for h in range(H) for j in sorted(vertical[h])]
    rest = [work[h, j] for h in range(H) for j in range(nb) if j not in vertical[h]]
    return first + rest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--slots", type=int, default=264, help="CTAs resident at once (132 SMs x 2 on the H100)")
    ap.add_argument("--cta-cost", type=float, default=4.0, help="fixed work of a CTA, in query steps")
    ap.add_argument("--seqlens", default="8192,32768,131072")
    a = ap.parse_args()
    for S in (int(s) for s in a.seqlens.split(",")):
        for V in (8, 16, 32):
            work, vertical = tile_work(S, a.H, a.L, V)
            row = []
            for vf in (False, True):
                w = np.array(grid_order(work, vertical, vf), dtype=float) + a.cta_cost
                row.append(busiest_over_mean(w, a.slots, True))
            print(f"S={S:6d} V={V:2d}: {work.size / a.slots:6.1f} CTAs a slot; last slot's end / mean load: "
                  f"grid {row[0]:.3f}, vertical-first {row[1]:.3f} (time {row[1] / row[0] - 1:+.1%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

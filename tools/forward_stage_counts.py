"""The work of the Hopper forward for a pattern, counted as its producer walks it (stage_sequence_sm90.cuh):
per unit (head, 128-row tile = query blocks 2t and 2t + 1 at block 64), the union of the two blocks' visible
key blocks in ascending order, two per 128-key stage; a warpgroup-stage needs the element-wise mask when a
box of it is one its query block does not see (or the filler of an odd count) or reaches its diagonal.
Used by tools/forward_cost_probe.py; runs on the CPU.
"""
import numpy as np


def stage_counts(pattern, S, H, block=64, boxes_per_stage=2):
    """{'units', 'stages', 'masked_wg_stages'} of a causal self-attention forward of length S. The Hopper
    kernel pairs two 64-key boxes a stage; the portable kernel's 128-row CTAs take one 64-key tile a step
    (boxes_per_stage=1; its "warpgroup-stages" are then its 64-row halves' steps)."""
    nb = (S + block - 1) // block
    mask = np.asarray(pattern.to_block_mask(nb, nb, 0)).astype(bool)  # [heads, q blocks, k blocks]
    if mask.shape[0] == 1:
        mask = np.broadcast_to(mask, (H,) + mask.shape[1:])
    units = stages = masked = 0
    for h in range(H):
        for t in range((nb + 1) // 2):
            rows = [r for r in (2 * t, 2 * t + 1) if r < nb]
            seen = [mask[h, r] for r in rows]
            boxes = np.flatnonzero(np.logical_or.reduce(seen))
            units += 1
            k = boxes_per_stage
            n = max(1, (len(boxes) + k - 1) // k)
            stages += n
            for s in range(n):
                pair = list(boxes[k * s:k * s + k])
                for w, r in enumerate(rows):
                    need = len(pair) < k or any(not seen[w][j] or j >= r for j in pair)
                    masked += int(need)
    return dict(units=units, stages=stages, masked_wg_stages=masked)

"""Cross-check of s2attn's local-stride pattern against the paper's own library: for a grid of parameters,
dkernel.utils.get_sparse_attn_mask's block mask must equal s2attn's Pattern.to_block_mask.

dkernel is not on PyPI: put a checkout of github.com/linxihui/dkernel (installed with
`pip install --no-deps --target .deps/peers/dkernel <checkout>`) on PYTHONPATH. Runs on the CPU.

    PYTHONPATH=.deps/peers/dkernel .venv/bin/python tools/check_dkernel_pattern.py
"""
import itertools
import sys

import numpy as np
import torch

import s2attn
from dkernel.utils import get_sparse_attn_mask


def main():
    equal, different, refused = 0, 0, 0
    bs, nb = 16, 40
    grid = itertools.product([4, 8], [None, 2], [1, 3], [2, 5, 16], [0, 1], [0, 3], [False, True], [True, False])
    for H, Hkv, L, V, nd, off, homo, causal in grid:
        if homo and nd:
            continue  # refused by both libraries
        try:
            _, bm, _ = get_sparse_attn_mask(H, bs * nb, block_size=bs, local_blocks=L, vert_stride=V,
                                            homo_head=homo, dtype=torch.uint8, num_kv_heads=Hkv,
                                            head_sliding_offset=off, num_dense_heads=nd, causal=causal)
        except Exception:  # noqa: BLE001 - combinations dkernel itself cannot build
            refused += 1
            continue
        bm = bm.numpy().astype(bool)
        if bm.ndim == 2:
            bm = bm[None]
        if bm.shape[1] != nb:  # dkernel stacks the heads along the rows in some bidirectional cases
            bm = bm.reshape(-1, nb, nb)
        p = s2attn.local_stride(H, bs, L, V, causal=causal, homo_head=homo, head_sliding_offset=off,
                                num_dense_heads=nd, num_kv_heads=Hkv)
        ours = p.to_block_mask(nb, nb).astype(bool)
        if bm.shape[0] == 1:
            bm = np.broadcast_to(bm, ours.shape)
        if bm.shape == ours.shape and np.array_equal(ours, bm):
            equal += 1
        else:
            different += 1
            print("different:", dict(H=H, Hkv=Hkv, L=L, V=V, dense=nd, offset=off, homo=homo, causal=causal))
    print(f"{equal} configurations equal, {different} different, {refused} refused by dkernel")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())

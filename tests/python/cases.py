"""Pattern specifications shared by the tests: random parameter sets, hand-computed cases, and the two
builders (the library's pattern through s2attn's public API, the reference's through reference.py)."""
from __future__ import annotations

import copy

import numpy as np

from reference import RangeRule, RefPattern

BLOCK_SIZES = (16, 32, 64, 128)


def _choice(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def random_pattern_spec(rng) -> dict:
    """A random pattern description (plain dict, printable in a failure message)."""
    hkv = int(_choice(rng, (1, 1, 2, 2, 3, 4)))
    group = int(_choice(rng, (1, 1, 2, 3, 4)))
    H = hkv * group
    spec = {"num_heads": H, "num_kv_heads": hkv, "block_size": int(_choice(rng, BLOCK_SIZES)),
            "causal": bool(rng.random() < 0.6)}
    u = rng.random()
    if u < 0.07:
        spec["kind"] = "dense"
        return spec
    if u < 0.27:
        spec["kind"] = "mask"
        rows = int(rng.integers(2, 20))
        cols = int(rng.integers(2, 20))
        heads = int(_choice(rng, (1, hkv, H)))
        p = float(_choice(rng, (0.15, 0.4, 0.8)))
        m = rng.random((heads, rows, cols)) < p
        if heads == 1 and rng.random() < 0.4:
            m = m[0]
            spec["mask_2d"] = True
        spec["mask"] = m.astype(np.uint8 if rng.random() < 0.5 else np.bool_)
        return spec
    spec["kind"] = "local_stride"
    ls = {"local_blocks": int(rng.integers(1, 6)), "vert_stride": int(_choice(rng, (1, 2, 3, 4, 5, 6, 8, 9, 16)))}
    if rng.random() < 0.15:
        ls["homo_head"] = True
    if rng.random() < 0.4:
        ls["head_sliding_step"] = int(rng.integers(1, 7))
    if rng.random() < 0.4:
        ls["head_sliding_offset"] = int(rng.integers(1, 10))
    per_q = group > 1 and rng.random() < 0.35
    if per_q:
        ls["per_q_head"] = True
    npat = H if per_q else hkv
    # (homo_head with dense heads is refused, as dkernel refuses it: every head has one pattern)
    homo = ls.get("homo_head", False)
    if not homo and rng.random() < 0.3:
        ls["num_dense_heads"] = int(rng.integers(1, npat + 1))
    if spec["causal"]:
        r = rng.random()
        if r < 0.1:
            ls["vert_position"] = "absolute"
        elif r < 0.25:
            ls["vert_position"] = "relative"
    else:
        if rng.random() < 0.5:
            ls["local_right"] = int(rng.integers(1, 5))
        vp = (None, "absolute", "relative")[int(rng.integers(3))]
        if vp is not None:
            ls["vert_position"] = vp
    spec["ls"] = ls
    if rng.random() < 0.3:
        spec["sink"] = int(rng.integers(1, 4))
    if rng.random() < 0.3:
        spec["dense_prefix"] = int(rng.integers(1, 4))
    nr = int(_choice(rng, (0, 0, 1, 1, 2, 3)))
    ranges = []
    for _ in range(nr):
        b = int(rng.integers(0, 9))
        ranges.append((b, b + int(rng.integers(1, 9)), int(rng.integers(1, 6)), bool(rng.random() < 0.4)))
    if ranges:
        spec["ranges"] = ranges
    if not homo and rng.random() < 0.25:
        k = int(rng.integers(1, npat + 1))
        spec["dense_heads"] = sorted(int(x) for x in rng.choice(npat, size=k, replace=False))
    return spec


def random_grid(rng, spec):
    """(nq_blocks, nk_blocks, q_first_block) to evaluate a pattern on."""
    if spec.get("kind") == "mask":
        m = np.asarray(spec["mask"])
        rows, cols = m.shape[-2], m.shape[-1]
        q0 = int(rng.integers(0, rows)) if rng.random() < 0.5 else 0
        nq = int(rng.integers(1, rows - q0 + 1))
        nk = int(rng.integers(1, cols + 1))
        return nq, nk, q0
    q0 = int(rng.integers(1, 12)) if rng.random() < 0.5 else 0
    nq = int(rng.integers(1, 15))
    nk = q0 + nq if rng.random() < 0.5 else int(rng.integers(1, 26))
    return nq, nk, q0


def ref_from_spec(spec) -> RefPattern:
    kind = spec.get("kind", "local_stride")
    kw = dict(num_heads=spec["num_heads"], num_kv_heads=spec.get("num_kv_heads"),
              block_size=spec["block_size"], causal=spec["causal"], kind=kind)
    if kind == "mask":
        kw["mask"] = np.asarray(spec["mask"])
    elif kind == "local_stride":
        kw.update(spec["ls"])
        kw["sink"] = spec.get("sink", 0)
        kw["dense_prefix"] = spec.get("dense_prefix", 0)
        kw["ranges"] = [RangeRule(b, e, s, r) for (b, e, s, r) in spec.get("ranges", [])]
        kw["dense_heads"] = list(spec.get("dense_heads", []))
    return RefPattern(**kw)


def lib_from_spec(spec):
    """The same pattern built through s2attn's public Python API."""
    import s2attn

    kind = spec.get("kind", "local_stride")
    H, hkv, bs, causal = spec["num_heads"], spec.get("num_kv_heads"), spec["block_size"], spec["causal"]
    if kind == "dense":
        return s2attn.dense(H, block_size=bs, causal=causal, num_kv_heads=hkv)
    if kind == "mask":
        return s2attn.block_mask_pattern(np.asarray(spec["mask"]), H, block_size=bs, causal=causal,
                                         num_kv_heads=hkv)
    ls = dict(spec["ls"])
    L = ls.pop("local_blocks")
    V = ls.pop("vert_stride")
    p = s2attn.local_stride(H, block_size=bs, local_blocks=L, vert_stride=V, causal=causal,
                            num_kv_heads=hkv, **ls)
    if spec.get("sink"):
        p = p.with_sink(spec["sink"])
    if spec.get("dense_prefix"):
        p = p.with_dense_prefix(spec["dense_prefix"])
    for (b, e, s, r) in spec.get("ranges", []):
        p = p.with_range(b, e, stride=s, relative=r)
    if spec.get("dense_heads"):
        p = p.with_dense_heads(list(spec["dense_heads"]))
    return p


def ls_spec(H, bs, L, V, causal=True, hkv=None, **kw) -> dict:
    rules = {k: kw.pop(k) for k in ("sink", "dense_prefix", "ranges", "dense_heads") if k in kw}
    spec = {"kind": "local_stride", "num_heads": H, "num_kv_heads": hkv or H, "block_size": bs,
            "causal": causal, "ls": dict(local_blocks=L, vert_stride=V, **kw)}
    spec.update(rules)
    return spec


def spec_str(spec) -> str:
    s = copy.copy(spec)
    if "mask" in s:
        m = np.asarray(s["mask"])
        s["mask"] = f"<{m.dtype}{list(m.shape)} {int((m != 0).sum())} set>"
    return repr(s)


# ---------------------------------------------------------------------------------------------------------
# Hand-computed cases, matching dkernel's get_sparse_attn_mask. Each: (name, spec, {(head, row): columns}),
# evaluated on an n x n block grid, n = 1 + the largest row or column named.

def _all(n):
    return set(range(n))


HAND_CASES = [
    # H=4, V=4, L=2, causal: step = max(1, 4 // 4) = 1, head h's vertical blocks are j with (j + h) % 4 == 0.
    ("hetero_h4_v4_l2", ls_spec(4, 16, 2, 4),
     {(0, 7): {0, 4, 6, 7}, (1, 7): {3, 6, 7}, (2, 7): {2, 6, 7}, (3, 7): {1, 5, 6, 7},
      (0, 0): {0}, (1, 3): {2, 3}, (3, 1): {0, 1}, (2, 6): {2, 5, 6}}),
    # homo_head: every head has head 0's vertical blocks.
    ("homo_h4_v4_l2", ls_spec(4, 16, 2, 4, homo_head=True),
     {(0, 7): {0, 4, 6, 7}, (1, 7): {0, 4, 6, 7}, (2, 7): {0, 4, 6, 7}, (3, 7): {0, 4, 6, 7}}),
    # num_dense_heads=1 with 4 KV heads: the last KV head is dense.
    ("dense_last_kv_head", ls_spec(4, 16, 2, 4, num_dense_heads=1),
     {(0, 7): {0, 4, 6, 7}, (1, 7): {3, 6, 7}, (2, 7): {2, 6, 7}, (3, 7): _all(8), (3, 4): _all(5)}),
    # GQA 8 q heads / 2 kv heads, V=8, L=1: step = max(1, 8 // 8) = 1; q heads 0-3 follow kv head 0 (phase 0),
    # 4-7 kv head 1 (phase 1).
    ("gqa_8_2_v8", ls_spec(8, 16, 1, 8, hkv=2),
     {**{(h, 15): {0, 8, 15} for h in range(4)}, **{(h, 15): {7, 15} for h in range(4, 8)},
      **{(h, 9): {0, 8, 9} for h in range(4)}, **{(h, 9): {7, 9} for h in range(4, 8)}}),
    # step defaults with the QUERY head count: H=8, Hkv=2, V=16 -> step 16 // 8 = 2 (not 16 // 2 = 8):
    # kv head 1 has phase 2, vertical blocks 14, 30.
    ("step_uses_query_heads", ls_spec(8, 16, 1, 16, hkv=2),
     {**{(h, 31): {0, 16, 31} for h in range(4)}, **{(h, 31): {14, 30, 31} for h in range(4, 8)}}),
    # explicit step and offset: phase = ph * 3 + 1, V = 5: head 0 -> j % 5 == 4, head 1 -> j % 5 == 1.
    ("step_offset", ls_spec(2, 32, 1, 5, head_sliding_step=3, head_sliding_offset=1),
     {(0, 10): {4, 9, 10}, (1, 10): {1, 6, 10}}),
    # per_q_head: 4 q heads, 2 kv heads, V=4: each q head its own phase h.
    ("per_q_head", ls_spec(4, 16, 1, 4, hkv=2, per_q_head=True),
     {(0, 7): {0, 4, 7}, (1, 7): {3, 7}, (2, 7): {2, 6, 7}, (3, 7): {1, 5, 7}}),
    # bidirectional, relative vertical (the default): L=2 on both sides, V=3, no head phase.
    ("bidir_relative", ls_spec(2, 16, 2, 3, causal=False),
     {(0, 4): {0, 3, 4, 5}, (1, 4): {0, 3, 4, 5}, (0, 7): {0, 3, 6, 7}, (0, 0): {0, 1, 4, 7},
      (1, 2): {1, 2, 3, 6}}),
    # bidirectional, absolute vertical, local (2 left, 1 right), V=4: step 4 // 2 = 2, so head 1 has phase 2:
    # j % 4 == 2.
    ("bidir_absolute", ls_spec(2, 16, 2, 4, causal=False, local_right=1, vert_position="absolute"),
     {(0, 5): {0, 4, 5}, (1, 5): {2, 4, 5, 6}, (0, 1): {0, 1, 4}, (1, 1): {0, 1, 2, 6}}),
    # sink + dense prefix + a range rule on top of a local window (V=64 with offset 1: vertical block 63 only).
    ("rules", ls_spec(1, 16, 1, 64, head_sliding_offset=1, sink=1, dense_prefix=2, ranges=[(3, 6, 1, False)]),
     {(0, 0): {0}, (0, 1): {0, 1}, (0, 2): {0, 2}, (0, 7): {0, 3, 4, 5, 7}, (0, 4): {0, 3, 4}}),
]


def hand_grid(expected) -> int:
    return 1 + max(max(i, max(cols)) for (_, i), cols in expected.items())

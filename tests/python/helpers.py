"""Input construction and comparison helpers for the attention tests."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np

import cases
from reference import element_mask, rel_err

DTYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
# ||x - ref|| / ||ref|| bounds (the acceptance criteria)
TOL = {"f32": 1e-5, "f16": 1e-2, "bf16": 1e-2}
# lse is float32 whatever the I/O dtype and is computed from the (exactly representable) rounded inputs
LSE_TOL = {"f32": 1e-5, "f16": 1e-3, "bf16": 1e-3}


def randn(rng, shape, dtype: str, layout: str = "bshd", scale: float = 1.0):
    """A random array of logical shape `shape` ([B, S, H, D] or [T, H, D]) stored in `layout`:
    'bshd' contiguous; 'bhsd' a [B, H, S, D] array viewed as [B, S, H, D]; 'sbhd' a [S, B, H, D] array
    viewed as [B, S, H, D]; 'pad' a wider last dim sliced (last dim contiguous, other strides padded);
    varlen: 'htd' a [H, T, D] array viewed as [T, H, D]."""
    x = (rng.standard_normal(shape) * scale).astype(np.float32).astype(DTYPES[dtype])
    return to_layout(x, layout)


def to_layout(x, layout: str):
    if layout == "bshd":
        return np.ascontiguousarray(x)
    if layout == "bhsd":
        y = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    elif layout == "sbhd":
        y = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    elif layout == "htd":
        y = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    elif layout == "pad":
        big = np.zeros(x.shape[:-1] + (x.shape[-1] + 8,), x.dtype)
        big[..., 1:1 + x.shape[-1]] = x
        y = big[..., 1:1 + x.shape[-1]]
    else:
        raise ValueError(layout)
    assert np.array_equal(y.astype(np.float32), x.astype(np.float32), equal_nan=True)
    return y


def mask_spec(rng, kind, H, hkv, bs, causal, rows, cols, p=0.5, empty_row=None):
    """A random block-mask pattern spec whose heads dimension is 1 ('mask1'), hkv ('maskkv') or H ('maskh')."""
    heads = {"mask1": 1, "maskkv": hkv, "maskh": H}[kind]
    m = rng.random((heads, rows, cols)) < p
    # keep the diagonal mostly visible so that most rows see something
    for i in range(min(rows, cols)):
        m[:, i, i] |= rng.random(heads) < 0.8
    if empty_row is not None:
        m[:, empty_row, :] = False
    return {"kind": "mask", "num_heads": H, "num_kv_heads": hkv, "block_size": bs, "causal": causal,
            "mask": m.astype(np.uint8)}


def pattern_spec(rng, kind, H, hkv, bs, causal, max_q_pos, seqlen_k):
    """A named pattern for the numerics tests; masks are sized for queries up to absolute position
    max_q_pos and seqlen_k keys (plus a few spare rows and columns)."""
    if kind == "ls":
        return cases.ls_spec(H, bs, 2, 3, causal, hkv)
    if kind == "ls_het":
        kw = dict(head_sliding_step=1, head_sliding_offset=2)
        if hkv > 1:
            kw["num_dense_heads"] = 1
        return cases.ls_spec(H, bs, 1, 4, causal, hkv, **kw)
    if kind == "ls_pq":
        return cases.ls_spec(H, bs, 1, 3, causal, hkv, per_q_head=True)
    if kind == "ls_abs":
        kw = {"local_right": 1} if not causal else {}
        return cases.ls_spec(H, bs, 3, 5, causal, hkv, vert_position="absolute", **kw)
    if kind == "ls_rel":
        return cases.ls_spec(H, bs, 2, 3, causal, hkv, vert_position="relative")
    if kind == "homo":
        return cases.ls_spec(H, bs, 1, 3, causal, hkv, homo_head=True)
    if kind == "rules":
        kw = dict(sink=1, dense_prefix=1, ranges=[(2, 5, 2, False), (3, 6, 1, True)])
        if hkv > 1:
            kw["dense_heads"] = [0]
        return cases.ls_spec(H, bs, 1, 6, causal, hkv, **kw)
    if kind == "dense":
        return {"kind": "dense", "num_heads": H, "num_kv_heads": hkv, "block_size": bs, "causal": causal}
    if kind.startswith("mask"):
        rows = max_q_pos // bs + 1 + int(rng.integers(0, 3))
        cols = math.ceil(seqlen_k / bs) + int(rng.integers(0, 3))
        return mask_spec(rng, kind, H, hkv, bs, causal, rows, cols)
    raise ValueError(kind)


def assert_close(name, x, ref, tol):
    e = rel_err(x, ref)
    assert e <= tol, f"{name}: relative error {e:.3g} > {tol:g}"


def assert_no_nan(**arrays):
    for name, a in arrays.items():
        a = np.asarray(a).astype(np.float64)
        assert not np.isnan(a).any(), f"{name} has NaN at {np.argwhere(np.isnan(a))[:5].tolist()}"


def f64(x):
    return np.asarray(x).astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# The numerics cases (forward and backward): (B, Sq, Sk, H, Hkv, D, dtype, causal, pattern, block, extras)

def _c(B, Sq, Sk, H, Hkv, D, dtype, causal, pattern, bs, **extra):
    return dict(B=B, Sq=Sq, Sk=Sk, H=H, Hkv=Hkv, D=D, dtype=dtype, causal=causal, pattern=pattern, bs=bs,
                layout=extra.pop("layout", "bshd"), q_offset=extra.pop("q_offset", None),
                scale=extra.pop("scale", None), slow=extra.pop("slow", False), **extra)


NUMERIC_CASES = [
    _c(1, 1, 1, 1, 1, 32, "f32", True, "ls", 16),
    _c(2, 17, 17, 2, 1, 32, "f32", True, "ls", 16),
    _c(1, 77, 77, 4, 2, 64, "f32", True, "ls_het", 16),
    _c(2, 130, 130, 4, 4, 64, "f32", False, "ls", 32),
    _c(1, 203, 203, 6, 2, 32, "f32", True, "rules", 16),
    _c(1, 33, 203, 4, 1, 64, "f32", True, "ls", 16),
    _c(1, 1, 130, 4, 2, 128, "f32", True, "ls_het", 16),
    _c(2, 64, 64, 2, 2, 128, "f32", True, "dense", 64),
    _c(1, 100, 150, 4, 2, 32, "f32", False, "ls_abs", 16),
    _c(1, 90, 90, 8, 2, 32, "f32", True, "ls_pq", 16),
    _c(1, 120, 120, 4, 2, 32, "f32", True, "homo", 32),
    _c(1, 150, 150, 4, 2, 32, "f32", True, "mask1", 16),
    _c(1, 150, 150, 4, 2, 32, "f32", False, "maskkv", 32),
    _c(2, 97, 97, 4, 2, 32, "f32", True, "maskh", 16),
    _c(1, 60, 200, 2, 1, 64, "f32", True, "maskh", 16),
    _c(1, 140, 140, 2, 2, 32, "f32", True, "ls_rel", 16),
    _c(1, 70, 70, 2, 2, 32, "f32", False, "rules", 16),
    _c(1, 50, 50, 3, 1, 64, "f32", False, "dense", 16),
    _c(2, 77, 77, 4, 2, 64, "f32", True, "ls", 16, layout="bhsd"),
    _c(2, 50, 70, 4, 2, 32, "f32", True, "rules", 16, layout="sbhd"),
    _c(1, 65, 65, 2, 2, 32, "f32", False, "ls", 16, layout="pad"),
    _c(1, 20, 100, 4, 2, 32, "f32", True, "ls", 16, q_offset=40),
    _c(1, 40, 40, 2, 2, 64, "f32", True, "ls", 16, scale=0.3),
    _c(1, 300, 300, 2, 1, 64, "f32", True, "ls", 128),
    _c(1, 77, 77, 4, 2, 64, "bf16", True, "ls", 16),
    _c(2, 130, 150, 4, 1, 128, "bf16", True, "rules", 32),
    _c(1, 100, 100, 4, 4, 32, "bf16", False, "ls", 16, layout="bhsd"),
    _c(1, 120, 120, 8, 2, 32, "bf16", True, "ls_pq", 16),
    _c(1, 203, 203, 2, 1, 64, "bf16", True, "mask1", 64),
    _c(1, 77, 77, 4, 2, 64, "f16", True, "ls_het", 16),
    _c(1, 1, 203, 2, 2, 128, "f16", True, "ls", 16),
    _c(1, 90, 90, 4, 2, 32, "f16", False, "maskkv", 16, layout="sbhd"),
    _c(1, 700, 700, 4, 2, 64, "f32", True, "ls_het", 64, slow=True),
    _c(1, 512, 1024, 4, 2, 128, "bf16", True, "rules", 64, slow=True),
]


def case_id(c):
    s = f"{c['dtype']}-B{c['B']}-q{c['Sq']}-k{c['Sk']}-h{c['H']}.{c['Hkv']}-d{c['D']}-" \
        f"{'causal' if c['causal'] else 'bidir'}-{c['pattern']}-bs{c['bs']}-{c['layout']}"
    if c["q_offset"] is not None:
        s += f"-off{c['q_offset']}"
    if c["scale"] is not None:
        s += f"-scale{c['scale']}"
    return s


def case_params():
    import pytest

    return [pytest.param(c, id=case_id(c), marks=[pytest.mark.slow] if c["slow"] else [])
            for c in NUMERIC_CASES]


def build_case(c, rng):
    """Inputs, library pattern, reference pattern and element mask of a numerics case."""
    B, Sq, Sk, H, Hkv, D = c["B"], c["Sq"], c["Sk"], c["H"], c["Hkv"], c["D"]
    off = c["q_offset"] if c["q_offset"] is not None else Sk - Sq
    spec = pattern_spec(rng, c["pattern"], H, Hkv, c["bs"], c["causal"], off + Sq - 1, Sk)
    q = randn(rng, (B, Sq, H, D), c["dtype"], c["layout"])
    k = randn(rng, (B, Sk, Hkv, D), c["dtype"], c["layout"])
    v = randn(rng, (B, Sk, Hkv, D), c["dtype"], c["layout"])
    ref = cases.ref_from_spec(spec)
    m = element_mask(ref, Sq, Sk, c["q_offset"])
    return spec, ref, m, q, k, v


# ---------------------------------------------------------------------------------------------------------
# varlen cases and rows without keys (shared by the forward and backward tests)

VARLEN_CASES = [
    # (q lens, k lens, H, Hkv, D, dtype, causal, pattern, bs, layout)
    ([1, 17, 40, 77], None, 4, 2, 32, "f32", True, "ls", 16, "bshd"),
    ([5, 1, 30], [20, 64, 30], 4, 1, 64, "f32", True, "rules", 16, "bshd"),
    ([9, 1, 33], [9, 50, 70], 2, 2, 32, "f32", False, "ls", 16, "bshd"),
    ([33, 1, 100], [40, 1, 130], 4, 2, 64, "bf16", True, "maskh", 16, "bshd"),
    ([1, 1, 60, 7], [3, 100, 60, 7], 4, 2, 32, "f32", True, "ls_het", 16, "htd"),
    ([25, 64], [25, 64], 2, 1, 128, "f16", False, "maskkv", 32, "htd"),
    # a sequence with more queries than keys (causal): its first rows see nothing
    ([5, 2, 20], [3, 4, 20], 2, 1, 32, "f32", True, "ls", 16, "bshd"),
]


def varlen_inputs(rng, qlens, klens, H, Hkv, D, dtype, causal, kind, bs, layout):
    klens = klens or qlens
    cu_q = np.concatenate([[0], np.cumsum(qlens)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(klens)]).astype(np.int32)
    max_pos = max(sk - 1 for sk in klens)
    spec = pattern_spec(rng, kind, H, Hkv, bs, causal, max_pos, max(klens))
    q = randn(rng, (int(cu_q[-1]), H, D), dtype, layout)
    k = randn(rng, (int(cu_k[-1]), Hkv, D), dtype, layout)
    v = randn(rng, (int(cu_k[-1]), Hkv, D), dtype, layout)
    return spec, cu_q, cu_k, q, k, v


def empty_row_cases():
    return [
        # Sq > Sk, causal: the first Sq - Sk rows (negative positions) see nothing
        dict(name="sq_gt_sk_causal", B=2, Sq=40, Sk=20, H=2, Hkv=1, D=32, bs=16, causal=True, kind="ls"),
        # a block mask with an empty row block (causal)
        dict(name="mask_empty_row_causal", B=1, Sq=80, Sk=80, H=4, Hkv=2, D=32, bs=16, causal=True,
             kind="mask_empty"),
        # the same, bidirectional, bf16
        dict(name="mask_empty_row_bidir_bf16", B=1, Sq=70, Sk=90, H=2, Hkv=2, D=64, bs=16, causal=False,
             kind="mask_empty", dtype="bf16"),
    ]


def build_empty_case(e, rng):
    dtype = e.get("dtype", "f32")
    if e["kind"] == "ls":
        spec = cases.ls_spec(e["H"], e["bs"], 1, 2, e["causal"], e["Hkv"])
    else:
        rows = math.ceil(e["Sk"] / e["bs"])
        cols = math.ceil(e["Sk"] / e["bs"])
        spec = mask_spec(rng, "maskkv", e["H"], e["Hkv"], e["bs"], e["causal"], rows, cols, empty_row=rows - 2)
    ref = cases.ref_from_spec(spec)
    m = element_mask(ref, e["Sq"], e["Sk"])
    q = randn(rng, (e["B"], e["Sq"], e["H"], e["D"]), dtype)
    k = randn(rng, (e["B"], e["Sk"], e["Hkv"], e["D"]), dtype)
    v = randn(rng, (e["B"], e["Sk"], e["Hkv"], e["D"]), dtype)
    empty = ~m.any(-1)  # [H, Sq]
    assert empty.any() and not empty.all()
    return dtype, spec, m, empty, q, k, v

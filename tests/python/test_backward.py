"""Backward numerics: dq, dk, dv against the float64 analytic gradients of the reference, central finite
differences of the library's own float32 forward, rows with no key, poisoned gradient buffers."""
import numpy as np
import pytest

import s2attn

import cases
import helpers as H_
from helpers import DTYPES, TOL, assert_close, assert_no_nan, randn
from reference import attention_grad_ref, element_mask, varlen_ref
from helpers import VARLEN_CASES, build_empty_case, empty_row_cases, varlen_inputs


def run_fwd_bwd(p, q, k, v, dout, **kw):
    out, lse = s2attn.attention(q, k, v, p, return_lse=True, **kw)
    dq, dk, dv = s2attn.attention_backward(dout, q, k, v, out, lse, p, **kw)
    return out, lse, dq, dk, dv


def check_grads(dtype, got, want, q, k, v):
    dq, dk, dv = got
    for name, g, x in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        assert g.shape == x.shape, (name, g.shape, x.shape)
        assert g.dtype == x.dtype, (name, g.dtype, x.dtype)
    assert_no_nan(dq=dq, dk=dk, dv=dv)
    for name, g, w in (("dq", dq, want[0]), ("dk", dk, want[1]), ("dv", dv, want[2])):
        assert_close(name, g, w, TOL[dtype])


@pytest.mark.parametrize("c", H_.case_params())
def test_backward_matches_reference(c, rng):
    spec, ref, m, q, k, v = H_.build_case(c, rng)
    dout = randn(rng, q.shape, c["dtype"], c["layout"])
    p = cases.lib_from_spec(spec)
    kw = dict(softmax_scale=c["scale"], q_offset=c["q_offset"])
    _, _, dq, dk, dv = run_fwd_bwd(p, q, k, v, dout, **kw)
    want = attention_grad_ref(q, k, v, dout, m, c["scale"])
    check_grads(c["dtype"], (dq, dk, dv), want, q, k, v)


@pytest.mark.parametrize("vc", VARLEN_CASES, ids=lambda vc: f"{vc[5]}-{vc[7]}-{'c' if vc[6] else 'b'}-{vc[0]}")
def test_varlen_backward(vc, rng):
    spec, cu_q, cu_k, q, k, v = varlen_inputs(rng, *vc)
    dtype = vc[5]
    dout = randn(rng, q.shape, dtype)
    p = cases.lib_from_spec(spec)
    _, _, dq, dk, dv = run_fwd_bwd(p, q, k, v, dout, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    _, _, want = varlen_ref(q, k, v, cu_q, cu_k, cases.ref_from_spec(spec), dout=dout)
    check_grads(dtype, (dq, dk, dv), want, q, k, v)


@pytest.mark.parametrize("e", empty_row_cases(), ids=lambda e: e["name"])
def test_rows_without_keys_backward(e, rng):
    dtype, spec, m, empty, q, k, v = build_empty_case(e, rng)
    dout = randn(rng, q.shape, dtype)
    p = cases.lib_from_spec(spec)
    _, _, dq, dk, dv = run_fwd_bwd(p, q, k, v, dout)
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert np.isfinite(H_.f64(g)).all(), f"{name} not finite"
    d = H_.f64(dq)
    for h in range(e["H"]):
        assert np.all(d[:, empty[h], h] == 0), f"head {h}: dq of rows without keys is not 0"
    check_grads(dtype, (dq, dk, dv), attention_grad_ref(q, k, v, dout, m), q, k, v)


def test_poisoned_gradients_fully_written(rng):
    """dq/dk/dv buffers full of NaN: every element written, including key blocks no query sees (decode-like
    short query against a long context with a sparse pattern) and rows without keys (Sq > Sk)."""
    for (B, Sq, Sk, L, V) in ((1, 16, 200, 1, 8), (2, 40, 20, 1, 2)):
        H, Hkv, D = 4, 2, 32
        spec = cases.ls_spec(H, 16, L, V, True, Hkv, head_sliding_offset=1)
        p = cases.lib_from_spec(spec)
        q = randn(rng, (B, Sq, H, D), "f32")
        k = randn(rng, (B, Sk, Hkv, D), "f32")
        v = randn(rng, (B, Sk, Hkv, D), "f32")
        dout = randn(rng, q.shape, "f32")
        out, lse = s2attn.attention(q, k, v, p, return_lse=True)
        dq = np.full(q.shape, np.nan, np.float32)
        dk = np.full(k.shape, np.nan, np.float32)
        dv = H_.to_layout(np.full(v.shape, np.nan, np.float32), "bhsd")
        res = s2attn.attention_backward(dout, q, k, v, out, lse, p, dq=dq, dk=dk, dv=dv)
        assert_no_nan(dq=dq, dk=dk, dv=dv)
        m = element_mask(cases.ref_from_spec(spec), Sq, Sk)
        want = attention_grad_ref(q, k, v, dout, m)
        check_grads("f32", (dq, dk, dv), want, q, k, v)
        unseen = ~m.any(axis=(0, 1))
        if Sk > Sq:
            assert unseen.any()
            assert np.all(dk[:, unseen] == 0) and np.all(dv[:, unseen] == 0)
        for r, x in zip(res, (dq, dk, dv)):
            assert np.array_equal(r, x)


def test_poisoned_gradients_bf16_empty_rows(rng):
    e = empty_row_cases()[2]
    dtype, spec, m, empty, q, k, v = build_empty_case(e, rng)
    p = cases.lib_from_spec(spec)
    dout = randn(rng, q.shape, dtype)
    out, lse = s2attn.attention(q, k, v, p, return_lse=True)
    bufs = [np.full(x.shape, np.nan, np.float32).astype(DTYPES[dtype]) for x in (q, k, v)]
    s2attn.attention_backward(dout, q, k, v, out, lse, p, dq=bufs[0], dk=bufs[1], dv=bufs[2])
    assert_no_nan(dq=bufs[0], dk=bufs[1], dv=bufs[2])
    check_grads(dtype, bufs, attention_grad_ref(q, k, v, dout, m), q, k, v)


def test_deterministic_backward_is_bitwise_repeatable(rng):
    H, Hkv = 8, 2
    p = s2attn.local_stride(H, block_size=16, local_blocks=2, vert_stride=3, num_kv_heads=Hkv)
    q = randn(rng, (2, 160, H, 32), "f32")
    k = randn(rng, (2, 160, Hkv, 32), "f32")
    v = randn(rng, (2, 160, Hkv, 32), "f32")
    dout = randn(rng, q.shape, "f32")
    out, lse = s2attn.attention(q, k, v, p, return_lse=True)
    a = s2attn.attention_backward(dout, q, k, v, out, lse, p, deterministic=True)
    for _ in range(2):
        b = s2attn.attention_backward(dout, q, k, v, out, lse, p, deterministic=True)
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    c = s2attn.attention_backward(dout, q, k, v, out, lse, p, num_threads=1)
    for x, y in zip(a, c):
        assert H_.rel_err(x, y) < 1e-5


# ---------------------------------------------------------------------------------------------------------
# finite differences through the library's float32 forward

FD_CASES = [
    dict(B=1, Sq=40, Sk=40, H=2, Hkv=1, D=32, spec=lambda H, Hkv: cases.ls_spec(H, 16, 1, 2, True, Hkv)),
    dict(B=2, Sq=24, Sk=50, H=4, Hkv=2, D=32,
         spec=lambda H, Hkv: cases.ls_spec(H, 16, 1, 3, True, Hkv, sink=1, ranges=[(1, 3, 1, True)])),
    dict(B=1, Sq=45, Sk=45, H=2, Hkv=2, D=64, spec=lambda H, Hkv: cases.ls_spec(H, 16, 1, 2, False, Hkv)),
]


@pytest.mark.parametrize("fc", FD_CASES, ids=["causal-mqa", "rules-gqa-sq<sk", "bidir"])
def test_finite_differences(fc, rng):
    B, Sq, Sk, H, Hkv, D = fc["B"], fc["Sq"], fc["Sk"], fc["H"], fc["Hkv"], fc["D"]
    p = cases.lib_from_spec(fc["spec"](H, Hkv))
    x = {"q": randn(rng, (B, Sq, H, D), "f32"), "k": randn(rng, (B, Sk, Hkv, D), "f32"),
         "v": randn(rng, (B, Sk, Hkv, D), "f32")}
    w = rng.standard_normal((B, Sq, H, D))

    def f(args):
        return float((s2attn.attention(args["q"], args["k"], args["v"], p).astype(np.float64) * w).sum())

    out, lse = s2attn.attention(x["q"], x["k"], x["v"], p, return_lse=True)
    grads = dict(zip("qkv", s2attn.attention_backward(w.astype(np.float32), x["q"], x["k"], x["v"], out, lse, p)))
    eps = 1e-2
    for name in "qkv":
        u = rng.standard_normal(x[name].shape)
        plus = dict(x)
        minus = dict(x)
        plus[name] = (x[name] + eps * u).astype(np.float32)
        minus[name] = (x[name] - eps * u).astype(np.float32)
        delta = plus[name].astype(np.float64) - minus[name].astype(np.float64)  # the exact step taken
        fd = f(plus) - f(minus)
        an = float((grads[name].astype(np.float64) * delta).sum())
        assert abs(fd - an) <= 2e-2 * abs(an) + 1e-4, f"d{name}: finite difference {fd:.6g} vs backward {an:.6g}"

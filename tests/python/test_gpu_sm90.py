"""The Hopper (sm_90a) forward of s2attn, forced with backend="cuda_sm90", against the float64 dense masked
reference of test_gpu.py (same helpers, same tolerances), with poisoned outputs. Also checks that
backend="auto" on an sm_90 GPU gives the same bits, and that what the Hopper path does not serve falls back
(auto) or is refused (forced). Skipped unless torch sees a compute capability 9.0 GPU and this build has the
Hopper path.
"""
import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import s2attn  # noqa: E402

# the reference, the helpers and the `gen` fixture of the portable path's tests (importing test_gpu skips
# this module too where torch sees no CUDA device)
from test_gpu import (  # noqa: E402
    DEV, LSE_TOL, OUT_TOL, check, element_mask, gen, make_pattern, nan_like, randn, ref_attention,
    skip_module_unless_hopper, to_layout,
)

skip_module_unless_hopper()

assert gen  # the fixture, imported for the tests below
SM90 = "cuda_sm90"


def pattern_of(kind, H, hkv, bs, causal):
    ls = s2attn.local_stride
    if kind == "sink":  # attention sinks next to a local window and a stride
        return ls(H, bs, 2, 5, causal=causal, num_kv_heads=hkv).with_sink(2)
    if kind == "range":  # dense recent past, strided far past
        return ls(H, bs, 1, 1024, causal=causal, num_kv_heads=hkv).with_range(0, 3, 2, False).with_range(1, 4, 1, True)
    if kind == "v1":  # vertical stride 1: every block visible, the dense pattern by another route
        return ls(H, bs, 1, 1, causal=causal, num_kv_heads=hkv)
    return make_pattern(kind, H, hkv, bs, causal)


def _c(B, Sq, Sk, H, Hkv, D, pattern, bs, causal=True, layout="bshd", q_offset=None, scale=None):
    return dict(B=B, Sq=Sq, Sk=Sk, H=H, Hkv=Hkv, D=D, pattern=pattern, bs=bs, causal=causal, layout=layout,
                q_offset=q_offset, scale=scale)


CASES = [
    # odd lengths, not multiples of the block or of the 128-row tile
    _c(1, 1, 1, 2, 2, 64, "ls", 64),
    _c(2, 17, 17, 4, 2, 128, "ls", 64),
    _c(1, 77, 77, 4, 4, 128, "ls_het", 128),
    _c(1, 203, 203, 8, 2, 128, "ls", 64),                  # GQA 8:2
    _c(1, 1000, 1000, 4, 1, 64, "ls", 64),                 # MQA
    _c(1, 1000, 1000, 2, 2, 128, "ls_het", 128),
    _c(1, 2048, 2048, 4, 2, 128, "paper", 64),
    _c(2, 2048, 2048, 16, 4, 128, "paper", 64),            # more units than SMs: the persistent loop
    _c(1, 4099, 4099, 8, 8, 64, "paper", 128),
    _c(1, 203, 203, 4, 2, 64, "ls_het", 128),
    # Sq < Sk: decode and chunked prefill (bottom-right aligned)
    _c(1, 1, 1000, 8, 2, 128, "ls", 64),
    _c(3, 1, 203, 4, 4, 64, "ls", 128),
    _c(2, 64, 1000, 4, 2, 128, "ls", 64),
    _c(1, 100, 300, 4, 2, 64, "rules", 64),
    _c(1, 77, 1000, 4, 2, 128, "ls_het", 128),
    # explicit q_offset (tiles straddling the sequence start)
    _c(1, 20, 100, 4, 2, 64, "ls", 64, q_offset=40),
    _c(1, 33, 203, 2, 1, 128, "ls", 64, q_offset=7),
    _c(1, 150, 400, 2, 1, 128, "ls", 128, q_offset=190),
    # Sq > Sk: the first rows see nothing
    _c(1, 100, 40, 2, 2, 64, "ls", 64),
    _c(1, 203, 150, 2, 2, 64, "dense", 64, causal=False),
    _c(1, 300, 70, 2, 2, 128, "dense", 128),
    # bidirectional
    _c(1, 203, 203, 4, 2, 64, "ls_rel", 64, causal=False),
    _c(1, 300, 300, 4, 2, 128, "ls_abs", 64, causal=False),
    _c(1, 1000, 1000, 4, 2, 64, "ls_rel", 128, causal=False),
    _c(1, 77, 300, 4, 2, 128, "ls", 64, causal=False),
    # other rules
    _c(1, 203, 203, 4, 2, 128, "dense", 64),
    _c(1, 700, 700, 8, 2, 64, "ls_pq", 64),
    _c(1, 900, 900, 4, 2, 128, "rules", 64),
    _c(1, 903, 903, 4, 2, 64, "rules", 128, causal=False),
    _c(1, 1000, 1000, 4, 2, 128, "local", 64),
    _c(1, 700, 700, 4, 2, 64, "homo", 128),
    _c(1, 1100, 1100, 4, 2, 128, "sink", 64),
    _c(1, 1100, 1100, 4, 2, 64, "range", 128),
    _c(1, 1000, 1000, 4, 2, 128, "v1", 64),
    _c(1, 1000, 1000, 4, 2, 64, "v1", 128, causal=False),
    # non-contiguous layouts (TMA strides)
    _c(1, 203, 203, 4, 2, 128, "ls", 64, layout="bhsd"),
    _c(2, 77, 100, 4, 2, 64, "ls_het", 64, layout="sbhd"),
    _c(1, 150, 150, 2, 2, 64, "ls", 128, layout="pad8"),
    # softmax scale (a negative one too)
    _c(1, 77, 77, 2, 2, 64, "ls", 64, scale=0.3),
    _c(1, 177, 177, 2, 2, 128, "ls", 128, scale=-0.2),
]

# random shapes: drawn once (stable test ids), inputs drawn fresh per test from the test's seed
_r = random.Random(90)
for _ in range(8):
    _hkv = _r.choice([1, 2, 4])
    _sk = _r.randint(1, 1500)
    _sq = _r.choice([_sk, _r.randint(1, _sk), _r.randint(1, 1500)])
    CASES.append(_c(_r.randint(1, 3), _sq, _sk, _hkv * _r.choice([1, 2, 3]), _hkv, _r.choice([64, 128]),
                    _r.choice(["ls", "ls_het", "rules", "paper", "dense"]), _r.choice([64, 128]),
                    causal=_r.random() < 0.7))


def case_id(c):
    s = f"B{c['B']}-q{c['Sq']}-k{c['Sk']}-h{c['H']}.{c['Hkv']}-d{c['D']}-{c['pattern']}-bs{c['bs']}-" \
        f"{'causal' if c['causal'] else 'bidir'}-{c['layout']}"
    if c["q_offset"] is not None:
        s += f"-off{c['q_offset']}"
    if c["scale"] is not None:
        s += f"-scale{c['scale']}"
    return s


def run_case(c, dtype, gen, backend=SM90):
    B, Sq, Sk, H, Hkv, D = c["B"], c["Sq"], c["Sk"], c["H"], c["Hkv"], c["D"]
    pattern = pattern_of(c["pattern"], H, Hkv, c["bs"], c["causal"])
    q = randn(gen, (B, Sq, H, D), dtype, c["layout"])
    k = randn(gen, (B, Sk, Hkv, D), dtype, c["layout"])
    v = randn(gen, (B, Sk, Hkv, D), dtype, c["layout"])
    out = to_layout(torch.zeros(B, Sq, H, D, dtype=q.dtype, device=DEV), c["layout"]).fill_(float("nan"))
    lse = nan_like(q, torch.float32, (B, H, Sq))
    kw = dict(softmax_scale=c["scale"], q_offset=c["q_offset"])
    got, got_lse = s2attn.attention(q, k, v, pattern, return_lse=True, out=out, lse=lse, backend=backend, **kw)
    torch.cuda.synchronize()
    assert got is out and got_lse is lse
    return pattern, (q, k, v, kw), (out, lse)


def reference(c, q, k, v, pattern):
    scale = c["scale"] if c["scale"] is not None else 1.0 / math.sqrt(c["D"])
    mask = element_mask(pattern, c["Sq"], c["Sk"], c["q_offset"])
    ref_out, ref_lse = ref_attention(q, k, v, mask, scale)
    return ref_out, ref_lse, mask


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("c", CASES, ids=[case_id(c) for c in CASES])
def test_sm90_forward_matches_reference(c, dtype, gen):
    pattern, (q, k, v, kw), (out, lse) = run_case(c, dtype, gen)
    ref_out, ref_lse, mask = reference(c, q, k, v, pattern)
    check("out", out, ref_out, OUT_TOL)
    check("lse", lse, ref_lse, LSE_TOL)
    empty = ~mask.any(dim=-1)  # [H, Sq]: rows that see nothing are exactly 0 and -inf
    if empty.any():
        e = empty.transpose(0, 1)[None].expand(out.shape[0], -1, -1)  # [B, Sq, H]
        assert torch.all(out[e] == 0)
        assert torch.all(torch.isneginf(lse.permute(0, 2, 1)[e]))


@pytest.mark.parametrize("c", CASES[::4], ids=[case_id(c) for c in CASES[::4]])
def test_auto_on_sm90_is_the_hopper_path(c, gen):
    pattern, (q, k, v, kw), (out, lse) = run_case(c, "bf16", gen)
    auto_out, auto_lse = s2attn.attention(q, k, v, pattern, return_lse=True, **kw)
    torch.cuda.synchronize()
    assert torch.equal(auto_out, out) and torch.equal(auto_lse, lse)


VARLEN_CASES = [
    # (lens_q, lens_k, H, Hkv, D, pattern, bs, causal, layout, q_offset)
    ([1, 17, 0, 77, 203, 64], [1, 17, 0, 77, 203, 64], 4, 2, 128, "ls", 64, True, "thd", None),
    ([5, 40, 1, 100], [50, 20, 1, 300], 4, 1, 64, "ls_het", 128, True, "thd", None),
    ([33, 1, 250], [33, 300, 250], 8, 2, 128, "rules", 64, True, "htd", None),
    ([77, 130], [100, 130], 4, 4, 64, "ls_rel", 128, False, "thd", None),
    ([10, 20], [200, 300], 4, 2, 64, "ls", 64, True, "thd", 100),
    ([1000, 3], [1000, 2000], 2, 2, 128, "paper", 64, True, "thd", None),
    ([300, 0, 1200, 129, 128], [300, 5, 1200, 129, 400], 8, 2, 128, "paper", 128, True, "thd", None),
]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("vc", VARLEN_CASES, ids=[f"varlen{i}" for i in range(len(VARLEN_CASES))])
def test_sm90_varlen_matches_reference(vc, dtype, gen):
    lens_q, lens_k, H, Hkv, D, kind, bs, causal, layout, q_offset = vc
    pattern = pattern_of(kind, H, Hkv, bs, causal)
    cu_q = torch.tensor([0] + list(np.cumsum(lens_q)), dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0] + list(np.cumsum(lens_k)), dtype=torch.int32, device=DEV)
    Tq, Tk = sum(lens_q), sum(lens_k)
    q = randn(gen, (Tq, H, D), dtype, layout)
    k = randn(gen, (Tk, Hkv, D), dtype, layout)
    v = randn(gen, (Tk, Hkv, D), dtype, layout)
    out = nan_like(q, shape=(Tq, H, D))
    lse = nan_like(q, torch.float32, (H, Tq))
    s2attn.attention(q, k, v, pattern, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, q_offset=q_offset, return_lse=True,
                     out=out, lse=lse, backend=SM90)
    torch.cuda.synchronize()
    ref_out = torch.zeros(Tq, H, D, dtype=torch.float64, device=DEV)
    ref_lse = torch.full((H, Tq), -math.inf, dtype=torch.float64, device=DEV)
    q0 = k0 = 0
    for sq, sk in zip(lens_q, lens_k):
        if sq:
            m = element_mask(pattern, sq, sk, q_offset)
            o, l = ref_attention(q[None, q0:q0 + sq], k[None, k0:k0 + sk], v[None, k0:k0 + sk], m, 1 / math.sqrt(D))
            ref_out[q0:q0 + sq] = o[0]
            ref_lse[:, q0:q0 + sq] = l[0]
        q0, k0 = q0 + sq, k0 + sk
    check("out", out, ref_out, OUT_TOL)
    check("lse", lse, ref_lse, LSE_TOL)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_sm90_rows_without_visible_keys_give_zero_and_neg_inf(dtype, gen):
    H, D, bs = 4, 128, 64
    pattern = s2attn.local_stride(H, bs, 2, 1024, causal=True, head_sliding_offset=1)  # no vertical block < 1023
    q = randn(gen, (1, 40, H, D), dtype)
    k = randn(gen, (1, 50, H, D), dtype)
    v = randn(gen, (1, 50, H, D), dtype)
    out, lse = s2attn.attention(q, k, v, pattern, q_offset=50 + 4 * bs, return_lse=True, out=nan_like(q),
                                lse=nan_like(q, torch.float32, (1, H, 40)), backend=SM90)
    torch.cuda.synchronize()
    assert torch.all(out == 0)
    assert torch.all(torch.isneginf(lse))


def test_sm90_matches_portable_path(gen):
    pattern = make_pattern("paper", 8, 2, 64, True)
    q = randn(gen, (1, 3000, 8, 128), "bf16")
    k = randn(gen, (1, 3000, 2, 128), "bf16")
    v = randn(gen, (1, 3000, 2, 128), "bf16")
    a, la = s2attn.attention(q, k, v, pattern, return_lse=True, backend=SM90)
    b, lb = s2attn.attention(q, k, v, pattern, return_lse=True, backend="cuda_sm80")
    torch.cuda.synchronize()
    check("out vs sm80", a, b, OUT_TOL)
    check("lse vs sm80", la, lb, LSE_TOL)


def test_sm90_runs_on_the_current_stream_and_is_deterministic(gen):
    pattern = make_pattern("paper", 8, 2, 64, True)
    q = randn(gen, (1, 2048, 8, 128), "bf16")
    k = randn(gen, (1, 2048, 2, 128), "bf16")
    v = randn(gen, (1, 2048, 2, 128), "bf16")
    want = s2attn.attention(q, k, v, pattern, backend=SM90)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out = torch.full_like(q, float("nan"))
        s2attn.attention(q, k, v, pattern, out=out, backend=SM90)
        got = out.clone()  # ordered after the kernel only if it ran on `s`
    torch.cuda.synchronize()
    assert torch.equal(got, want)


@pytest.mark.parametrize("bs,D,dtype", [(32, 128, "bf16"), (16, 64, "fp16")])
def test_what_the_hopper_path_does_not_serve(bs, D, dtype, gen):
    q, k, v = (randn(gen, (1, 100, 2, D), dtype) for _ in range(3))
    pattern = s2attn.local_stride(2, bs, 2, 3)
    with pytest.raises(s2attn.UnsupportedError):
        s2attn.attention(q, k, v, pattern, backend=SM90)
    out = s2attn.attention(q, k, v, pattern)  # auto: the portable path serves it
    torch.cuda.synchronize()
    ref, _ = ref_attention(q, k, v, element_mask(pattern, 100, 100), 1 / math.sqrt(D))
    check("out (auto fallback)", out, ref, OUT_TOL)


# ---------------------------------------------------------------------------------------------------------
# the persistent grid's schedule: with at least four waves of units (4 x 132 on an H100) each CTA takes its
# next unit from a counter;
# S2ATTN_SM90_STATIC_SCHEDULE=1 (read per call) gives the static stride. Every unit is computed by one CTA
# either way, so the two schedules must give the same bits, and both the reference's values.


def _both_schedules(monkeypatch, fn):
    monkeypatch.delenv("S2ATTN_SM90_STATIC_SCHEDULE", raising=False)
    dynamic = fn()
    monkeypatch.setenv("S2ATTN_SM90_STATIC_SCHEDULE", "1")
    static = fn()
    monkeypatch.delenv("S2ATTN_SM90_STATIC_SCHEDULE")
    torch.cuda.synchronize()
    return dynamic, static


@pytest.mark.parametrize("B,S,H,Hkv,D,kind", [(2, 3001, 16, 4, 128, "paper"), (1, 4099, 24, 24, 64, "ls_het"),
                                              (3, 700, 32, 8, 128, "dense")])  # 768, 792, 576 units
def test_sm90_dynamic_schedule_equals_static_and_reference(B, S, H, Hkv, D, kind, gen, monkeypatch):
    pattern = pattern_of(kind, H, Hkv, 64, True)
    q = randn(gen, (B, S, H, D), "bf16")
    k = randn(gen, (B, S, Hkv, D), "bf16")
    v = randn(gen, (B, S, Hkv, D), "bf16")

    def run():
        out, lse = nan_like(q), nan_like(q, torch.float32, (B, H, S))
        return s2attn.attention(q, k, v, pattern, return_lse=True, out=out, lse=lse, backend=SM90)

    (out, lse), (out_s, lse_s) = _both_schedules(monkeypatch, run)
    assert torch.equal(out, out_s) and torch.equal(lse, lse_s)
    ref_out, ref_lse = ref_attention(q[:1], k[:1], v[:1], element_mask(pattern, S, S), 1 / math.sqrt(D))
    check("out", out[:1], ref_out, OUT_TOL)
    check("lse", lse[:1], ref_lse, LSE_TOL)


def test_sm90_dynamic_schedule_varlen_many_sequences(gen, monkeypatch):
    # 60 sequences of mixed lengths (empty ones too): the device-side cursor over sequences under the
    # counter's order, and a grid sized from an upper bound on the units
    r = random.Random(7)
    lens = [r.choice([0, 1, 63, 64, 65, 127, 129, 300, 700]) for _ in range(60)]
    H, Hkv, D = 8, 2, 128
    pattern = pattern_of("paper", H, Hkv, 64, True)
    cu = torch.tensor([0] + list(np.cumsum(lens)), dtype=torch.int32, device=DEV)
    T = sum(lens)
    q = randn(gen, (T, H, D), "bf16")
    k = randn(gen, (T, Hkv, D), "bf16")
    v = randn(gen, (T, Hkv, D), "bf16")

    def run():
        out, lse = nan_like(q, shape=(T, H, D)), nan_like(q, torch.float32, (H, T))
        return s2attn.attention(q, k, v, pattern, cu_seqlens_q=cu, cu_seqlens_k=cu, return_lse=True, out=out,
                                lse=lse, backend=SM90)

    (out, lse), (out_s, lse_s) = _both_schedules(monkeypatch, run)
    assert torch.equal(out, out_s) and torch.equal(lse, lse_s)
    t0 = 0
    for n in lens:
        if n:
            o, l = ref_attention(q[None, t0:t0 + n], k[None, t0:t0 + n], v[None, t0:t0 + n],
                                 element_mask(pattern, n, n), 1 / math.sqrt(D))
            check("out", out[t0:t0 + n], o[0], OUT_TOL)
            check("lse", lse[:, t0:t0 + n], l[0], LSE_TOL)
        t0 += n


def test_sm90_dynamic_schedule_under_graph_capture(gen):
    # the counter is stream-ordered scratch, allocated and zeroed inside the captured region: each replay
    # starts from zero
    pattern = make_pattern("paper", 32, 8, 64, True)  # 32 tiles x 32 heads: 1024 units
    q = randn(gen, (1, 4096, 32, 128), "bf16")
    k = randn(gen, (1, 4096, 8, 128), "bf16")
    v = randn(gen, (1, 4096, 8, 128), "bf16")
    want = s2attn.attention(q, k, v, pattern, backend=SM90)
    out = torch.full_like(q, float("nan"))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        s2attn.attention(q, k, v, pattern, out=out, backend=SM90)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        s2attn.attention(q, k, v, pattern, out=out, backend=SM90)
    for _ in range(3):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, want)

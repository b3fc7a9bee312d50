"""Forward numerics against the float64 dense masked reference: many shapes, dtypes, layouts, patterns,
varlen, rows with no visible key, and preallocated (NaN-poisoned) outputs."""

import numpy as np
import pytest

import s2attn

import cases
import helpers as H_
from helpers import DTYPES, LSE_TOL, TOL, assert_close, assert_no_nan, randn
from helpers import VARLEN_CASES, build_empty_case, empty_row_cases, varlen_inputs
from reference import RefPattern, attention_ref, element_mask, varlen_ref


@pytest.mark.parametrize("c", H_.case_params())
def test_forward_matches_reference(c, rng):
    spec, ref, m, q, k, v = H_.build_case(c, rng)
    p = cases.lib_from_spec(spec)
    out, lse = s2attn.attention(q, k, v, p, softmax_scale=c["scale"], q_offset=c["q_offset"], return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == (c["B"], c["H"], c["Sq"]) and lse.dtype == np.float32
    ro, rl, _ = attention_ref(q, k, v, m, c["scale"])
    assert_no_nan(out=out, lse=lse)
    assert_close("out", out, ro, TOL[c["dtype"]])
    assert_close("lse", lse, rl, LSE_TOL[c["dtype"]])
    # without return_lse only out comes back, and it is the same
    out2 = s2attn.attention(q, k, v, p, softmax_scale=c["scale"], q_offset=c["q_offset"])
    assert isinstance(out2, np.ndarray)
    assert np.array_equal(H_.f64(out2), H_.f64(out))


def test_default_scale_is_inverse_sqrt_d(rng):
    q = randn(rng, (1, 30, 2, 64), "f32")
    k = randn(rng, (1, 30, 2, 64), "f32")
    v = randn(rng, (1, 30, 2, 64), "f32")
    p = s2attn.local_stride(2, block_size=16, local_blocks=1, vert_stride=2)
    a = s2attn.attention(q, k, v, p)
    b = s2attn.attention(q, k, v, p, softmax_scale=1 / 8)
    assert H_.rel_err(a, b) < 1e-6
    c = s2attn.attention(q, k, v, p, softmax_scale=0.5)
    assert H_.rel_err(a, c) > 1e-3


# ---------------------------------------------------------------------------------------------------------
# varlen

@pytest.mark.parametrize("vc", VARLEN_CASES, ids=lambda vc: f"{vc[5]}-{vc[7]}-{'c' if vc[6] else 'b'}-{vc[0]}")
def test_varlen_forward(vc, rng):
    spec, cu_q, cu_k, q, k, v = varlen_inputs(rng, *vc)
    dtype = vc[5]
    p = cases.lib_from_spec(spec)
    out, lse = s2attn.attention(q, k, v, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True)
    assert out.shape == q.shape and lse.shape == (q.shape[1], q.shape[0])
    ro, rl = varlen_ref(q, k, v, cu_q, cu_k, cases.ref_from_spec(spec))
    assert_no_nan(out=out, lse=lse)
    assert_close("out", out, ro, TOL[dtype])
    assert_close("lse", lse, rl, LSE_TOL[dtype])


def test_varlen_equals_batched(rng):
    """Equal-length varlen is the batched call."""
    B, S, H, Hkv, D = 3, 45, 4, 2, 32
    p = s2attn.local_stride(H, block_size=16, local_blocks=1, vert_stride=3, num_kv_heads=Hkv)
    q = randn(rng, (B, S, H, D), "f32")
    k = randn(rng, (B, S, Hkv, D), "f32")
    v = randn(rng, (B, S, Hkv, D), "f32")
    out, lse = s2attn.attention(q, k, v, p, return_lse=True)
    cu = np.arange(0, (B + 1) * S, S, dtype=np.int32)
    vo, vl = s2attn.attention(q.reshape(B * S, H, D), k.reshape(B * S, Hkv, D), v.reshape(B * S, Hkv, D), p,
                              cu_seqlens_q=cu, cu_seqlens_k=cu, return_lse=True)
    assert H_.rel_err(vo, out.reshape(B * S, H, D)) < 1e-6
    assert H_.rel_err(vl, lse.transpose(1, 0, 2).reshape(H, B * S)) < 1e-6


# ---------------------------------------------------------------------------------------------------------
# rows with no visible key

@pytest.mark.parametrize("e", empty_row_cases(), ids=lambda e: e["name"])
def test_rows_without_keys_forward(e, rng):
    dtype, spec, m, empty, q, k, v = build_empty_case(e, rng)
    p = cases.lib_from_spec(spec)
    out, lse = s2attn.attention(q, k, v, p, return_lse=True)
    assert_no_nan(out=out, lse=lse)
    o = H_.f64(out)
    for b in range(e["B"]):
        for h in range(e["H"]):
            rows = np.nonzero(empty[h])[0]
            assert np.all(o[b, rows, h] == 0), f"batch {b} head {h}: empty rows not 0"
            assert np.all(np.isneginf(lse[b, h, rows])), f"batch {b} head {h}: empty rows' lse not -inf"
            assert np.isfinite(lse[b, h, ~empty[h]]).all()
    ro, rl, _ = attention_ref(q, k, v, m)
    assert_close("out", out, ro, TOL[dtype])
    assert_close("lse", lse, rl, LSE_TOL[dtype])


# ---------------------------------------------------------------------------------------------------------
# preallocated outputs are written everywhere (NaN poison)

def test_poisoned_out_and_lse_fully_written(rng):
    B, Sq, Sk, H, Hkv, D = 2, 70, 70, 4, 2, 32
    p = s2attn.local_stride(H, block_size=16, local_blocks=1, vert_stride=3, num_kv_heads=Hkv)
    q = randn(rng, (B, Sq, H, D), "f32")
    k = randn(rng, (B, Sk, Hkv, D), "f32")
    v = randn(rng, (B, Sk, Hkv, D), "f32")
    out = np.full((B, Sq, H, D), np.nan, np.float32)
    lse = np.full((B, H, Sq), np.nan, np.float32)
    res = s2attn.attention(q, k, v, p, out=out, lse=lse, return_lse=True)
    assert_no_nan(out=out, lse=lse)
    assert np.isfinite(lse).all()
    ref = RefPattern(num_heads=H, num_kv_heads=Hkv, block_size=16, local_blocks=1, vert_stride=3)
    ro, rl, _ = attention_ref(q, k, v, element_mask(ref, Sq, Sk))
    assert_close("out", out, ro, TOL["f32"])
    assert_close("lse", lse, rl, LSE_TOL["f32"])
    ro2, rl2 = res
    assert np.array_equal(ro2, out) and np.array_equal(rl2, lse)


@pytest.mark.parametrize("e", empty_row_cases(), ids=lambda e: e["name"])
def test_poisoned_outputs_with_empty_rows(e, rng):
    dtype, spec, m, empty, q, k, v = build_empty_case(e, rng)
    p = cases.lib_from_spec(spec)
    out = np.full(q.shape, np.nan, np.float32).astype(DTYPES[dtype])
    lse = np.full((e["B"], e["H"], e["Sq"]), np.nan, np.float32)
    s2attn.attention(q, k, v, p, out=out, lse=lse, return_lse=True)
    assert_no_nan(out=out, lse=lse)
    ro, rl, _ = attention_ref(q, k, v, m)
    assert_close("out", out, ro, TOL[dtype])
    assert_close("lse", lse, rl, LSE_TOL[dtype])


def test_poisoned_noncontiguous_out_varlen(rng):
    qlens, klens = [3, 1, 50], [3, 80, 60]
    spec, cu_q, cu_k, q, k, v = varlen_inputs(rng, qlens, klens, 4, 2, 32, "f32", True, "ls", 16, "bshd")
    p = cases.lib_from_spec(spec)
    T = q.shape[0]
    out = H_.to_layout(np.full((T, 4, 32), np.nan, np.float32), "htd")
    lse = np.full((4, T), np.nan, np.float32)
    s2attn.attention(q, k, v, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, out=out, lse=lse)
    assert_no_nan(out=out, lse=lse)
    ro, rl = varlen_ref(q, k, v, cu_q, cu_k, cases.ref_from_spec(spec))
    assert_close("out", out, ro, TOL["f32"])
    assert_close("lse", lse, rl, LSE_TOL["f32"])


# ---------------------------------------------------------------------------------------------------------
# misc

def test_thread_counts_agree(rng):
    q = randn(rng, (2, 150, 4, 64), "f32")
    k = randn(rng, (2, 150, 2, 64), "f32")
    v = randn(rng, (2, 150, 2, 64), "f32")
    p = s2attn.local_stride(4, block_size=16, local_blocks=2, vert_stride=3, num_kv_heads=2)
    a = s2attn.attention(q, k, v, p, num_threads=1)
    b = s2attn.attention(q, k, v, p, num_threads=2)
    c = s2attn.attention(q, k, v, p)
    assert H_.rel_err(a, b) < 1e-6 and H_.rel_err(a, c) < 1e-6


def test_torch_tensors_if_available(rng):
    torch = pytest.importorskip("torch")
    q = randn(rng, (1, 40, 2, 32), "f32")
    k = randn(rng, (1, 40, 2, 32), "f32")
    v = randn(rng, (1, 40, 2, 32), "f32")
    p = s2attn.local_stride(2, block_size=16, local_blocks=1, vert_stride=2)
    a = s2attn.attention(q, k, v, p)
    t = s2attn.attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), p)
    assert isinstance(t, torch.Tensor)
    assert np.array_equal(t.numpy(), a)

"""Bad input: every invalid argument raises a typed error whose message (and `.argument`) names it."""
import numpy as np
import pytest

import s2attn

from helpers import DTYPES

B, S, H, HKV, D = 1, 40, 4, 2, 32


def expect(exc, names, fn, *args, **kw):
    """fn(*args, **kw) raises `exc`; its .argument contains one of `names` and the message names it too."""
    names = (names,) if isinstance(names, str) else tuple(names)
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    arg = getattr(e.value, "argument", None)
    msg = str(e.value)
    assert arg is not None, f"no .argument on {type(e.value).__name__}: {msg}"
    assert any(n in arg for n in names), f".argument is {arg!r}, expected one of {names}; message: {msg}"
    assert arg in msg, f"message does not name {arg!r}: {msg}"
    assert msg.startswith(f"invalid argument '{arg}'"), msg
    return e.value


def inputs(dtype="f32", b=B, sq=S, sk=S, h=H, hkv=HKV, d=D):
    rng = np.random.default_rng(0)
    t = DTYPES[dtype]
    q = rng.standard_normal((b, sq, h, d)).astype(np.float32).astype(t)
    k = rng.standard_normal((b, sk, hkv, d)).astype(np.float32).astype(t)
    v = rng.standard_normal((b, sk, hkv, d)).astype(np.float32).astype(t)
    return q, k, v


def pat(h=H, hkv=HKV, bs=16):
    return s2attn.local_stride(h, block_size=bs, local_blocks=2, vert_stride=3, num_kv_heads=hkv)


IAE = s2attn.InvalidArgumentError
DTE = s2attn.DTypeError


def test_error_hierarchy():
    assert issubclass(IAE, s2attn.S2AttnError) and issubclass(IAE, ValueError)
    assert issubclass(DTE, IAE) and issubclass(DTE, TypeError)
    assert issubclass(s2attn.UnsupportedError, s2attn.S2AttnError)
    assert issubclass(s2attn.UnsupportedError, NotImplementedError)


def test_valid_baseline_runs():
    q, k, v = inputs()
    out = s2attn.attention(q, k, v, pat())
    assert out.shape == q.shape


# ---------------------------------------------------------------------------------------------------------
# shapes

def test_q_rank():
    q, k, v = inputs()
    expect(IAE, "q", s2attn.attention, q[0], k, v, pat())
    expect(IAE, "q", s2attn.attention, q[..., None], k, v, pat())


def test_k_v_rank():
    q, k, v = inputs()
    expect(IAE, "k", s2attn.attention, q, k[0], v, pat())
    expect(IAE, "v", s2attn.attention, q, k, v[0], pat())


def test_batch_mismatch():
    q, _, _ = inputs()
    _, k, v = inputs(b=2)
    expect(IAE, ("k", "v"), s2attn.attention, q, k, v, pat())
    _, k1, v1 = inputs()
    expect(IAE, "v", s2attn.attention, q, k1, v, pat())


def test_head_dim_mismatch():
    q, k, v = inputs()
    _, k2, v2 = inputs(d=16)
    expect(IAE, "k", s2attn.attention, q, k2, v, pat())
    expect(IAE, "v", s2attn.attention, q, k, v2, pat())


def test_seqlen_k_mismatch_between_k_and_v():
    q, k, _ = inputs()
    _, _, v = inputs(sk=S - 1)
    expect(IAE, "v", s2attn.attention, q, k, v, pat())


def test_kv_heads_mismatch():
    q, k, v = inputs()
    _, _, v1 = inputs(hkv=1)
    expect(IAE, "v", s2attn.attention, q, k, v1, pat())
    _, k3, v3 = inputs(hkv=3)  # 4 q heads are not a multiple of 3 kv heads
    expect(IAE, ("k", "num_kv_heads", "pattern"), s2attn.attention, q, k3, v3, pat())


def test_q_heads_not_pattern_heads():
    q, k, v = inputs()
    expect(IAE, ("q", "pattern"), s2attn.attention, q, k, v, pat(h=8, hkv=2))


def test_pattern_not_a_pattern():
    q, k, v = inputs()
    expect(IAE, "pattern", s2attn.attention, q, k, v, "local_stride")


def test_out_and_lse_wrong_shape():
    q, k, v = inputs()
    expect(IAE, "out", s2attn.attention, q, k, v, pat(), out=np.empty((B, S - 1, H, D), np.float32))
    expect(IAE, "out", s2attn.attention, q, k, v, pat(), out=np.empty((B, S, H), np.float32))
    expect(IAE, "lse", s2attn.attention, q, k, v, pat(), lse=np.empty((B, S, H), np.float32), return_lse=True)
    expect(IAE, "lse", s2attn.attention, q, k, v, pat(), lse=np.empty((B, H, S + 1), np.float32), return_lse=True)


# ---------------------------------------------------------------------------------------------------------
# dtypes

def test_integer_and_float64_inputs():
    q, k, v = inputs()
    expect(DTE, "q", s2attn.attention, q.astype(np.int32), k, v, pat())
    expect(DTE, "q", s2attn.attention, q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), pat())
    expect(DTE, "k", s2attn.attention, q, k.astype(np.int64), v, pat())


def test_mixed_dtypes():
    q, k, v = inputs()
    expect(DTE, "k", s2attn.attention, q, k.astype(np.float16), v, pat())
    expect(DTE, "v", s2attn.attention, q, k, v.astype(DTYPES["bf16"]), pat())
    qb, kb, vb = inputs("bf16")
    expect(DTE, ("k", "v"), s2attn.attention, qb, kb.astype(np.float16), vb.astype(np.float16), pat())


def test_out_and_lse_dtype():
    q, k, v = inputs()
    expect(DTE, "out", s2attn.attention, q, k, v, pat(), out=np.empty(q.shape, np.float16))
    expect(DTE, "lse", s2attn.attention, q, k, v, pat(), lse=np.empty((B, H, S), np.float64), return_lse=True)


# ---------------------------------------------------------------------------------------------------------
# strides

def test_last_dim_not_contiguous():
    q, k, v = inputs()
    qs = np.repeat(q, 2, axis=-1)[..., ::2]
    assert qs.strides[-1] != qs.itemsize and np.array_equal(qs, q)
    expect(IAE, "q", s2attn.attention, qs, k, v, pat())
    ks = np.repeat(k, 2, axis=-1)[..., ::2]
    expect(IAE, "k", s2attn.attention, q, ks, v, pat())
    out = np.empty(q.shape[:-1] + (2 * D,), np.float32)[..., ::2]
    expect(IAE, "out", s2attn.attention, q, k, v, pat(), out=out)


@pytest.mark.skip(reason="device mismatch needs a GPU tensor; this suite runs on CPU")
def test_device_mismatch():
    pass


# ---------------------------------------------------------------------------------------------------------
# pattern parameters

@pytest.mark.parametrize("bs", [0, 8, 48, 96, 256, -64])
def test_block_size(bs):
    expect(IAE, "block_size", s2attn.local_stride, 4, block_size=bs, local_blocks=2, vert_stride=2)
    expect(IAE, "block_size", s2attn.dense, 4, block_size=bs)
    expect(IAE, "block_size", s2attn.block_mask_pattern, np.ones((1, 4, 4), np.uint8), 4, block_size=bs)


@pytest.mark.parametrize("L", [0, -1])
def test_local_blocks(L):
    expect(IAE, "local_blocks", s2attn.local_stride, 4, block_size=16, local_blocks=L, vert_stride=2)


@pytest.mark.parametrize("V", [0, -3])
def test_vert_stride(V):
    expect(IAE, "vert_stride", s2attn.local_stride, 4, block_size=16, local_blocks=2, vert_stride=V)


def test_num_kv_heads_divides_num_heads():
    expect(IAE, ("num_kv_heads", "num_heads"), s2attn.local_stride, 6, block_size=16, local_blocks=2,
           vert_stride=2, num_kv_heads=4)
    expect(IAE, ("num_kv_heads", "num_heads"), s2attn.dense, 6, block_size=16, num_kv_heads=4)
    expect(IAE, ("num_kv_heads", "num_heads"), s2attn.block_mask_pattern, np.ones((1, 4, 4), np.uint8), 6,
           block_size=16, num_kv_heads=4)


def test_num_dense_heads_and_vert_position():
    expect(IAE, "num_dense_heads", s2attn.local_stride, 4, block_size=16, local_blocks=2, vert_stride=2,
           num_kv_heads=2, num_dense_heads=3)
    expect(IAE, "vert_position", s2attn.local_stride, 4, block_size=16, local_blocks=2, vert_stride=2,
           causal=False, vert_position="diagonal")


def test_rule_arguments():
    p = pat()
    expect(IAE, "stride", p.with_range, 0, 4, stride=0)
    expect(IAE, "heads", p.with_dense_heads, [HKV])  # pattern heads are the 2 KV heads


def test_block_mask_shape():
    expect(IAE, "mask", s2attn.block_mask_pattern, np.ones(4, np.uint8), 4, block_size=16)
    expect(IAE, "mask", s2attn.block_mask_pattern, np.ones((1, 1, 4, 4), np.uint8), 4, block_size=16)
    # heads must be 1, num_kv_heads (2) or num_heads (8)
    expect(IAE, "mask", s2attn.block_mask_pattern, np.ones((3, 4, 4), np.uint8), 8, block_size=16,
           num_kv_heads=2)


def test_block_mask_smaller_than_sequence():
    q, k, v = inputs(sq=S, sk=S)  # 40 tokens, block 16: 3 row and column blocks needed
    rows = s2attn.block_mask_pattern(np.ones((1, 2, 3), np.uint8), H, block_size=16, num_kv_heads=HKV)
    expect(IAE, ("mask", "pattern"), s2attn.attention, q, k, v, rows)
    cols = s2attn.block_mask_pattern(np.ones((1, 3, 2), np.uint8), H, block_size=16, num_kv_heads=HKV)
    expect(IAE, ("mask", "pattern"), s2attn.attention, q, k, v, cols)
    ok = s2attn.block_mask_pattern(np.ones((1, 3, 3), np.uint8), H, block_size=16, num_kv_heads=HKV)
    s2attn.attention(q, k, v, ok)


# ---------------------------------------------------------------------------------------------------------
# varlen

def varlen_inputs(cu=(0, 10, 25, 40)):
    q, k, v = inputs()
    return q[0], k[0], v[0], np.array(cu, np.int32)


def test_cu_seqlens_not_increasing():
    q, k, v, _ = varlen_inputs()
    bad = np.array([0, 25, 10, 40], np.int32)
    good = np.array([0, 10, 25, 40], np.int32)
    expect(IAE, "cu_seqlens_q", s2attn.attention, q, k, v, pat(), cu_seqlens_q=bad, cu_seqlens_k=good)
    expect(IAE, "cu_seqlens_k", s2attn.attention, q, k, v, pat(), cu_seqlens_q=good, cu_seqlens_k=bad)


def test_cu_seqlens_wrong_length_or_range():
    q, k, v, cu = varlen_inputs()
    expect(IAE, "cu_seqlens", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu,
           cu_seqlens_k=np.array([0, 10, 40], np.int32))
    expect(IAE, "cu_seqlens_q", s2attn.attention, q, k, v, pat(), cu_seqlens_q=np.array([0, 10, 25, 41], np.int32),
           cu_seqlens_k=cu)
    expect(IAE, "cu_seqlens_q", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu.reshape(1, 4), cu_seqlens_k=cu)
    expect(IAE, "cu_seqlens", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu)


def test_cu_seqlens_dtype():
    q, k, v, cu = varlen_inputs()
    expect(DTE, "cu_seqlens_q", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu.astype(np.int64), cu_seqlens_k=cu)
    expect(DTE, "cu_seqlens_k", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu,
           cu_seqlens_k=cu.astype(np.float32))


def test_varlen_lse_shape():
    q, k, v, cu = varlen_inputs()
    expect(IAE, "lse", s2attn.attention, q, k, v, pat(), cu_seqlens_q=cu, cu_seqlens_k=cu,
           lse=np.empty((B, H, S), np.float32), return_lse=True)


# ---------------------------------------------------------------------------------------------------------
# backward

def test_backward_bad_arguments():
    q, k, v = inputs()
    p = pat()
    out, lse = s2attn.attention(q, k, v, p, return_lse=True)
    dout = np.ones_like(q)
    expect(IAE, "dout", s2attn.attention_backward, dout[:, :-1], q, k, v, out, lse, p)
    expect(DTE, "dout", s2attn.attention_backward, dout.astype(np.float16), q, k, v, out, lse, p)
    expect(IAE, "lse", s2attn.attention_backward, dout, q, k, v, out, lse[:, :, :-1], p)
    expect(IAE, "out", s2attn.attention_backward, dout, q, k, v, out[:, :-1], lse, p)
    expect(IAE, "dq", s2attn.attention_backward, dout, q, k, v, out, lse, p, dq=np.empty((B, S, H, D + 1), np.float32))
    expect(IAE, "dk", s2attn.attention_backward, dout, q, k, v, out, lse, p, dk=np.empty((B, S, H, D), np.float32))
    expect(DTE, "dv", s2attn.attention_backward, dout, q, k, v, out, lse, p, dv=np.empty(v.shape, np.float16))
    expect(IAE, ("q", "pattern"), s2attn.attention_backward, dout, q, k, v, out, lse, pat(h=8, hkv=2))


def test_q_offset_range():
    q, k, v = inputs()
    expect(IAE, "q_offset", s2attn.attention, q, k, v, pat(), q_offset=-1)
    expect(IAE, "q_offset", s2attn.attention, q, k, v, pat(), q_offset=2**31)  # positions are 32-bit in the kernels
    expect(IAE, "q_offset", s2attn.attention, q, k, v, pat(), q_offset=2**30 - S + 1)
    assert s2attn.attention(q, k, v, pat(), q_offset=2**30 - S).shape == q.shape  # the largest allowed

"""Self-tests of the numpy reference (no s2attn needed): the two transcriptions of the pattern agree, the
hand cases hold, the softmax is a softmax and the analytic gradients match float64 finite differences."""
import numpy as np
import pytest

from reference import (RangeRule, RefPattern, attention_grad_ref, attention_ref, element_mask, rel_err,
                       varlen_ref)
import cases


def rows(bm, h, i):
    return set(np.nonzero(bm[h, i])[0].tolist())


@pytest.mark.parametrize("idx", range(60))
def test_scalar_and_vectorised_transcriptions_agree(idx):
    rng = np.random.default_rng(9000 + idx)
    spec = cases.random_pattern_spec(rng)
    ref = cases.ref_from_spec(spec)
    nq, nk, q0 = cases.random_grid(rng, spec)
    bm = ref.block_mask(nq, nk, q0)
    for h in range(ref.num_heads):
        for i in range(nq):
            for j in range(nk):
                assert bm[h, i, j] == ref.attends(h, q0 + i, j), (spec, h, q0 + i, j)


@pytest.mark.parametrize("case", cases.HAND_CASES, ids=[c[0] for c in cases.HAND_CASES])
def test_hand_cases(case):
    _, spec, expected = case
    ref = cases.ref_from_spec(spec)
    n = cases.hand_grid(expected)
    bm = ref.block_mask(n, n)
    for (h, i), cols in expected.items():
        assert rows(bm, h, i) == cols, (h, i)


def test_softmax_rows_sum_to_one_and_empty_rows():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 40, 4, 16))
    k = rng.standard_normal((2, 25, 2, 16))
    v = rng.standard_normal((2, 25, 2, 16))
    pat = RefPattern(num_heads=4, num_kv_heads=2, block_size=16, local_blocks=1, vert_stride=2)
    m = element_mask(pat, 40, 25)  # Sq > Sk, causal: the first 15 rows see nothing
    assert not m[:, :15].any() and m[:, 15:].any(axis=-1).all()
    out, lse, p = attention_ref(q, k, v, m)
    s = p.sum(-1)
    assert np.allclose(s[:, :, 15:], 1.0) and np.all(s[:, :, :15] == 0)
    assert np.all(out[:, :15] == 0) and np.all(np.isneginf(lse[:, :, :15]))
    assert np.isfinite(lse[:, :, 15:]).all()
    # lse is log sum exp of the visible scaled scores
    g = 2
    s_ = np.einsum("qhd,khd->hqk", q[0], np.repeat(k[0], g, axis=1)) / 4.0
    r = 30
    want = np.log(np.exp(s_[1, r][m[1, r]]).sum())
    assert abs(lse[0, 1, r] - want) < 1e-12


def test_dense_reference_equals_plain_softmax():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 7, 2, 8))
    k = rng.standard_normal((1, 7, 2, 8))
    v = rng.standard_normal((1, 7, 2, 8))
    pat = RefPattern(num_heads=2, block_size=16, kind="dense", causal=True)
    out, _, _ = attention_ref(q, k, v, element_mask(pat, 7, 7), scale=0.5)
    for h in range(2):
        s = q[0, :, h] @ k[0, :, h].T * 0.5
        s = np.where(np.tril(np.ones((7, 7), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        assert np.allclose(out[0, :, h], p @ v[0, :, h], atol=1e-13)


def test_element_mask_alignment():
    pat = RefPattern(num_heads=1, block_size=16, kind="dense", causal=True)
    m = element_mask(pat, 3, 10)  # decode-like: rows at positions 7, 8, 9
    assert m[0].sum(-1).tolist() == [8, 9, 10]
    m = element_mask(pat, 3, 10, q_offset=2)
    assert m[0].sum(-1).tolist() == [3, 4, 5]
    # local window of 1 block: position 17 (block 1) sees keys 16, 17 only
    pat = RefPattern(num_heads=1, block_size=16, local_blocks=1, vert_stride=100, head_sliding_offset=1)
    m = element_mask(pat, 1, 18)
    assert np.nonzero(m[0, 0])[0].tolist() == [16, 17]


@pytest.mark.parametrize("gqa", [1, 2])
def test_gradient_reference_against_finite_differences(gqa):
    rng = np.random.default_rng(3 + gqa)
    H, Hkv = 2 * gqa, 2
    q = rng.standard_normal((1, 9, H, 4))
    k = rng.standard_normal((1, 12, Hkv, 4))
    v = rng.standard_normal((1, 12, Hkv, 4))
    w = rng.standard_normal((1, 9, H, 4))
    pat = RefPattern(num_heads=H, num_kv_heads=Hkv, block_size=16, local_blocks=1, vert_stride=2)
    m = element_mask(pat, 9, 12)
    dq, dk, dv = attention_grad_ref(q, k, v, w, m)
    eps = 1e-6
    for name, x, g in (("q", q, dq), ("k", k, dk), ("v", v, dv)):
        u = rng.standard_normal(x.shape)
        args = {"q": q, "k": k, "v": v}
        args[name] = x + eps * u
        fp = (attention_ref(args["q"], args["k"], args["v"], m)[0] * w).sum()
        args[name] = x - eps * u
        fm = (attention_ref(args["q"], args["k"], args["v"], m)[0] * w).sum()
        fd = (fp - fm) / (2 * eps)
        an = (g * u).sum()
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), name


def test_varlen_reference_matches_batched():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((2, 20, 2, 8))
    k = rng.standard_normal((2, 30, 1, 8))
    v = rng.standard_normal((2, 30, 1, 8))
    pat = RefPattern(num_heads=2, num_kv_heads=1, block_size=16, local_blocks=1, vert_stride=2)
    m = element_mask(pat, 20, 30)
    out, lse, _ = attention_ref(q, k, v, m)
    vo, vl = varlen_ref(q.reshape(40, 2, 8), k.reshape(60, 1, 8), v.reshape(60, 1, 8),
                        [0, 20, 40], [0, 30, 60], pat)
    assert rel_err(vo, out.reshape(40, 2, 8)) < 1e-14
    assert rel_err(vl, lse.transpose(1, 0, 2).reshape(2, 40)) < 1e-14


def test_range_rule_and_density_transcription():
    # range [0, 4) stride 2 on head 0 (phase 0): key blocks 0, 2 visible from anywhere
    pat = RefPattern(num_heads=1, block_size=16, local_blocks=1, vert_stride=0,
                     ranges=[RangeRule(0, 4, 2)])
    bm = pat.block_mask(8, 8)
    assert rows(bm, 0, 7) == {0, 2, 7}
    # relative range: distances [2, 4) dense
    pat = RefPattern(num_heads=1, block_size=16, local_blocks=1, ranges=[RangeRule(2, 4, 1, True)])
    assert rows(pat.block_mask(8, 8), 0, 7) == {4, 5, 7}  # i - j in {2, 3}
    dense = RefPattern(num_heads=3, block_size=16, kind="dense")
    assert dense.density(100) == 1.0
    loc = RefPattern(num_heads=1, block_size=16, local_blocks=1)
    assert loc.density(64) == 4 / 10

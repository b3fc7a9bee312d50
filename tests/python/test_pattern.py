"""Pattern tests: p.attends, p.to_block_mask and p.density against the independent numpy transcription of
the definition (reference.py), on random parameter sets and on hand-computed dkernel cases."""
import numpy as np
import pytest

import s2attn

import cases
from reference import RefPattern

N_RANDOM = 240


def check_pattern(p, ref, nq, nk, q0, rng, what):
    got = p.to_block_mask(nq, nk, q_first_block=q0)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.uint8, got.dtype
    assert got.shape == (ref.num_heads, nq, nk), got.shape
    want = ref.block_mask(nq, nk, q0)
    if not np.array_equal(got != 0, want):
        h, i, j = np.argwhere((got != 0) != want)[0]
        pytest.fail(f"to_block_mask differs at head {h}, row {q0 + i}, col {j}: got {got[h, i, j]}, "
                    f"want {int(want[h, i, j])}; {what}")
    # attends on every triple of a small grid, on a random sample of a larger one
    H = ref.num_heads
    n = H * nq * nk
    if n <= 3000:
        triples = [(h, i, j) for h in range(H) for i in range(nq) for j in range(nk)]
    else:
        triples = list(zip(rng.integers(0, H, 3000), rng.integers(0, nq, 3000), rng.integers(0, nk, 3000)))
    for h, i, j in triples:
        a = p.attends(int(h), int(q0 + i), int(j))
        assert isinstance(a, (bool, np.bool_)), type(a)
        assert a == want[h, i, j], f"attends({h}, {q0 + i}, {j}) = {a}; {what}"


def random_density_lengths(rng, spec):
    bs = spec["block_size"]
    if spec.get("kind") == "mask":
        m = np.asarray(spec["mask"])
        rows, cols = m.shape[-2], m.shape[-1]
        sk = int(rng.integers(1, min(rows, cols) * bs + 1))
    else:
        sk = int(rng.integers(1, 25 * bs))
    sq = sk if rng.random() < 0.6 else int(rng.integers(1, sk + 1))
    return sq, sk


@pytest.mark.parametrize("idx", range(N_RANDOM))
def test_random_pattern_matches_definition(idx):
    rng = np.random.default_rng(20240 + idx)
    spec = cases.random_pattern_spec(rng)
    what = cases.spec_str(spec)
    ref = cases.ref_from_spec(spec)
    p = cases.lib_from_spec(spec)
    assert p.num_heads == spec["num_heads"]
    assert p.num_kv_heads == spec["num_kv_heads"]
    assert p.block_size == spec["block_size"]
    assert bool(p.causal) == spec["causal"]
    for _ in range(2):
        nq, nk, q0 = cases.random_grid(rng, spec)
        check_pattern(p, ref, nq, nk, q0, rng, what)
    # density: Sq == Sk is the unambiguous case
    sk = random_density_lengths(rng, spec)[1]
    d = p.density(sk)
    assert abs(d - ref.density(sk, sk)) < 1e-12, (sk, d, ref.density(sk, sk), what)
    assert abs(p.density(sk, sk) - d) < 1e-15


@pytest.mark.parametrize("idx", range(40))
def test_density_queries_shorter_than_keys(idx):
    """density(Sq, Sk): query blocks are those of the absolute positions [Sk - Sq, Sk)."""
    rng = np.random.default_rng(777 + idx)
    spec = cases.random_pattern_spec(rng)
    ref = cases.ref_from_spec(spec)
    p = cases.lib_from_spec(spec)
    sq, sk = random_density_lengths(rng, spec)
    want = ref.density(sq, sk)
    assert abs(p.density(sq, sk) - want) < 1e-12, (sq, sk, p.density(sq, sk), want, cases.spec_str(spec))


@pytest.mark.parametrize("case", cases.HAND_CASES, ids=[c[0] for c in cases.HAND_CASES])
def test_hand_cases(case):
    _, spec, expected = case
    p = cases.lib_from_spec(spec)
    n = cases.hand_grid(expected)
    bm = p.to_block_mask(n, n)
    for (h, i), cols in expected.items():
        got = set(np.nonzero(bm[h, i])[0].tolist())
        assert got == cols, f"head {h} row {i}: got {sorted(got)}, want {sorted(cols)}"
        for j in range(n):
            assert p.attends(h, i, j) == (j in cols)


def test_hand_heads_share_kv_pattern_under_gqa():
    p = s2attn.local_stride(8, block_size=16, local_blocks=2, vert_stride=8, num_kv_heads=2)
    bm = p.to_block_mask(20, 20)
    for h in range(1, 4):
        assert np.array_equal(bm[h], bm[0])
        assert np.array_equal(bm[4 + h], bm[4])
    assert not np.array_equal(bm[0], bm[4])


def test_default_step_uses_query_head_count():
    # V=16, 8 q heads, 2 kv heads: step 16 // 8 = 2 -> kv head 1 shifted by 2 (not by 16 // 2 = 8)
    a = s2attn.local_stride(8, block_size=16, local_blocks=1, vert_stride=16, num_kv_heads=2)
    b = s2attn.local_stride(8, block_size=16, local_blocks=1, vert_stride=16, num_kv_heads=2, head_sliding_step=2)
    c = s2attn.local_stride(8, block_size=16, local_blocks=1, vert_stride=16, num_kv_heads=2, head_sliding_step=8)
    ma, mb, mc = (x.to_block_mask(40, 40) for x in (a, b, c))
    assert np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)


def test_dkernel_style_dense_mask_causal():
    """dkernel's get_sparse_attn_mask for H=4, L=2, V=4, causal, 8 blocks, written out in full."""
    n, L, V = 8, 2, 4
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    want = np.stack([(q >= k) & ((q - k < L) | ((k + h * 1 + 0) % V == 0)) for h in range(4)])
    p = s2attn.local_stride(4, block_size=32, local_blocks=L, vert_stride=V)
    assert np.array_equal(p.to_block_mask(n, n) != 0, want)


def test_block_mask_heads_variants_and_q_first_block(rng):
    H, hkv = 6, 2
    for heads in (1, hkv, H):
        m = (rng.random((heads, 12, 12)) < 0.5).astype(np.uint8)
        for causal in (True, False):
            p = s2attn.block_mask_pattern(m, H, block_size=32, causal=causal, num_kv_heads=hkv)
            ref = RefPattern(num_heads=H, num_kv_heads=hkv, block_size=32, causal=causal, kind="mask", mask=m)
            for q0, nq, nk in ((0, 12, 12), (5, 7, 12), (11, 1, 12), (3, 4, 6)):
                check_pattern(p, ref, nq, nk, q0, rng, f"heads={heads} causal={causal}")
    # a 2-D mask is one pattern shared by every head
    m2 = (rng.random((9, 9)) < 0.5)
    p = s2attn.block_mask_pattern(m2, 4, block_size=16, causal=True)
    bm = p.to_block_mask(9, 9)
    want = m2 & np.tril(np.ones((9, 9), bool))
    for h in range(4):
        assert np.array_equal(bm[h] != 0, want)


def test_to_block_mask_default_columns():
    p = s2attn.local_stride(2, block_size=16, local_blocks=2, vert_stride=3)
    bm = p.to_block_mask(7)
    assert bm.shape == (2, 7, 7)
    assert np.array_equal(bm, p.to_block_mask(7, 7))


def test_dense_pattern_and_density():
    p = s2attn.dense(4, block_size=32, causal=True, num_kv_heads=2)
    bm = p.to_block_mask(10, 10)
    assert np.array_equal(bm != 0, np.broadcast_to(np.tril(np.ones((10, 10), bool)), (4, 10, 10)))
    assert p.density(1000) == 1.0
    pb = s2attn.dense(2, block_size=16, causal=False)
    assert (pb.to_block_mask(5, 7) != 0).all()
    assert pb.density(100, 300) == 1.0


def test_rules_return_new_patterns():
    p = s2attn.local_stride(2, block_size=16, local_blocks=1, vert_stride=8, head_sliding_offset=1)
    before = p.to_block_mask(12, 12).copy()
    q = p.with_sink(2)
    q = q.with_dense_prefix(3)
    q = q.with_range(4, 6, stride=1)
    q = q.with_dense_heads([1])
    assert np.array_equal(p.to_block_mask(12, 12), before), "with_* modified the original pattern"
    assert not np.array_equal(q.to_block_mask(12, 12), before)
    assert p.density(16 * 12) < q.density(16 * 12)

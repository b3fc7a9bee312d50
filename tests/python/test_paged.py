"""Paged-KV ops on the CPU: decode, speculative decode, chunked prefill and varlen queries against the float64
reference on the gathered cache (shuffled pages, partial last pages poisoned with NaN, mixed context lengths,
1-token contexts, page sizes that are not the block size, GQA, dense heads, sink/range rules, head-paged
layout); pages no head needs left unmapped; combine_partitions; the KV-footprint queries against brute force
over `attends`; typed errors."""
import numpy as np
import pytest

import s2attn

import cases
from helpers import DTYPES, LSE_TOL, TOL, assert_close, assert_no_nan, randn
from paged_cases import PAGED_CASES, PagedCase, case_id
from reference import attention_ref


def run(pc, **kw):
    return s2attn.paged_attention(pc.q, pc.k_pages, pc.v_pages, pc.block_table, pc.context_lens, pc.pattern,
                                  cu_seqlens_q=pc.cu_seqlens_q, return_lse=True, **kw)


@pytest.mark.parametrize("c", PAGED_CASES, ids=case_id)
def test_paged_matches_reference(c, rng):
    pc = PagedCase(rng, c)
    out, lse = run(pc)
    assert out.shape == pc.q.shape and out.dtype == pc.q.dtype and lse.dtype == np.float32
    ro, rl = pc.reference()
    assert lse.shape == rl.shape
    assert_no_nan(out=out, lse=lse)
    assert_close("out", out, ro, TOL[pc.dtype])
    assert_close("lse", lse, rl, LSE_TOL[pc.dtype])


@pytest.mark.parametrize("c", PAGED_CASES, ids=case_id)
def test_pages_nobody_needs_are_never_read(c, rng):
    """Entries of pages no KV head needs (from needed_key_blocks) are -1: same result."""
    pc = PagedCase(rng, c, drop_unneeded=True)
    out, lse = run(pc)
    ro, rl = pc.reference()
    assert_no_nan(out=out, lse=lse)
    assert_close("out", out, ro, TOL[pc.dtype])
    assert_close("lse", lse, rl, LSE_TOL[pc.dtype])


def test_paged_equals_contiguous_forward(rng):
    """Same kernels' arithmetic: the paged call equals the contiguous forward on the gathered cache."""
    pc = PagedCase(rng, ("eq", [300, 77], 5, 24, 4, 2, 64, "f32", "ls_het", 16, {}))
    out, lse = run(pc)
    for b in range(2):
        n = int(pc.ctx[b])
        o, l = s2attn.attention(pc.q_of(b), pc.seq_k[b], pc.seq_v[b], pc.pattern, q_offset=n - 5, return_lse=True)
        assert np.abs(out[b:b + 1] - o).max() < 1e-5
        assert np.abs(lse[b:b + 1] - l).max() < 1e-5


def test_softmax_scale_and_preallocated_outputs(rng):
    pc = PagedCase(rng, ("s", [90, 40], 2, 16, 2, 1, 32, "f32", "ls", 16, {}))
    out = np.full(pc.q.shape, np.nan, np.float32)
    lse = np.full((2, 2, 2), np.nan, np.float32)
    o2, l2 = run(pc, softmax_scale=0.3, out=out, lse=lse)
    assert o2 is out and l2 is lse
    ro, rl = pc.reference(scale=0.3)
    assert_close("out", out, ro, 1e-5)
    assert_close("lse", lse, rl, 1e-5)


def test_q_longer_than_context_rows_see_nothing(rng):
    pc = PagedCase(rng, ("short", [2, 50], 4, 16, 2, 1, 32, "f32", "ls", 16, {}))
    out, lse = run(pc)
    assert np.all(out[0, :2] == 0) and np.all(lse[0, :, :2] == -np.inf)
    ro, rl = pc.reference()
    assert_close("out", out, ro, 1e-5)
    assert_close("lse", lse, rl, 1e-5)


def test_workspace_and_splits_on_cpu(rng):
    pc = PagedCase(rng, ("w", [90], 1, 16, 2, 1, 32, "f32", "ls", 16, {}))
    args = (pc.q, pc.k_pages, pc.v_pages, pc.block_table, pc.context_lens, pc.pattern)
    assert s2attn.paged_workspace_size(*args) == 0
    assert s2attn.paged_num_splits(*args, num_splits=8) == 1  # the CPU backend does not split
    o1 = run(pc, num_splits=4)[0]
    o2 = run(pc)[0]
    assert np.array_equal(o1, o2)


# ---------------------------------------------------------------------------------------------------------
# combine_partitions


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("varlen", [False, True])
def test_combine_equals_attention_over_the_whole_range(dtype, varlen, rng):
    B, S, Sk, H, D = 2, 5, 70, 3, 32
    q = randn(rng, (B, S, H, D), "f32")
    k = randn(rng, (B, Sk, H, D), "f32")
    v = randn(rng, (B, Sk, H, D), "f32")
    mask = rng.random((H, S, Sk)) < 0.6
    mask[:, 0, :] = False  # a row no partition sees
    mask[:, 1, 13:40] = False  # row 1 sees nothing in the second partition
    cuts = [0, 13, 40, Sk]
    outs, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        part = np.zeros_like(mask)
        part[..., a:b] = mask[..., a:b]
        o, l, _ = attention_ref(q, k, v, part)
        if a == 13:
            assert np.all(np.isneginf(l[:, :, 1]))
            o[:, 1] = np.nan  # a partition whose lse is -inf for a row contributes nothing, NaN or not
        outs.append(o.astype(np.float32).astype(DTYPES[dtype]))
        lses.append(l.astype(np.float32))
    ro, rl, _ = attention_ref(q, k, v, mask)
    if varlen:  # [T, H, D] / [H, T]
        outs = [o.reshape(B * S, H, D) for o in outs]
        lses = [np.ascontiguousarray(l.transpose(1, 0, 2).reshape(H, B * S)) for l in lses]
        ro = ro.reshape(B * S, H, D)
        rl = rl.transpose(1, 0, 2).reshape(H, B * S)
    out, lse = s2attn.combine_partitions(outs, lses)
    assert out.dtype == outs[0].dtype and out.shape == outs[0].shape and lse.shape == lses[0].shape
    assert_no_nan(out=out, lse=lse)
    assert_close("out", out, ro, TOL[dtype])
    assert_close("lse", lse, rl, 1e-5)
    empty = np.isneginf(rl)
    assert empty.any()
    # stacked inputs work too
    out2, lse2 = s2attn.combine_partitions(np.stack(outs), np.stack(lses))
    assert np.array_equal(out2.astype(np.float32), out.astype(np.float32), equal_nan=True)


def test_combine_of_paged_halves(rng):
    """Two paged calls over disjoint page ranges (context split by hand) combine into the whole call."""
    pc = PagedCase(rng, ("c", [256], 1, 16, 2, 2, 32, "f32", "dense", 16, {}))
    whole_o, whole_l = run(pc)
    # first 128 keys: a context of 128 whose single query sits at position 127 -> use a dense non-causal
    # pattern so the position does not cut; the second half: pages 8.. as their own sequence.
    p = s2attn.dense(2, block_size=16, causal=False)
    halves = []
    for pages in (pc.block_table[:, :8], np.ascontiguousarray(pc.block_table[:, 8:16])):
        halves.append(s2attn.paged_attention(pc.q, pc.k_pages, pc.v_pages, np.ascontiguousarray(pages),
                                             np.array([128], np.int32), p, return_lse=True))
    out, lse = s2attn.combine_partitions([h[0] for h in halves], [h[1] for h in halves])
    assert np.abs(out - whole_o).max() < 1e-5
    assert np.abs(lse - whole_l).max() < 1e-5


def test_combine_errors():
    o = np.zeros((1, 2, 2, 8), np.float32)
    l = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.combine_partitions([o, o], [l])
    assert e.value.argument == "lses"
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.combine_partitions([o, np.zeros((1, 2, 3, 8), np.float32)], [l, l])
    assert e.value.argument == "outs"
    with pytest.raises(s2attn.DTypeError) as e:
        s2attn.combine_partitions([o], [l.astype(np.float16)])
    assert e.value.argument == "lses"
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.combine_partitions([], [])
    assert e.value.argument == "outs"


# ---------------------------------------------------------------------------------------------------------
# KV-cache efficiency


def brute_needed(ref, hk, ctx, max_ctx=None):
    """Key blocks of [0, ceil(ctx / bs)) that a q head of KV head hk's group sees from a future query block."""
    bs = ref.block_size
    nk = -(-ctx // bs)
    i0 = ctx // bs
    if max_ctx is not None:
        if max_ctx <= ctx:
            return []
        i1 = (max_ctx - 1) // bs + 1
    else:
        i1 = i0 + nk + 80  # past every window, range and stride period the random specs use
    if ref.kind == "mask":
        i1 = min(i1, ref.mask.shape[1])
    g = ref.num_heads // ref.num_kv_heads
    return [j for j in range(nk)
            if any(ref.attends(h, i, j) for h in range(hk * g, (hk + 1) * g) for i in range(i0, i1))]


@pytest.mark.parametrize("seed", range(30))
def test_needed_key_blocks_brute_force(seed):
    rng = np.random.default_rng(1000 + seed)
    spec = cases.random_pattern_spec(rng)
    p, ref = cases.lib_from_spec(spec), cases.ref_from_spec(spec)
    bs = spec["block_size"]
    for _ in range(3):
        ctx = int(rng.integers(0, 20 * bs))
        max_ctx = None if rng.random() < 0.5 else ctx + int(rng.integers(0, 5 * bs))
        for hk in range(spec["num_kv_heads"]):
            got = s2attn.needed_key_blocks(p, hk, ctx, max_ctx).tolist()
            assert got == brute_needed(ref, hk, ctx, max_ctx), (cases.spec_str(spec), hk, ctx, max_ctx)


@pytest.mark.parametrize("seed", range(12))
def test_kv_footprint_brute_force(seed):
    rng = np.random.default_rng(2000 + seed)
    spec = cases.random_pattern_spec(rng)
    p, ref = cases.lib_from_spec(spec), cases.ref_from_spec(spec)
    bs, hkv = spec["block_size"], spec["num_kv_heads"]
    ctx = int(rng.integers(1, 20 * bs))
    ps = int(rng.choice([16, 24, 64, 100, 256]))
    D = 64
    f = s2attn.kv_cache_footprint(p, ctx, ps, head_dim=D, dtype="float16")
    npages = -(-ctx // ps)
    per_head = []
    union = np.zeros(npages, bool)
    for hk in range(hkv):
        pages = np.zeros(npages, bool)
        for j in brute_needed(ref, hk, ctx):
            pages[(j * bs) // ps:(min(ctx, (j + 1) * bs) - 1) // ps + 1] = True
        per_head.append(int(pages.sum()))
        union |= pages
    assert f["dense_pages"] == npages
    assert f["pages_per_kv_head"] == per_head
    assert f["head_paged_pages"] == sum(per_head)
    assert f["vllm_pages"] == int(union.sum())
    assert f["dense_bytes"] == npages * ps * hkv * 2 * D * 2
    assert f["vllm_bytes"] == int(union.sum()) * ps * hkv * 2 * D * 2
    assert f["head_paged_bytes"] == sum(per_head) * ps * 2 * D * 2


def test_kv_footprint_design_example():
    """DESIGN 1.3: 128k context, 8 KV heads, V=8, L=16, block 64: the head-paged cache keeps ~1/8 + window."""
    p = s2attn.local_stride(32, block_size=64, local_blocks=16, vert_stride=8, num_kv_heads=8)
    f = s2attn.kv_cache_footprint(p, 128 * 1024, 16, head_dim=128, dtype="bfloat16")
    nk = 128 * 1024 // 64
    # every KV head keeps its vertical blocks (1 in 8) plus the 16-block window
    assert f["head_paged_pages"] <= 8 * (nk // 8 + 16) * 4
    assert f["head_paged_bytes"] < 0.14 * f["dense_bytes"]
    # the vLLM layout keeps the union over the 8 heads: with step max(1, 8 // 32) = 1 the phases 0..7 cover
    # every residue mod 8, so nothing is saved there
    assert f["vllm_pages"] == f["dense_pages"]
    import ml_dtypes

    assert s2attn.kv_cache_footprint(p, 1000, 16, dtype=ml_dtypes.bfloat16)["dense_bytes"] == \
        s2attn.kv_cache_footprint(p, 1000, 16)["dense_bytes"]


# ---------------------------------------------------------------------------------------------------------
# typed errors


def _args(pc):
    return dict(q=pc.q, k_pages=pc.k_pages, v_pages=pc.v_pages, block_table=pc.block_table,
                context_lens=pc.context_lens, pattern=pc.pattern)


@pytest.mark.parametrize("what,argument,cls", [
    ("table_int64", "block_table", s2attn.DTypeError),
    ("table_rank", "block_table", s2attn.InvalidArgumentError),
    ("table_batch", "block_table", s2attn.InvalidArgumentError),
    ("table_out_of_range", "block_table", s2attn.InvalidArgumentError),
    ("ctx_too_long", "context_lens", s2attn.InvalidArgumentError),
    ("ctx_negative", "context_lens", s2attn.InvalidArgumentError),
    ("ctx_float", "context_lens", s2attn.DTypeError),
    ("k_dtype", "k_pages", s2attn.DTypeError),
    ("k_head_dim", "k_pages", s2attn.InvalidArgumentError),
    ("v_shape", "v_pages", s2attn.InvalidArgumentError),
    ("pattern_heads", "pattern", s2attn.InvalidArgumentError),
    ("q_rank", "q", s2attn.InvalidArgumentError),
    ("num_splits", "num_splits", s2attn.InvalidArgumentError),
    ("cu_seqlens_decreasing", "cu_seqlens_q", s2attn.InvalidArgumentError),
    ("not_a_pattern", "pattern", s2attn.InvalidArgumentError),
])
def test_typed_errors(what, argument, cls, rng):
    pc = PagedCase(rng, ("e", [90, 40], 1, 16, 4, 2, 32, "f32", "ls", 16, {}))
    a = _args(pc)
    kw = {}
    if what == "table_int64":
        a["block_table"] = pc.block_table.astype(np.int64)
    elif what == "table_rank":
        a["block_table"] = pc.block_table[0]
    elif what == "table_batch":
        a["block_table"] = pc.block_table[:1]
    elif what == "table_out_of_range":
        a["block_table"] = pc.block_table.copy()
        a["block_table"][0, 5] = pc.k_pages.shape[0]  # block 5 is in the local window of the last query
    elif what == "ctx_too_long":
        a["context_lens"] = np.array([90, pc.block_table.shape[1] * 16 + 1], np.int32)
    elif what == "ctx_negative":
        a["context_lens"] = np.array([90, -1], np.int32)
    elif what == "ctx_float":
        a["context_lens"] = pc.context_lens.astype(np.float32)
    elif what == "k_dtype":
        a["k_pages"] = pc.k_pages.astype(np.float16)
    elif what == "k_head_dim":
        a["k_pages"] = pc.k_pages[..., :16]
    elif what == "v_shape":
        a["v_pages"] = pc.v_pages[:, :8]
    elif what == "pattern_heads":
        a["pattern"] = s2attn.local_stride(4, block_size=16, local_blocks=2, vert_stride=3)
    elif what == "q_rank":
        a["q"] = pc.q[0]
    elif what == "num_splits":
        kw["num_splits"] = 0
    elif what == "cu_seqlens_decreasing":
        a["q"] = pc.q.reshape(2, 4, 32)
        kw["cu_seqlens_q"] = np.array([0, 2, 1], np.int32)
    elif what == "not_a_pattern":
        a["pattern"] = "local_stride"
    with pytest.raises(cls) as e:
        s2attn.paged_attention(**a, **kw)
    assert e.value.argument == argument, str(e.value)


def test_footprint_errors():
    p = s2attn.local_stride(4, block_size=16, local_blocks=2, vert_stride=3, num_kv_heads=2)
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.needed_key_blocks(p, 2, 100)
    assert e.value.argument == "kv_head"
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.kv_cache_footprint(p, 100, 0)
    assert e.value.argument == "page_size"
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.kv_cache_footprint(p, 100, 16, dtype="int4")
    assert e.value.argument == "dtype"


def test_torch_cpu_tensors_and_gpu_test_helpers():
    """The torch helpers of the GPU paged tests (paged_torch.py), checked here on CPU tensors."""
    torch = pytest.importorskip("torch")
    from paged_torch import make_cache, reference, rel_err

    g = torch.Generator().manual_seed(5)
    p = s2attn.local_stride(8, block_size=16, local_blocks=2, vert_stride=3, num_kv_heads=2)
    for kw in ({}, {"head_paged": True, "drop_unneeded": True}, {"varlen": True}):
        qlens = [3, 0, 5] if kw.get("varlen") else 2
        c = make_cache(g, p, [200, 30, 1], qlens, 24, 64, torch.bfloat16, torch.device("cpu"), **kw)
        out, lse = s2attn.paged_attention(c["q"], c["k_pages"], c["v_pages"], c["block_table"], c["context_lens"],
                                          p, cu_seqlens_q=c["cu_seqlens_q"], return_lse=True)
        ro, rl = reference(c, p)
        assert out.dtype == torch.bfloat16 and rel_err(out, ro) <= 1e-2 and rel_err(lse, rl) <= 1e-3, kw


def test_varlen_rows_before_the_first_sequence_stay_untouched():
    """cu_seqlens_q[0] > 0: the first rows of q belong to no sequence and are never written (the CUDA twin in
    test_gpu_paged.py runs it with and without split-KV)."""
    torch = pytest.importorskip("torch")
    from paged_torch import make_cache, reference, rel_err

    g = torch.Generator().manual_seed(7)
    p = s2attn.local_stride(8, block_size=64, local_blocks=2, vert_stride=3, num_kv_heads=2)
    c = make_cache(g, p, [700, 1500], [3, 2], 16, 64, torch.float32, torch.device("cpu"), varlen=True)
    pad = 5
    q = torch.cat([torch.randn(pad, 8, 64, generator=g), c["q"]], 0)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((8, q.shape[0]), float("nan"))
    s2attn.paged_attention(q, c["k_pages"], c["v_pages"], c["block_table"], c["context_lens"], p,
                           cu_seqlens_q=c["cu_seqlens_q"] + pad, out=out, lse=lse)
    assert torch.isnan(out[:pad]).all() and torch.isnan(lse[:, :pad]).all()
    ro, rl = reference(c, p)
    assert rel_err(out[pad:], ro) <= 1e-5 and rel_err(lse[:, pad:], rl) <= 1e-5

"""CUDA paged-KV attention against the float64 reference (torch on the GPU) and the CPU backend: decode,
speculative decode, chunked prefill, varlen, head-paged, GQA groups, per-q-head and rule patterns, page sizes
that are not the block size, split-KV (forced and automatic), unmapped pages (-1), NaN-poisoned page tails
and outputs, block-mask patterns, CUDA-graph capture and replay, combine_partitions. Skipped without torch + CUDA."""
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

import s2attn  # noqa: E402

from paged_torch import make_cache, reference, rel_err  # noqa: E402

DEV = torch.device("cuda")
TOL = {torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float32: 1e-5}
LSE_TOL = {torch.bfloat16: 1e-3, torch.float16: 1e-3, torch.float32: 1e-5}


@pytest.fixture
def gen(request):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    return g


def pattern(kind, H, Hkv, bs):
    if kind == "ls":
        return s2attn.local_stride(H, block_size=bs, local_blocks=2, vert_stride=3, num_kv_heads=Hkv)
    if kind == "ls_het":
        return s2attn.local_stride(H, block_size=bs, local_blocks=1, vert_stride=4, num_kv_heads=Hkv,
                                   head_sliding_step=1, head_sliding_offset=2, num_dense_heads=1)
    if kind == "ls_pq":
        return s2attn.local_stride(H, block_size=bs, local_blocks=1, vert_stride=3, num_kv_heads=Hkv,
                                   per_q_head=True)
    if kind == "rules":
        return s2attn.local_stride(H, block_size=bs, local_blocks=1, vert_stride=6, num_kv_heads=Hkv) \
            .with_sink(1).with_dense_prefix(1).with_range(2, 5, stride=2).with_range(3, 6, relative=True)
    if kind == "dense":
        return s2attn.dense(H, block_size=bs, num_kv_heads=Hkv)
    if kind == "v8":
        return s2attn.local_stride(H, block_size=bs, local_blocks=16, vert_stride=8, num_kv_heads=Hkv)
    if kind.startswith("mask_"):  # random per-head block mask: heads 1, Hkv or H; query block 2 sees nothing
        heads = {"mask_1": 1, "mask_kv": Hkv, "mask_h": H}[kind]
        n = 1600 // bs + 2  # covers every context of the cases
        rng = np.random.default_rng(1000 * bs + 10 * H + heads)
        m = rng.random((heads, n, n)) < 0.3
        m[:, np.arange(n), np.arange(n)] |= rng.random((heads, n)) < 0.7
        m[:, 2] = False
        return s2attn.block_mask_pattern(m, H, block_size=bs, num_kv_heads=Hkv)
    raise ValueError(kind)


# (name, ctx, q_lens, page, H, Hkv, D, dtype, kind, bs, extras)
CASES = [
    ("decode_bf16_d128_g4", [1, 100, 2049, 640], 1, 16, 8, 2, 128, torch.bfloat16, "ls", 64, {}),
    ("decode_fp16_d64_page64_bs16", [300, 5, 129], 1, 64, 4, 1, 64, torch.float16, "ls", 16, {}),
    ("decode_page24_bs16_het", [333, 48, 17], 1, 24, 4, 2, 64, torch.bfloat16, "ls_het", 16, {}),
    ("decode_page16_bs128", [1500, 128, 129], 1, 16, 8, 8, 128, torch.bfloat16, "ls", 128, {}),
    ("decode_page256_rules", [1200, 256, 1], 1, 256, 4, 2, 128, torch.float16, "rules", 32, {}),
    ("decode_per_q_head", [810, 90], 1, 32, 8, 2, 64, torch.bfloat16, "ls_pq", 16, {}),
    ("decode_dense", [700, 33], 1, 16, 4, 2, 128, torch.bfloat16, "dense", 64, {}),
    ("decode_mqa_g16", [500, 70], 1, 16, 16, 1, 64, torch.bfloat16, "ls", 16, {}),
    # groups of 3 q heads, 3 KV heads: the kernels' index arithmetic off its power-of-two fast paths
    ("decode_groups_of_3", [700, 65, 1, 2100], 1, 16, 9, 3, 128, torch.bfloat16, "ls", 64, {}),
    ("spec_decode_groups_of_3", [300, 41], 3, 16, 6, 2, 64, torch.float16, "ls_het", 16, {}),
    # fp32 CTAs hold 8 rows: a group of 20 q heads is 3 head chunks (8, 8, 4) of one KV head
    ("decode_f32_three_head_chunks", [300, 41, 1], 1, 16, 20, 1, 64, torch.float32, "ls", 16, {}),
    ("decode_f32", [260, 31], 1, 64, 4, 4, 64, torch.float32, "ls_het", 32, {}),
    ("decode_long_v8", [16384 + 77], 1, 64, 8, 2, 128, torch.bfloat16, "v8", 64, {}),
    ("spec_decode_q4", [97, 300, 4, 2], 4, 16, 4, 2, 128, torch.bfloat16, "ls", 16, {}),
    ("spec_decode_rules", [222, 50], 3, 48, 8, 2, 64, torch.float16, "rules", 16, {}),
    ("chunked_prefill", [600, 180], 64, 16, 4, 2, 128, torch.bfloat16, "ls", 16, {}),
    ("chunked_prefill_page40", [520], 200, 40, 4, 1, 64, torch.bfloat16, "rules", 32, {}),
    ("varlen_q", [120, 45, 3, 400], [1, 7, 3, 40], 16, 4, 2, 128, torch.bfloat16, "ls", 16, {"varlen": True}),
    ("varlen_empty_seq", [50, 60, 70], [5, 0, 9], 32, 4, 2, 64, torch.float16, "ls_het", 16, {"varlen": True}),
    ("head_paged", [333, 20, 1290], 1, 16, 8, 2, 128, torch.bfloat16, "ls", 64, {"head_paged": True}),
    ("head_paged_prefill", [250, 97], 20, 32, 8, 4, 64, torch.bfloat16, "rules", 16, {"head_paged": True}),
    # a CTA's query rows straddle two query blocks (rows (29, 30 | 31, 32), (95 | 96), (63 | 64)): the union
    # walk over the rows' key blocks must not fall back to the lower row's end (it once looped forever)
    ("spec_straddle_per_q_head", [34, 100, 66], 5, 16, 8, 2, 64, torch.bfloat16, "ls_pq", 16, {}),
    ("varlen_straddle_rules", [34, 97, 66], [5, 2, 4], 16, 4, 2, 128, torch.float16, "rules", 16,
     {"varlen": True}),
    # block-mask patterns: the kernels walk the pattern's device row lists
    ("decode_block_mask_kv", [300, 5, 129, 40], 1, 16, 4, 2, 64, torch.bfloat16, "mask_kv", 16, {}),
    ("spec_block_mask_per_q_head", [222, 50, 35], 3, 48, 8, 2, 128, torch.float16, "mask_h", 16, {}),
    ("prefill_block_mask_shared", [600, 180], 64, 16, 4, 2, 128, torch.bfloat16, "mask_1", 64, {}),
    ("varlen_block_mask_bs128", [520, 130], [70, 3], 32, 4, 1, 64, torch.bfloat16, "mask_h", 128,
     {"varlen": True}),
]


def run_case(c, gen, drop=False, num_splits=None, device=DEV):
    name, ctx, qlens, ps, H, Hkv, D, dtype, kind, bs, extra = c
    p = pattern(kind, H, Hkv, bs)
    cache = make_cache(gen, p, ctx, qlens, ps, D, dtype, device, head_paged=extra.get("head_paged", False),
                       drop_unneeded=drop, varlen=extra.get("varlen", False))
    q = cache["q"]
    out = torch.full_like(q, float("nan"))
    lse_shape = (H, q.shape[0]) if cache["cu_seqlens_q"] is not None else (q.shape[0], H, q.shape[1])
    lse = torch.full(lse_shape, float("nan"), dtype=torch.float32, device=device)
    s2attn.paged_attention(q, cache["k_pages"], cache["v_pages"], cache["block_table"], cache["context_lens"], p,
                           cu_seqlens_q=cache["cu_seqlens_q"], out=out, lse=lse, num_splits=num_splits)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ro, rl = reference(cache, p)
    return out, lse, ro, rl, dtype, cache, p


# split counts that are not powers of two (3, 7: also cluster sizes for tools/pending/paged-decode-cluster.patch,
# which merges 2-8 splits in a thread-block cluster on sm_90) and one past a cluster's 8 (16)
@pytest.mark.parametrize("splits", [1, 3, 7, 16, None], ids=["nosplit", "split3", "split7", "split16", "auto"])
@pytest.mark.parametrize("c", CASES, ids=[c[0] for c in CASES])
def test_paged_cuda_matches_reference(c, splits, gen):
    out, lse, ro, rl, dtype, _, _ = run_case(c, gen, num_splits=splits)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert rel_err(out, ro) <= TOL[dtype], rel_err(out, ro)
    assert rel_err(lse, rl) <= LSE_TOL[dtype], rel_err(lse, rl)


@pytest.mark.parametrize("c", CASES, ids=[c[0] for c in CASES])
def test_unmapped_pages_are_never_read(c, gen):
    out, lse, ro, rl, dtype, _, _ = run_case(c, gen, drop=True, num_splits=2)
    assert rel_err(out, ro) <= TOL[dtype]
    assert rel_err(lse, rl) <= LSE_TOL[dtype]


@pytest.mark.parametrize("c", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_cuda_equals_cpu_backend(c, gen):
    g2 = torch.Generator()
    g2.set_state(gen.get_state())
    out, lse, *_ = run_case(c, gen)
    out_c, lse_c, *_ = run_case(c, g2, device=torch.device("cpu"))
    assert rel_err(out.cpu(), out_c.double()) <= TOL[c[7]]
    assert rel_err(lse.cpu(), lse_c.double()) <= LSE_TOL[c[7]]


def test_cuda_graph_capture_and_replay(gen):
    H, Hkv, D, ps = 8, 2, 128, 16
    p = pattern("ls", H, Hkv, 64)
    cache = make_cache(gen, p, [3000, 700], 1, ps, D, torch.bfloat16, DEV)
    args = (cache["q"], cache["k_pages"], cache["v_pages"], cache["block_table"], cache["context_lens"], p)
    splits = 4
    ws = torch.empty(s2attn.paged_workspace_size(*args, num_splits=splits), dtype=torch.uint8, device=DEV)
    assert ws.numel() > 0
    out = torch.empty_like(cache["q"])
    lse = torch.empty(2, H, 1, dtype=torch.float32, device=DEV)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up (per-kernel attributes) outside the capture
        s2attn.paged_attention(*args, out=out, lse=lse, workspace=ws, num_splits=splits)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        s2attn.paged_attention(*args, out=out, lse=lse, workspace=ws, num_splits=splits)
    # new contents, same buffers: a shorter context and new queries
    cache["context_lens"].copy_(torch.tensor([2500, 701], dtype=torch.int32))
    newq = torch.randn(cache["q"].shape, generator=gen).to(torch.bfloat16)
    cache["q"].copy_(newq)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    cache["seq_q"] = [newq[0].clone(), newq[1].clone()]
    cache["seq_k"][0] = cache["seq_k"][0][:2500]
    cache["seq_v"][0] = cache["seq_v"][0][:2500]
    # sequence 1 grows to 701 tokens: token 700 sits in its last (partial, NaN-tailed) page; write it
    e = int(cache["block_table"][1, 700 // ps])
    kn = torch.randn(Hkv, D, generator=gen).to(torch.bfloat16)
    vn = torch.randn(Hkv, D, generator=gen).to(torch.bfloat16)
    cache["k_pages"][e, 700 % ps] = kn.to(DEV)
    cache["v_pages"][e, 700 % ps] = vn.to(DEV)
    g.replay()
    torch.cuda.synchronize()
    cache["seq_k"][1] = torch.cat([cache["seq_k"][1], kn[None]], 0)
    cache["seq_v"][1] = torch.cat([cache["seq_v"][1], vn[None]], 0)
    ro, rl = reference(cache, p)
    assert rel_err(out, ro) <= 1e-2
    assert rel_err(lse, rl) <= 1e-3


def test_workspace_errors(gen):
    p = pattern("ls", 4, 2, 16)
    cache = make_cache(gen, p, [900], 1, 16, 64, torch.bfloat16, DEV)
    args = (cache["q"], cache["k_pages"], cache["v_pages"], cache["block_table"], cache["context_lens"], p)
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        s2attn.paged_attention(*args, workspace=torch.empty(8, dtype=torch.uint8, device=DEV), num_splits=4)
    assert e.value.argument == "workspace"
    assert s2attn.paged_num_splits(*args, num_splits=5) == 5
    assert s2attn.paged_workspace_size(*args, num_splits=1) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_combine_partitions_cuda(dtype, gen):
    P, B, S, H, D = 3, 2, 5, 4, 64
    outs = torch.randn(P, B, S, H, D, generator=gen).to(dtype)
    lses = torch.randn(P, B, H, S, generator=gen) * 3
    lses[1, :, :, 0] = -float("inf")
    outs[1, :, 0] = float("nan")  # never read: its lse is -inf
    lses[:, 1, 2, 3] = -float("inf")  # a row every partition misses
    o_c, l_c = s2attn.combine_partitions(list(outs), list(lses))
    o_g, l_g = s2attn.combine_partitions([x.to(DEV) for x in outs], [x.to(DEV) for x in lses])
    torch.cuda.synchronize()
    assert not torch.isnan(o_g).any()
    assert rel_err(o_g.cpu(), o_c.double()) <= (1e-2 if dtype != torch.float32 else 1e-6)
    assert rel_err(l_g.cpu(), l_c.double()) <= 1e-6
    assert torch.all(o_g[1, 3, 2] == 0) and l_g[1, 2, 3] == -float("inf")


@pytest.mark.parametrize("splits", [1, 4], ids=["nosplit", "split4"])
def test_varlen_rows_before_the_first_sequence_stay_untouched(splits, gen):
    # cu_seqlens_q[0] > 0: the first `pad` rows of q belong to no sequence. No path may write them (the
    # split combine used to merge their never-written workspace rows into `out` and `lse`).
    p = pattern("ls", 8, 2, 64)
    cache = make_cache(gen, p, [700, 1500], [3, 2], 16, 128, torch.bfloat16, DEV, varlen=True)
    pad = 5
    q = torch.cat([torch.randn(pad, 8, 128, generator=gen).to(torch.bfloat16).to(DEV), cache["q"]], 0)
    cu = cache["cu_seqlens_q"] + pad
    out = torch.full_like(q, float("nan"))
    lse = torch.full((8, q.shape[0]), float("nan"), dtype=torch.float32, device=DEV)
    s2attn.paged_attention(q, cache["k_pages"], cache["v_pages"], cache["block_table"], cache["context_lens"], p,
                           cu_seqlens_q=cu, out=out, lse=lse, num_splits=splits)
    torch.cuda.synchronize()
    assert torch.isnan(out[:pad]).all() and torch.isnan(lse[:, :pad]).all()
    ro, rl = reference(cache, p)
    assert rel_err(out[pad:], ro) <= TOL[torch.bfloat16]
    assert rel_err(lse[:, pad:], rl) <= LSE_TOL[torch.bfloat16]


# The decode kernel's TMA path (sm_90, opt-in: S2ATTN_PAGED_TMA=1, read per call): one TMA box per page and
# half of D instead of per-row cp.async. Same data in shared memory for every valid key, same math: the two
# paths must give the same bits (page tails past the context hold NaN in make_cache's caches; unmapped pages
# -1 with drop=True). Cases with non-power-of-two pages or more than 16 packed rows take the cp.async kernel.
TMA_CASES = [c for c in CASES if c[0] in (
    "decode_bf16_d128_g4", "decode_fp16_d64_page64_bs16", "decode_page16_bs128", "decode_page256_rules",
    "decode_per_q_head", "decode_dense", "decode_mqa_g16", "decode_long_v8", "spec_decode_q4", "head_paged",
    "decode_block_mask_kv", "decode_page24_bs16_het")]


def _kernel_names(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.skipif(torch.cuda.get_device_capability() < (9, 0), reason="TMA needs sm_90")
@pytest.mark.parametrize("drop", [False, True], ids=["mapped", "unmapped"])
@pytest.mark.parametrize("splits", [1, 3], ids=["nosplit", "split3"])  # explicit: the automatic count follows
@pytest.mark.parametrize("c", TMA_CASES, ids=[c[0] for c in TMA_CASES])  # each kernel's occupancy
def test_tma_decode_equals_cp_async_decode(c, splits, drop, gen, monkeypatch):
    state = gen.get_state()
    monkeypatch.delenv("S2ATTN_PAGED_TMA", raising=False)
    out, lse, ro, rl, dtype, _, _ = run_case(c, gen, drop=drop, num_splits=splits)
    monkeypatch.setenv("S2ATTN_PAGED_TMA", "1")
    gen.set_state(state)
    result = {}

    def run():
        result["r"] = run_case(c, gen, drop=drop, num_splits=splits)

    names = _kernel_names(run)
    out_t, lse_t = result["r"][0], result["r"][1]
    assert torch.equal(out_t, out) and torch.equal(lse_t, lse)
    assert rel_err(out_t, ro) <= TOL[dtype]
    tma_ran = any("paged_mma_kernel" in n and "false, true>" in n for n in names)
    assert tma_ran == (c[0] != "decode_page24_bs16_het"), names  # page 24: not a power of two


# Chunked prefill through the Hopper forward over the pages (sm_90, the default; S2ATTN_PAGED_PREFILL_SM90=0,
# read per call, keeps the packed kernel): power-of-two pages of >= 64 tokens, analytic patterns, one split. The pages' tails past each
# context hold NaN (make_cache), unmapped pages are -1 with drop=True.
SM90_PREFILL_CASES = [  # >= 64 query rows a sequence (the path's gate)
    ("prefill_sm90_page64", [600, 180], 64, 64, 4, 2, 128, torch.bfloat16, "ls", 64, {}),
    # fp16 in the id: `-k "not fp16"` runs of a bf16-only build (tools/gpu-pending) deselect it, as they do
    # the other files' fp16 cases; with no fp16 Hopper kernel the call takes the packed kernel and this fails
    ("prefill_sm90_page128_bs128_varlen_fp16", [520, 130], [140, 30], 128, 4, 1, 64, torch.float16, "rules", 128,
     {"varlen": True}),
    ("prefill_sm90_page64_bs128", [777, 300], 100, 64, 4, 2, 128, torch.bfloat16, "ls", 128, {}),
    ("prefill_sm90_head_paged", [250, 97], 80, 64, 8, 4, 64, torch.bfloat16, "ls_het", 64, {"head_paged": True}),
    ("prefill_sm90_v8_page256", [4096 + 33, 700], 300, 256, 8, 2, 128, torch.bfloat16, "v8", 64, {}),
    # 4 x 17 tiles x 16 heads = 1088 units: past four waves, the dynamic schedule's counter
    ("prefill_sm90_dynamic", [2100, 2090, 2200, 2049], 2048, 64, 16, 4, 128, torch.bfloat16, "v8", 64, {}),
]


@pytest.mark.skipif(torch.cuda.get_device_capability() != (9, 0), reason="the Hopper forward: sm_90")
@pytest.mark.parametrize("drop", [False, True], ids=["mapped", "unmapped"])
@pytest.mark.parametrize("c", SM90_PREFILL_CASES, ids=[c[0] for c in SM90_PREFILL_CASES])
def test_paged_prefill_through_the_hopper_forward(c, drop, gen, monkeypatch):
    if not s2attn.backend_available("cuda_sm90"):
        pytest.skip("this build has no Hopper kernels")
    monkeypatch.delenv("S2ATTN_PAGED_PREFILL_SM90", raising=False)
    result = {}

    def run():
        result["r"] = run_case(c, gen, drop=drop, num_splits=1)

    names = _kernel_names(run)
    out, lse, ro, rl, dtype, _, _ = result["r"]
    assert any("forward_kernel_sm90" in n for n in names), names
    assert not any("paged_mma_kernel" in n for n in names), names
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert rel_err(out, ro) <= TOL[dtype], rel_err(out, ro)
    assert rel_err(lse, rl) <= LSE_TOL[dtype], rel_err(lse, rl)


@pytest.mark.skipif(torch.cuda.get_device_capability() != (9, 0), reason="the Hopper forward: sm_90")
@pytest.mark.parametrize("c", SM90_PREFILL_CASES[:3], ids=[c[0] for c in SM90_PREFILL_CASES[:3]])
def test_paged_prefill_opt_out_keeps_the_packed_kernel(c, gen, monkeypatch):
    monkeypatch.setenv("S2ATTN_PAGED_PREFILL_SM90", "0")
    result = {}

    def run():
        result["r"] = run_case(c, gen, num_splits=1)

    names = _kernel_names(run)
    out, lse, ro, rl, dtype, _, _ = result["r"]
    assert any("paged_mma_kernel" in n for n in names), names
    assert not any("forward_kernel_sm90" in n for n in names), names
    assert rel_err(out, ro) <= TOL[dtype], rel_err(out, ro)
    assert rel_err(lse, rl) <= LSE_TOL[dtype], rel_err(lse, rl)

"""s2attn.torch: autograd against a float64 masked-SDPA reference, the lse gradient, torch.compile(fullgraph=True)
of a transformer block, dkernel-compatible modules, tensor-parallel head slices, layouts without copies,
partition merge, typed errors. Runs on CPU (CI) and, where torch sees a GPU, on CUDA too."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import s2attn  # noqa: E402
import s2attn.torch as st  # noqa: E402
from s2attn import InvalidArgumentError  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def token_mask(pattern, H, Sq, Sk, q_offset=None):
    """[H, Sq, Sk] bool: key t visible to query row r (position q_offset + r) from the library's block mask."""
    bs = pattern.block_size
    off = Sk - Sq if q_offset is None else q_offset
    nq = (off + Sq + bs - 1) // bs
    nk = (Sk + bs - 1) // bs
    bm = torch.from_numpy(np.asarray(pattern.to_block_mask(nq, nk))).bool()  # [H, nq, nk]
    pos = off + torch.arange(Sq)
    keys = torch.arange(Sk)
    m = bm[:, pos.clamp(min=0) // bs][:, :, keys // bs]
    m &= (pos >= 0)[None, :, None]
    if pattern.causal:
        m &= keys[None, None, :] <= pos[None, :, None]
    return m


def reference(q, k, v, pattern, scale=None, q_offset=None):
    """float64 masked attention on [B, S, H, D] tensors, differentiable; rows that see nothing give 0 / -inf."""
    B, Sq, H, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    kk = k.double().repeat_interleave(H // Hkv, dim=2)
    vv = v.double().repeat_interleave(H // Hkv, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), kk) * scale
    m = token_mask(pattern, H, Sq, Sk, q_offset).to(q.device)
    s = s.masked_fill(~m[None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    out = torch.einsum("bhqk,bkhd->bqhd", p, vv)
    return out, lse


def rel(x, ref):
    x, ref = x.double(), ref.double()
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(x)), "non-finite entries differ"
    return ((x[fin] - ref[fin]).norm() / ref[fin].norm().clamp(min=1e-30)).item()


def inputs(B, Sq, Sk, H, Hkv, D, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    mk = lambda S, h: torch.randn(B, S, h, D, generator=g).to(dtype).to(device).requires_grad_()  # noqa: E731
    return mk(Sq, H), mk(Sk, Hkv), mk(Sk, Hkv)


TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 77, 77, 4, 2, 32), (2, 40, 130, 4, 4, 64), (1, 129, 129, 6, 1, 64)])
@pytest.mark.parametrize("causal", [True, False])
def test_autograd_matches_reference(device, dtype, shape, causal):
    if device == "cuda" and (dtype == torch.float32 or shape[5] not in (64, 128)):
        pytest.skip("the CUDA backends take bf16 / fp16 and head dims 64 / 128 (the rest runs on the CPU)")
    B, Sq, Sk, H, Hkv, D = shape
    p = s2attn.local_stride(num_heads=H, num_kv_heads=Hkv, block_size=16, local_blocks=2, vert_stride=3,
                            causal=causal)
    q, k, v = inputs(B, Sq, Sk, H, Hkv, D, dtype, device, seed=Sq * 7 + H)
    out, lse = st.attention(q, k, v, p, return_lse=True)
    ref_out, ref_lse = reference(q, k, v, p)
    assert rel(out, ref_out) <= TOL[dtype]
    assert rel(lse, ref_lse) <= (1e-5 if dtype == torch.float32 else 1e-3)
    g = torch.randn_like(out.float()).to(dtype)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref_out, (q, k, v), g.double())
    for name, a, b in zip("qkv", grads, ref_grads):
        assert rel(a, b) <= TOL[dtype] * (1 if dtype == torch.float32 else 2), f"d{name}"


@pytest.mark.parametrize("device", DEVICES)
def test_lse_gradient(device):
    """A loss through the lse (as in context-parallel merges) gets exact gradients too."""
    p = s2attn.local_stride(num_heads=4, num_kv_heads=2, block_size=16, local_blocks=2, vert_stride=2)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16  # CUDA: bf16 / fp16 only
    q, k, v = inputs(2, 50, 70, 4, 2, 64, dtype, device, seed=3)
    out, lse = st.attention(q, k, v, p, return_lse=True)
    ref_out, ref_lse = reference(q, k, v, p)
    w = torch.randn_like(lse)
    loss = (out.square().sum() + (w * lse).sum())
    ref_loss = (ref_out.square().sum() + (w.double() * ref_lse).sum())
    grads = torch.autograd.grad(loss, (q, k, v))
    ref_grads = torch.autograd.grad(ref_loss, (q, k, v))
    for name, a, b in zip("qkv", grads, ref_grads):
        assert rel(a, b) <= (1e-5 if dtype == torch.float32 else 2e-2), f"d{name}"


def test_empty_rows_give_zero_and_no_nan():
    # bidirectional local window of width 1 with q_offset far past the keys: rows before position 0 see nothing
    p = s2attn.local_stride(num_heads=2, block_size=16, local_blocks=1, vert_stride=1000)
    q, k, v = inputs(1, 40, 40, 2, 2, 32, torch.float32, "cpu", seed=5)
    out, lse = st.attention(q, k, v, p, return_lse=True, q_offset=0)
    ref_out, ref_lse = reference(q, k, v, p, q_offset=0)
    assert rel(out, ref_out) <= 1e-5
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(x).all() for x in grads)


class TinyBlock(torch.nn.Module):
    """A pre-norm transformer block whose attention is s2attn."""

    def __init__(self, dim=64, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, (heads + 2 * kv_heads) * self.hd)
        self.proj = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))
        self.attn = st.LocalStrideSparseAttention(heads, 4096, 16, 2, 4, num_kv_heads=kv_heads)

    def forward(self, x):
        B, S, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, S, self.heads + 2 * self.kv_heads, self.hd)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        a = self.attn(q, k, v).reshape(B, S, -1)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    block = TinyBlock()
    x = torch.randn(2, 96, 64, requires_grad=True)
    eager = block(x)
    (ge,) = torch.autograd.grad(eager.sum(), x)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    y = compiled(x)
    (gc,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(y, eager, atol=1e-5, rtol=1e-5)
    assert torch.allclose(gc, ge, atol=1e-5, rtol=1e-5)


def test_opcheck():
    """torch.library's own consistency checks of the custom op (schema, fake tensor, autograd registration)."""
    p = s2attn.local_stride(num_heads=2, block_size=16, local_blocks=2, vert_stride=2)
    q, k, v = (t.detach() for t in inputs(1, 33, 33, 2, 2, 16, torch.float32, "cpu", seed=9))
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), st.pattern_key(p), 0.25, None, None, -1,
            False)
    torch.library.opcheck(torch.ops.s2attn.attention_forward.default, args)


@pytest.mark.parametrize("layout", ["bshd", "bhsd", "sbhd"])
def test_layouts_without_copies(layout, monkeypatch):
    """The native op receives the caller's memory (same data pointers), and the output has the input's layout."""
    p = s2attn.local_stride(num_heads=4, num_kv_heads=2, block_size=16, local_blocks=2, vert_stride=2)
    q, k, v = inputs(2, 48, 48, 4, 2, 32, torch.float32, "cpu", seed=11)
    perm = {"bshd": (0, 1, 2, 3), "bhsd": (0, 2, 1, 3), "sbhd": (1, 0, 2, 3)}[layout]
    qs, ks, vs = (x.detach().permute(*perm).contiguous() for x in (q, k, v))  # stored in `layout`
    seen = {}
    import s2attn.ops as sops

    real = sops.attention

    def spy(q_, k_, v_, *a, **kw):
        seen.update(q=q_.data_ptr(), k=k_.data_ptr(), v=v_.data_ptr())
        return real(q_, k_, v_, *a, **kw)

    monkeypatch.setattr(sops, "attention", spy)
    out = st.attention(qs, ks, vs, p, layout=layout)
    assert seen == {"q": qs.data_ptr(), "k": ks.data_ptr(), "v": vs.data_ptr()}
    assert out.shape == qs.shape and out.is_contiguous()
    ref_out, _ = reference(q, k, v, p)
    assert rel(out.permute(*perm) if layout != "bshd" else out, ref_out) <= 1e-5


def test_varlen_thd():
    p = s2attn.local_stride(num_heads=2, block_size=16, local_blocks=2, vert_stride=2)
    lens = [5, 40, 17]
    cu = torch.tensor([0] + list(np.cumsum(lens)), dtype=torch.int32)
    g = torch.Generator().manual_seed(2)
    T = int(cu[-1])
    q, k, v = (torch.randn(T, 2, 32, generator=g).requires_grad_() for _ in range(3))
    out = st.attention(q, k, v, p, cu_seqlens_q=cu, cu_seqlens_k=cu, layout="thd")
    gq = torch.autograd.grad(out.square().sum(), q)[0]
    for b, L in enumerate(lens):
        s, e = int(cu[b]), int(cu[b + 1])
        qq, kk, vv = (x[s:e][None] for x in (q, k, v))
        ro, _ = reference(qq, kk, vv, p)
        assert rel(out[s:e], ro[0]) <= 1e-5
        rg = torch.autograd.grad(ro.square().sum(), qq)[0]
        assert rel(gq[s:e], rg[0]) <= 1e-5


def test_local_stride_module_equals_functional():
    H, Hkv = 8, 4
    m = st.LocalStrideSparseAttention(H, 1024, 16, 3, 4, num_kv_heads=Hkv, num_dense_heads=1, head_sliding_offset=1)
    p = s2attn.local_stride(num_heads=H, num_kv_heads=Hkv, block_size=16, local_blocks=3, vert_stride=4,
                            num_dense_heads=1, head_sliding_offset=1)
    q, k, v = inputs(1, 150, 150, H, Hkv, 32, torch.float32, "cpu", seed=4)
    assert torch.equal(m(q, k, v), st.attention(q, k, v, p))
    # dkernel's seq_dim=2 layout and packed qkv
    m2 = st.LocalStrideSparseAttention(H, 1024, 16, 3, 4, num_kv_heads=Hkv, num_dense_heads=1, head_sliding_offset=1,
                                       seq_dim=2)
    out2 = m2(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    assert torch.equal(out2.transpose(1, 2), m(q, k, v))
    qkv = torch.cat([q, k, v], dim=2)
    split = lambda t: t.split([H, Hkv, Hkv], dim=2)  # noqa: E731
    assert torch.equal(m(qkv, split_qkv=split), m(q, k, v))


@pytest.mark.parametrize("H,Hkv,nd,offset,slices", [
    (8, 8, 0, 0, [(0, 4), (4, 8)]),
    (8, 4, 2, 1, [(0, 2), (2, 6), (6, 8)]),
    (16, 4, 1, 3, [(0, 8), (8, 16), (4, 12)]),
])
def test_active_head_range_slices(H, Hkv, nd, offset, slices):
    """Tensor parallelism: the module built for a head slice gives that slice of the full result."""
    full = st.LocalStrideSparseAttention(H, 2048, 16, 2, 8, num_kv_heads=Hkv, num_dense_heads=nd,
                                         head_sliding_offset=offset)
    q, k, v = inputs(1, 200, 200, H, Hkv, 16, torch.float32, "cpu", seed=H + nd)
    ref = full(q, k, v)
    g = H // Hkv
    for h0, h1 in slices:
        part = st.LocalStrideSparseAttention(H, 2048, 16, 2, 8, num_kv_heads=Hkv, num_dense_heads=nd,
                                             head_sliding_offset=offset, active_head_range=(h0, h1))
        out = part(q[:, :, h0:h1], k[:, :, h0 // g:h1 // g], v[:, :, h0 // g:h1 // g])
        assert torch.equal(out, ref[:, :, h0:h1]), (h0, h1)


def test_sparse_attention_module_block_mask():
    rng = np.random.default_rng(0)
    mask = rng.random((4, 8, 8)) < 0.5
    mask[:, np.arange(8), np.arange(8)] = True
    m = st.SparseAttention(16, torch.from_numpy(mask))
    q, k, v = inputs(1, 128, 128, 4, 4, 32, torch.float32, "cpu", seed=6)
    out = m(q, k, v)
    ref_out, _ = reference(q, k, v, s2attn.block_mask_pattern(mask, 4, 16))
    assert rel(out, ref_out) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("deterministic", [False, True])
def test_sparse_attention_module_block_mask_cuda_autograd(deterministic):
    """dkernel's block-mask module on CUDA tensors (per-KV-head mask, GQA, an empty query block): forward
    and gradients against the float64 reference."""
    rng = np.random.default_rng(3)
    mask = rng.random((2, 12, 12)) < 0.4
    mask[:, 3] = False
    m = st.SparseAttention(16, torch.from_numpy(mask), deterministic=deterministic)
    q, k, v = inputs(2, 180, 180, 4, 2, 64, torch.bfloat16, "cuda", seed=9)
    out = m(q, k, v)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(10)).to(out.dtype).to("cuda")
    out.backward(dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref_out, _ = reference(q64, k64, v64, s2attn.block_mask_pattern(mask, 4, 16, num_kv_heads=2))
    ref_out.backward(dout.double())
    assert rel(out, ref_out) <= 1e-2
    for x, r in ((q, q64), (k, k64), (v, v64)):
        assert rel(x.grad, r.grad) <= 1e-2


def test_padded_inference():
    m = st.LocalStrideSparseAttention(2, 1024, 16, 2, 2)
    q, k, v = (x.detach() for x in inputs(2, 64, 64, 2, 2, 32, torch.float32, "cpu", seed=8))
    pads = torch.tensor([0, 10])
    out, lse = m(q, k, v, left_paddings=pads, return_lse=True)
    assert torch.equal(out[0], m(q[:1], k[:1], v[:1])[0])
    alone = m(q[1:, 10:], k[1:, 10:], v[1:, 10:])
    assert torch.equal(out[1, 10:], alone[0]) and torch.all(out[1, :10] == 0)
    assert torch.all(torch.isneginf(lse[1, :, :10]))


def test_combine_partitions():
    """Outputs over disjoint key ranges merge into attention over their union (dense bidirectional)."""
    p = s2attn.dense(num_heads=2, block_size=16, causal=False)
    q, k, v = (x.detach() for x in inputs(1, 30, 90, 2, 2, 32, torch.float32, "cpu", seed=12))
    parts = [st.attention(q, k[:, a:b], v[:, a:b], p, return_lse=True) for a, b in ((0, 37), (37, 90))]
    full, full_lse = st.attention(q, k, v, p, return_lse=True)
    merged, merged_lse = st.combine_attn_partitions(*parts, return_lse=True)
    assert rel(merged, full) <= 1e-5 and rel(merged_lse, full_lse) <= 1e-6
    # a partition that saw nothing for some rows weighs nothing there; rows nobody saw give 0 / -inf
    o1, l1 = parts[0]
    l_empty = l1.clone()
    l_empty[:, :, :5] = float("-inf")
    o_empty = o1.clone()
    o_empty[:, :5] = 0
    out, lse = st.combine_attn_partitions((o_empty, l_empty), (torch.zeros_like(o1), torch.full_like(l1, -math.inf)),
                                          return_lse=True)
    assert torch.all(out[:, :5] == 0) and torch.all(torch.isneginf(lse[:, :, :5]))
    assert torch.isfinite(out).all()


def test_typed_errors():
    p = s2attn.local_stride(num_heads=2, block_size=16, local_blocks=2, vert_stride=2)
    q = torch.randn(1, 16, 2, 16)
    with pytest.raises(InvalidArgumentError) as e:
        st.attention(q, q, q, p, layout="bsdh")
    assert e.value.argument == "layout"
    with pytest.raises(InvalidArgumentError) as e:
        st.attention(q[0], q[0], q[0], p)
    assert e.value.argument == "q"
    with pytest.raises(InvalidArgumentError) as e:
        st.LocalStrideSparseAttention(8, 1024, 16, 2, 4, num_kv_heads=2, active_head_range=(0, 3))
    assert e.value.argument == "active_head_range"
    with pytest.raises(InvalidArgumentError) as e:
        st.attention(q, q, q, "not a pattern")
    assert e.value.argument == "pattern"
    with pytest.raises(InvalidArgumentError) as e:
        st.LocalStrideSparseAttention(2, 1024, 16, 2, 2)(q, q[:, :, :1].expand(1, 16, 3, 16), q)
    assert e.value.argument in ("k", "v")


def test_vllm_style_engine_steps_head_paged_keeps_only_needed_blocks():
    """The head-paged cache through S2PagedAttention: each KV head gets its own pages as tokens arrive; after
    every step the blocks no future query of the head needs are freed (table entry -1, page NaN-filled and
    reused), so the cache holds only what s2attn.needed_key_blocks says. Outputs equal the attention over
    the contiguous sequences, and the cache ends up smaller than a dense one."""
    from s2attn.torch.vllm import S2PagedAttention, S2PagedMetadata

    H, Hkv, D, page, pages = 4, 2, 32, 16, 160
    layer = S2PagedAttention(H, D, num_kv_heads=Hkv, block_size=page, local_blocks=2, vert_stride=3)
    g = torch.Generator().manual_seed(22)
    kv_cache = torch.full((2, pages, page, 1, D), float("nan"))
    free = torch.randperm(pages, generator=g).tolist()
    B, max_pages = 3, 16
    table = torch.full((B, Hkv, max_pages), -1, dtype=torch.int32)
    full_q, full_k, full_v = ([torch.empty(0, h, D) for _ in range(B)] for h in (H, Hkv, Hkv))
    lens = [0] * B
    steps = ([50, 17, 1], [30, 1, 40], [1, 1, 1], [1, 16, 1], [1, 1, 1])  # prefill, chunked, decode
    for step_tokens in steps:
        qs, ks, vs, slots = [], [], [], []
        for b, n in enumerate(step_tokens):
            q, k, v = (torch.randn(n, h, D, generator=g) for h in (H, Hkv, Hkv))
            pos = torch.arange(lens[b], lens[b] + n)
            slot = torch.empty(n, Hkv, dtype=torch.int64)
            for t, p_ in enumerate(pos.tolist()):
                for h in range(Hkv):
                    if table[b, h, p_ // page] < 0:  # the head's page of this block, allocated on first use
                        table[b, h, p_ // page] = free.pop()
                    slot[t, h] = int(table[b, h, p_ // page]) * page + p_ % page
            slots.append(slot)
            full_q[b], full_k[b], full_v[b] = (torch.cat([a, x]) for a, x in ((full_q[b], q), (full_k[b], k),
                                                                                (full_v[b], v)))
            lens[b] += n
            qs.append(q), ks.append(k), vs.append(v)
        cu = torch.tensor([0] + list(np.cumsum(step_tokens)), dtype=torch.int32)
        meta = S2PagedMetadata(block_table=table.clone(), seq_lens=torch.tensor(lens, dtype=torch.int32),
                               query_start_loc=cu, slot_mapping=torch.cat(slots))
        out = layer(torch.cat(qs), torch.cat(ks), torch.cat(vs), kv_cache, meta)
        for b, n in enumerate(step_tokens):
            ref = st.attention(full_q[b][None, -n:], full_k[b][None], full_v[b][None], layer.pattern)[0]
            assert rel(out[int(cu[b]):int(cu[b + 1])], ref) <= 1e-5
        # free what no future query of each KV head needs (the block being filled is always kept)
        for b in range(B):
            for h in range(Hkv):
                keep = set(s2attn.needed_key_blocks(layer.pattern, h, lens[b]).tolist()) | {(lens[b] - 1) // page}
                for j in range(max_pages):
                    if table[b, h, j] >= 0 and j not in keep:
                        kv_cache[:, int(table[b, h, j])] = float("nan")
                        free.append(int(table[b, h, j]))
                        table[b, h, j] = -1
    held = int((table >= 0).sum())
    dense = sum(-(-n // page) for n in lens) * Hkv
    assert held < dense, (held, dense)
    with pytest.raises(InvalidArgumentError) as e:  # [T] slots with a head-paged cache: which head?
        torch.ops.s2attn.write_kv_cache(torch.zeros(2, Hkv, D), torch.zeros(2, Hkv, D), kv_cache,
                                        torch.zeros(2, 3, dtype=torch.int64))
    assert e.value.argument == "slot_mapping"


def test_vllm_style_engine_steps():
    """Prefill, chunked prefill and decode through S2PagedAttention over a shuffled paged cache equal the
    attention over the contiguous sequences."""
    from s2attn.torch.vllm import S2PagedAttention, S2PagedMetadata

    H, Hkv, D, page, pages = 4, 2, 32, 16, 64
    layer = S2PagedAttention(H, D, num_kv_heads=Hkv, block_size=16, local_blocks=2, vert_stride=3)
    g = torch.Generator().manual_seed(21)
    kv_cache = torch.full((2, pages, page, Hkv, D), float("nan"))
    perm = torch.randperm(pages, generator=g)
    table = perm[:3 * 8].view(3, 8).to(torch.int32)  # 3 sequences, up to 8 pages each
    full_q, full_k, full_v = ([torch.empty(0, h, D) for _ in range(3)] for h in (H, Hkv, Hkv))
    lens = [0, 0, 0]
    for step_tokens in ([50, 17, 1], [30, 1, 40], [1, 1, 1]):  # prefill, chunked prefill + decode, decode
        qs, ks, vs, slots = [], [], [], []
        for b, n in enumerate(step_tokens):
            q, k, v = (torch.randn(n, h, D, generator=g) for h in (H, Hkv, Hkv))
            pos = torch.arange(lens[b], lens[b] + n)
            slots.append(table[b, pos // page].long() * page + pos % page)
            full_q[b], full_k[b], full_v[b] = (torch.cat([a, x]) for a, x in ((full_q[b], q), (full_k[b], k),
                                                                                (full_v[b], v)))
            lens[b] += n
            qs.append(q), ks.append(k), vs.append(v)
        cu = torch.tensor([0] + list(np.cumsum(step_tokens)), dtype=torch.int32)
        meta = S2PagedMetadata(block_table=table, seq_lens=torch.tensor(lens, dtype=torch.int32),
                               query_start_loc=cu, slot_mapping=torch.cat(slots))
        out = layer(torch.cat(qs), torch.cat(ks), torch.cat(vs), kv_cache, meta)
        for b, n in enumerate(step_tokens):
            ref = st.attention(full_q[b][None, -n:], full_k[b][None], full_v[b][None], layer.pattern)[0]
            assert rel(out[int(cu[b]):int(cu[b + 1])], ref) <= 1e-5


def test_raw_ops_take_grad_views_and_parameters():
    # torch tensors reach the binding as DLPack capsules (s2attn._arrays.native): a tensor that requires grad
    # is detached first, a subclass (Parameter) keeps its own protocol; all give the plain tensors' result
    g = torch.Generator().manual_seed(7)
    p = s2attn.local_stride(4, block_size=16, local_blocks=2, vert_stride=3)
    q, k, v = (torch.randn(1, 70, 4, 32, generator=g) for _ in range(3))
    ref = s2attn.attention(q, k, v, p)
    v_strided = v.transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] view of [B, H, S, D] storage
    got = s2attn.attention(q.clone().requires_grad_(), torch.nn.Parameter(k.clone(), requires_grad=False),
                           v_strided, p)
    assert torch.equal(got, ref)
    assert not got.requires_grad

"""Torch-only paged-KV inputs and float64 reference for the GPU tests (tests/python/test_gpu_paged.py) and
tools/gpu_small_case_paged.py: a cache with shuffled pages, NaN-poisoned page tails and spare pages,
optional -1 entries for pages no KV head needs, vLLM or head-paged layout. Needs torch, numpy, s2attn."""
import math

import torch

import s2attn


def make_cache(gen, pattern, ctx, q_lens, page_size, D, dtype, device, head_paged=False, drop_unneeded=False,
               varlen=False):
    """Returns a dict: q, k_pages, v_pages, block_table, context_lens, cu_seqlens_q (or None), and the
    per-sequence contiguous keys seq_k / seq_v ([ctx, Hkv, D]) and queries seq_q ([q_len, H, D])."""
    H, Hkv = pattern.num_heads, pattern.num_kv_heads
    B = len(ctx)
    q_lens = list(q_lens) if isinstance(q_lens, (list, tuple)) else [q_lens] * B
    ps, bs = page_size, pattern.block_size
    tables = Hkv if head_paged else 1
    per_page = 1 if head_paged else Hkv
    max_pages = max(1, math.ceil(max(ctx) / ps)) + 1
    num_pages = sum(math.ceil(n / ps) for n in ctx) * tables + 3
    perm = torch.randperm(num_pages, generator=gen)
    kp = torch.full((num_pages, ps, per_page, D), float("nan"), dtype=dtype)
    vp = torch.full((num_pages, ps, per_page, D), float("nan"), dtype=dtype)
    table = torch.full((B, tables, max_pages), -1, dtype=torch.int32)
    seq_k, seq_v, nxt = [], [], 0
    for b, n in enumerate(ctx):
        k = torch.randn(n, Hkv, D, generator=gen).to(dtype)
        v = torch.randn(n, Hkv, D, generator=gen).to(dtype)
        seq_k.append(k)
        seq_v.append(v)
        for t in range(tables):
            heads = slice(t, t + 1) if head_paged else slice(None)
            for p in range(math.ceil(n / ps)):
                e = int(perm[nxt])
                nxt += 1
                table[b, t, p] = e
                lo, hi = p * ps, min(n, (p + 1) * ps)
                kp[e, : hi - lo] = k[lo:hi, heads]
                vp[e, : hi - lo] = v[lo:hi, heads]
        if drop_unneeded:
            first = max(0, n - q_lens[b])
            keep = torch.zeros(tables, max_pages, dtype=torch.bool)
            for hk in range(Hkv):
                own = set(range(first // bs, -(-n // bs)))
                for j in set(s2attn.needed_key_blocks(pattern, hk, first).tolist()) | own:
                    lo, hi = j * bs, min(n, (j + 1) * bs)
                    keep[hk if head_paged else 0, lo // ps:(hi - 1) // ps + 1] = True
            table[b][~keep] = -1
    seq_q = [torch.randn(m, H, D, generator=gen).to(dtype) for m in q_lens]
    if varlen:
        q = torch.cat(seq_q, 0)
        cu = torch.tensor([0] + list(torch.cumsum(torch.tensor(q_lens), 0).tolist()), dtype=torch.int32)
    else:
        assert len(set(q_lens)) == 1
        q = torch.stack(seq_q, 0)
        cu = None
    bt = table if head_paged else table[:, 0].contiguous()
    dev = lambda x: None if x is None else x.to(device)  # noqa: E731
    return dict(q=dev(q), k_pages=dev(kp), v_pages=dev(vp), block_table=dev(bt),
                context_lens=dev(torch.tensor(ctx, dtype=torch.int32)), cu_seqlens_q=dev(cu),
                seq_k=seq_k, seq_v=seq_v, seq_q=seq_q, q_lens=q_lens)


def element_mask(p, sq, sk):
    """bool [H, sq, sk]: query row r at position sk - sq + r; the pattern's blocks from to_block_mask."""
    bs = p.block_size
    pos = sk - sq + torch.arange(sq)
    qb = torch.div(pos, bs, rounding_mode="floor")
    kb = torch.arange(sk) // bs
    m = torch.zeros(p.num_heads, sq, sk, dtype=torch.bool)
    if sq == 0 or sk == 0:
        return m
    lo, hi = max(int(qb.min()), 0), int(qb.max()) + 1
    if hi > lo:
        bm = torch.from_numpy(p.to_block_mask(hi - lo, int(kb.max()) + 1, lo).copy()).bool()
        ok = qb >= 0
        m = bm[:, torch.where(ok, qb - lo, 0)][:, :, kb] & ok[None, :, None]
        if p.causal:
            m &= (torch.arange(sk)[None, :] <= pos[:, None])[None]
    return m


def reference(c, pattern, scale=None):
    """float64 (out, lse) per sequence, concatenated in q's layout ([B, q, H, D] / [T, H, D]; lse
    [B, H, q] / [H, T])."""
    outs, lses = [], []
    for q, k, v in zip(c["seq_q"], c["seq_k"], c["seq_v"]):
        q, k, v = q.double(), k.double(), v.double()
        sq, sk, D = q.shape[0], k.shape[0], q.shape[-1]
        g = q.shape[1] // k.shape[1]
        m = element_mask(pattern, sq, sk)
        s = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(g, 1)) * (scale or 1 / math.sqrt(D))
        s = s.masked_fill(~m, -math.inf)
        mx = s.amax(-1, keepdim=True) if sk else torch.full((s.shape[0], sq, 1), -math.inf, dtype=s.dtype)
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        pr = torch.exp(s - mx).masked_fill(~m, 0)
        l = pr.sum(-1, keepdim=True)
        o = torch.einsum("hqk,khd->qhd", pr / torch.where(l == 0, torch.ones_like(l), l), v.repeat_interleave(g, 1))
        lse = torch.where(l == 0, torch.full_like(l, -math.inf), torch.log(torch.where(l == 0, torch.ones_like(l), l)) + mx)
        outs.append(o)
        lses.append(lse[..., 0])
    if c["cu_seqlens_q"] is not None:
        return torch.cat(outs, 0), torch.cat(lses, 1)
    return torch.stack(outs, 0), torch.stack(lses, 0)


def rel_err(x, ref):
    """||x - ref|| / ||ref|| over the finite entries of ref; inf where the infinite ones differ."""
    x, ref = x.double().cpu(), ref.double().cpu()
    fin = torch.isfinite(ref)
    if not torch.equal(x[~fin], ref[~fin]):
        return math.inf
    d = (x[fin] - ref[fin]).norm().item()
    n = ref[fin].norm().item()
    return d / n if n > 0 else d

"""A few small s2attn CUDA forward and backward calls for compute-sanitizer (memcheck, racecheck): odd
lengths, every block size and head dim, GQA, decode, bidirectional, varlen with an empty sequence and
Sq > Sk; the backward in both modes (atomic dQ and deterministic); block-mask patterns (device lists) with
an empty query block, per-head, per-KV-head and shared masks, and a paged decode with one. Checks the outputs against a float64
reference too; exits non-zero on a mismatch.

    compute-sanitizer --tool memcheck python3 tools/gpu_small_case.py
"""
import itertools
import math
import sys

import torch

import s2attn

DEV = torch.device("cuda")


def element_mask(p, sq, sk):
    off, bs = sk - sq, p.block_size
    pos = off + torch.arange(sq)
    qb = torch.div(pos, bs, rounding_mode="floor")
    kb = torch.arange(sk) // bs
    lo, hi = max(int(qb.min()), 0), int(qb.max()) + 1
    m = torch.zeros(p.num_heads, sq, sk, dtype=torch.bool)
    if hi > lo:
        bm = torch.from_numpy(p.to_block_mask(hi - lo, int(kb.max()) + 1, lo).copy()).bool()
        ok = qb >= 0
        m = bm[:, torch.where(ok, qb - lo, 0)][:, :, kb] & ok[None, :, None]
        if p.causal:
            m &= (torch.arange(sk)[None, :] <= pos[:, None])[None]
    return m.to(DEV)


def reference(q, k, v, m):
    q, k, v = q.double(), k.double(), v.double()
    g = q.shape[1] // k.shape[1]
    s = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(g, 1)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~m, -math.inf)
    mx = s.amax(-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(s - mx).masked_fill(~m, 0)
    l = p.sum(-1, keepdim=True)
    return torch.einsum("hqk,khd->qhd", p / torch.where(l == 0, torch.ones_like(l), l), v.repeat_interleave(g, 1))


def packed_inputs(lens_q, lens_k, H, Hkv, D, dtype, gen):
    """Random packed q [Tq, H, D], k / v [Tk, Hkv, D] on the device and their cu_seqlens."""
    Tq, Tk = sum(lens_q), sum(lens_k)
    q = torch.randn(Tq, H, D, generator=gen).to(dtype).to(DEV)
    k = torch.randn(Tk, Hkv, D, generator=gen).to(dtype).to(DEV)
    v = torch.randn(Tk, Hkv, D, generator=gen).to(dtype).to(DEV)
    cu_q = torch.tensor([0, *itertools.accumulate(lens_q)], dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0, *itertools.accumulate(lens_k)], dtype=torch.int32, device=DEV)
    return q, k, v, cu_q, cu_k


def packed_reference(q, k, v, p, lens_q, lens_k):
    """The float64 reference output of packed sequences, one sequence at a time."""
    ref = torch.zeros(q.shape, dtype=torch.float64, device=DEV)
    q0 = k0 = 0
    for sq, sk in zip(lens_q, lens_k):
        if sq:
            ref[q0:q0 + sq] = reference(q[q0:q0 + sq], k[k0:k0 + sk], v[k0:k0 + sk], element_mask(p, sq, sk))
        q0, k0 = q0 + sq, k0 + sk
    return ref


def packed_reference_grads(q, k, v, dout, p, lens_q, lens_k):
    """[dq, dk, dv] of the float64 reference (torch autograd) for packed sequences, one at a time."""
    ref = [torch.zeros(x.shape, dtype=torch.float64, device=DEV) for x in (q, k, v)]
    q0 = k0 = 0
    for sq, sk in zip(lens_q, lens_k):
        if sq and sk:
            x = [t.detach().double().requires_grad_() for t in (q[q0:q0 + sq], k[k0:k0 + sk], v[k0:k0 + sk])]
            reference(*x, element_mask(p, sq, sk)).backward(dout[q0:q0 + sq].double())
            ref[0][q0:q0 + sq], ref[1][k0:k0 + sk], ref[2][k0:k0 + sk] = (t.grad for t in x)
        q0, k0 = q0 + sq, k0 + sk
    return ref


def hopper_missing(label):
    """Why the Hopper cases cannot run here (printed as `label: why; nothing to check`), or None."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        why = "no compute capability 9.0 GPU"
    elif not s2attn.backend_available("cuda_sm90"):
        why = "this build has no Hopper path"
    else:
        return None
    print(f"{label}: {why}; nothing to check")
    return why


def unless_not_built(name, case, *args, **kwargs):
    """case(*args, **kwargs), or True with a note where a reduced build (S2ATTN_SM90_VARIANTS) lacks the case's
    Hopper kernels (the backward's "variant is not built", the forward's "has no forward kernel"): skipped and
    said, not failed, so that the cases after it still run under the sanitizers."""
    try:
        return case(*args, **kwargs)
    except s2attn.UnsupportedError as e:
        if "not built" not in str(e) and "has no forward kernel" not in str(e):
            raise
        print(f"{name}: skipped ({e})")
        return True


def check(name, out, ref):
    assert not torch.isnan(out).any(), f"{name}: NaN in the output"
    err = ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    print(f"{name}: rel err {err:.2e}")
    return err <= 1e-2


def make_pattern(mask, lens_q, lens_k, H, Hkv, bs, causal, gen):
    """local_stride, the dense pattern (mask = "dense"), or (mask = "1" | "kv" | "h") a random block mask of
    that many heads covering the totals (the front door cannot read device lengths), query block 1 seeing
    nothing."""
    if mask is None:
        return s2attn.local_stride(H, bs, 2, 3, causal=causal, num_kv_heads=Hkv)
    if mask == "dense":
        return s2attn.dense(H, bs, causal=causal, num_kv_heads=Hkv)
    n = -(-max(sum(lens_q), sum(lens_k)) // bs) + 1
    m = torch.rand({"1": 1, "kv": Hkv, "h": H}[mask], n, n, generator=gen) < 0.4
    m[:, 1] = False
    return s2attn.block_mask_pattern(m.numpy(), H, bs, causal=causal, num_kv_heads=Hkv)


def run(name, lens_q, lens_k, H, Hkv, D, bs, causal, dtype, gen, mask=None):
    p = make_pattern(mask, lens_q, lens_k, H, Hkv, bs, causal, gen)
    q, k, v, cu_q, cu_k = packed_inputs(lens_q, lens_k, H, Hkv, D, dtype, gen)
    if len(lens_q) == 1:  # dense batch of one
        out = s2attn.attention(q[None], k[None], v[None], p)[0]
    else:
        out = s2attn.attention(q, k, v, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    torch.cuda.synchronize()
    return check(name, out, packed_reference(q, k, v, p, lens_q, lens_k))


def run_backward(name, lens_q, lens_k, H, Hkv, D, bs, causal, dtype, deterministic, gen, mask=None):
    """Backward (dq, dk, dv) against torch autograd of the float64 reference, per sequence."""
    p = make_pattern(mask, lens_q, lens_k, H, Hkv, bs, causal, gen)
    q, k, v, cu_q, cu_k = packed_inputs(lens_q, lens_k, H, Hkv, D, dtype, gen)
    dout = torch.randn(q.shape, generator=gen).to(dtype).to(DEV)
    out, lse = s2attn.attention(q, k, v, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True)
    got = s2attn.attention_backward(dout, q, k, v, out, lse, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                    deterministic=deterministic)
    torch.cuda.synchronize()
    ref = packed_reference_grads(q, k, v, dout, p, lens_q, lens_k)
    return all([check(f"{name} {g}", x, r) for g, x, r in zip(("dq", "dk", "dv"), got, ref)])


def run_paged_mask(name, ctx, page, H, Hkv, D, bs, gen):
    """Paged decode (one query per sequence) over a random per-head block mask, against the reference on
    the gathered keys."""
    p = make_pattern("h", [max(ctx)], [max(ctx)], H, Hkv, bs, True, gen)
    B, pages = len(ctx), [-(-c // page) for c in ctx]
    table = torch.full((B, max(pages)), -1, dtype=torch.int32)
    k_pages = torch.randn(sum(pages), page, Hkv, D, generator=gen).to(torch.bfloat16)
    v_pages = torch.randn(sum(pages), page, Hkv, D, generator=gen).to(torch.bfloat16)
    perm = torch.randperm(sum(pages), generator=gen)
    e = 0
    for b in range(B):
        table[b, :pages[b]] = perm[e:e + pages[b]]
        e += pages[b]
    q = torch.randn(B, 1, H, D, generator=gen).to(torch.bfloat16)
    out = s2attn.paged_attention(q.to(DEV), k_pages.to(DEV), v_pages.to(DEV), table.to(DEV),
                                 torch.tensor(ctx, dtype=torch.int32, device=DEV), p)
    torch.cuda.synchronize()
    ok = True
    for b in range(B):
        rows = table[b, :pages[b]].long()
        k = k_pages[rows].reshape(-1, Hkv, D)[:ctx[b]].to(DEV)
        v = v_pages[rows].reshape(-1, Hkv, D)[:ctx[b]].to(DEV)
        ok &= check(f"{name} seq{b}", out[b], reference(q[b].to(DEV), k, v, element_mask(p, 1, ctx[b])))
    return ok


def main():
    gen = torch.Generator().manual_seed(0)
    ok = True
    ok &= run("odd-77-bs16-d64-gqa", [77], [77], 4, 2, 64, 16, True, torch.bfloat16, gen)
    ok &= run("decode-bs128-d128", [1], [203], 2, 1, 128, 128, True, torch.float16, gen)
    ok &= run("chunk-bs64-d128", [70], [203], 2, 2, 128, 64, True, torch.bfloat16, gen)
    ok &= run("bidir-bs32-d64", [50], [70], 2, 2, 64, 32, False, torch.float16, gen)
    ok &= run("varlen-bs64-d128", [1, 17, 0, 40, 90], [1, 30, 5, 40, 60], 4, 2, 128, 64, True, torch.bfloat16, gen)
    ok &= run("varlen-bs16-d64", [33, 7], [20, 100], 2, 1, 64, 16, True, torch.float16, gen)
    ok &= run_backward("bwd-varlen-bs64-d128", [1, 17, 0, 40, 90], [1, 30, 5, 40, 60], 4, 2, 128, 64, True,
                       torch.bfloat16, False, gen)
    # dense at D = 128, non-deterministic: the Hopper backward's fused-dQ candidate for dense patterns
    ok &= run_backward("bwd-dense-varlen-bs64-d128", [1, 17, 0, 40, 90], [1, 30, 5, 40, 60], 4, 2, 128, 64, True,
                       torch.bfloat16, False, gen, mask="dense")
    ok &= run_backward("bwd-varlen-bs16-d64-det", [33, 7], [20, 100], 2, 1, 64, 16, True, torch.float16, True, gen)
    ok &= run_backward("bwd-bidir-bs128-d64", [77], [77], 2, 2, 64, 128, False, torch.bfloat16, False, gen)
    ok &= run_backward("bwd-chunk-bs32-d128-det", [50], [130], 4, 2, 128, 32, True, torch.float16, True, gen)
    ok &= run("mask-h-varlen-bs16-d64", [33, 7, 0, 50], [20, 100, 5, 50], 4, 2, 64, 16, True, torch.bfloat16, gen,
              mask="h")
    ok &= run("mask-kv-bidir-bs128-d128", [130], [130], 4, 2, 128, 128, False, torch.float16, gen, mask="kv")
    ok &= run("mask-1-chunk-bs32-d64", [40], [150], 2, 1, 64, 32, True, torch.bfloat16, gen, mask="1")
    ok &= run_backward("bwd-mask-h-varlen-bs16-d64", [33, 7, 0, 50], [20, 100, 5, 50], 4, 2, 64, 16, True,
                       torch.bfloat16, False, gen, mask="h")
    ok &= run_backward("bwd-mask-kv-chunk-bs64-d128-det", [50], [130], 4, 2, 128, 64, True, torch.float16, True,
                       gen, mask="kv")
    ok &= run_backward("bwd-mask-1-bidir-bs32-d64-det", [70], [70], 2, 2, 64, 32, False, torch.bfloat16, True,
                       gen, mask="1")
    # atomic dQ, block 128 at D = 128: under a 99 KiB shared-memory cap, four 32-row steps a block
    ok &= run_backward("bwd-mask-h-bidir-bs128-d128", [140], [140], 4, 2, 128, 128, False, torch.bfloat16, False,
                       gen, mask="h")
    ok &= run_paged_mask("paged-decode-mask-h-bs16-d128", [300, 37], 16, 8, 2, 128, 16, gen)
    print("small cases:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

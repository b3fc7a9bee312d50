"""Context parallelism on the GPU backends, in two parts.

1. One process, every backend here (CPU always; the CUDA paths where torch sees a GPU): the whole algorithm
   simulated rank by rank without a process group. Each rank's key buffer holds its local keys and the keys
   the planner sends it, the other slots hold a fill value (0 as in production, or NaN); each local segment
   runs through the backend's forward and backward on that buffer, the dK/dV of every buffer slot that holds
   a key go back to its token, and the sums must equal the backend's own single-sequence result. This is
   what shows whether a kernel reads only the blocks the pattern shows (NaN) and whether the production
   fill is exact (0).
2. Two or more GPUs: context_parallel_attention over NCCL against the single-GPU result (the gloo test's
   cases, bf16). Skipped with fewer than 2 GPUs.
"""
import datetime
import os
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import s2attn  # noqa: E402
from s2attn.distributed import Sharding, plan_context_parallel  # noqa: E402
from s2attn.distributed import attention as cp  # noqa: E402

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _backends():
    out = ["cpu"]
    if GPUS:
        out += [b for b in ("cuda_sm80", "cuda_sm90") if s2attn.backend_available(b)]
    return out


def _simulate(pattern, sh, q, k, v, do, backend, fill):
    """Out, dq, dk, dv of the sharded algorithm, run rank by rank in one process (bshd, full-sequence order)."""
    dev = q.device
    out, dq = torch.empty_like(q), torch.empty_like(q)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=dev)
    dv = torch.zeros_like(dk)
    bwd_backend = "auto" if backend == "cuda_sm90" else backend  # the Hopper path's backward is the portable one
    plan = plan_context_parallel(pattern, sh)
    old, cp.BUFFER_FILL = cp.BUFFER_FILL, fill
    try:
        for rank in range(sh.world_size):
            rp = cp.RankPlan(plan, rank, dev)
            received = {src: torch.stack([cp._flat(k).index_select(1, idx), cp._flat(v).index_select(1, idx)])
                        for src, _, idx in rp.recv}  # buffer index == full-sequence index
            kbuf, vbuf = cp._key_buffers(rp, sh.shard(k, rank), sh.shard(v, rank), received)
            held = torch.zeros(rp.buffer_len * k.shape[2], dtype=torch.bool, device=dev)  # slots holding a key
            for s, e, _ in rp.segments:
                held.view(rp.buffer_len, -1)[s:e] = True
            for _, _, idx in rp.recv:
                held[idx] = True
            gk = torch.zeros(kbuf.shape, dtype=torch.float32, device=dev)
            gv = torch.zeros_like(gk)
            for s, e, _ in rp.segments:
                o, lse = s2attn.attention(q[:, s:e], kbuf[:, :e], vbuf[:, :e], pattern, return_lse=True,
                                          backend=backend)
                g = s2attn.attention_backward(do[:, s:e].contiguous(), q[:, s:e], kbuf[:, :e], vbuf[:, :e], o, lse,
                                              pattern, backend=bwd_backend)
                out[:, s:e], dq[:, s:e] = o, g[0]
                gk[:, :e] += g[1].float()
                gv[:, :e] += g[2].float()
            n = rp.buffer_len
            held = held.view(n, -1)
            dk[:, :n] += torch.where(held[None, :, :, None], gk, 0.0)
            dv[:, :n] += torch.where(held[None, :, :, None], gv, 0.0)
    finally:
        cp.BUFFER_FILL = old
    return out, dq, dk, dv


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


@pytest.mark.parametrize("fill", [0.0, float("nan")], ids=["zero", "nan"])
@pytest.mark.parametrize("block", [16, 64, 128])
@pytest.mark.parametrize("kind", ["contiguous", "zigzag"])
@pytest.mark.parametrize("backend", _backends())
def test_sharded_buffers_equal_the_full_sequence(backend, kind, block, fill):
    if backend == "cuda_sm90" and block < 64:
        pytest.skip("the Hopper kernels take blocks of 64 and 128 (forced cuda_sm90 raises Unsupported below)")
    cuda = backend != "cpu"
    dev, dtype, tol = ("cuda", torch.bfloat16, 2e-2) if cuda else ("cpu", torch.float32, 1e-5)
    S, P, H, Hkv, D = 8 * block + 37, 4, 4, 2, 64  # unaligned shard boundaries
    pattern = s2attn.local_stride(H, block, local_blocks=2, vert_stride=3, num_kv_heads=Hkv, head_sliding_step=1,
                                  num_dense_heads=1 if block == 64 else 0)
    g = torch.Generator().manual_seed(block)
    q, do = (torch.randn(1, S, H, D, generator=g).to(dtype).to(dev) for _ in range(2))
    k, v = (torch.randn(1, S, Hkv, D, generator=g).to(dtype).to(dev) for _ in range(2))
    ref, lse = s2attn.attention(q, k, v, pattern, return_lse=True, backend=backend)
    bwd_backend = "auto" if backend == "cuda_sm90" else backend
    want = (ref,) + tuple(s2attn.attention_backward(do, q, k, v, ref, lse, pattern, backend=bwd_backend))
    got = _simulate(pattern, Sharding(S, P, kind), q, k, v, do, backend, fill)
    errs = {n: _rel(a, b) for n, a, b in zip(("out", "dq", "dk", "dv"), got, want)}
    finite = {n: bool(torch.isfinite(a).all()) for n, a in zip(("out", "dq", "dk", "dv"), got)}
    print(f"{backend} {kind} block {block} fill {fill}: rel errors {errs} finite {finite}")
    assert all(finite.values()) and all(e <= tol for e in errs.values()), (errs, finite)


# ---------------------------------------------------------------------------------------------------------
# NCCL

def _nccl_worker(rank, world, port):
    import torch.distributed as dist
    import s2attn.torch as st
    from s2attn.distributed import context_parallel_attention

    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=dev, timeout=datetime.timedelta(seconds=120))
    errors = []
    try:
        for name, pattern in (("gqa_dense", s2attn.local_stride(8, 64, local_blocks=4, vert_stride=4, num_kv_heads=2,
                                                                num_dense_heads=1)),
                              ("offsets_sink", s2attn.local_stride(4, 64, local_blocks=2, vert_stride=3,
                                                                   head_sliding_step=2,
                                                                   head_sliding_offset=1).with_sink(1))):
            for S in (64 * 8 * world, 64 * 8 * world + 77):
                for kind in ("contiguous", "zigzag"):
                    H, Hkv = pattern.num_heads, pattern.num_kv_heads
                    g = torch.Generator().manual_seed(S)
                    q, do = (torch.randn(1, S, H, 64, generator=g).to(dev, torch.bfloat16) for _ in range(2))
                    k, v = (torch.randn(1, S, Hkv, 64, generator=g).to(dev, torch.bfloat16) for _ in range(2))
                    full = [x.clone().requires_grad_() for x in (q, k, v)]
                    ref = st.attention(*full, pattern)
                    ref.backward(do)
                    sh = Sharding(S, world, kind)
                    loc = [sh.shard(x, rank).clone().requires_grad_() for x in (q, k, v)]
                    out = context_parallel_attention(*loc, pattern, sh)
                    out.backward(sh.shard(do, rank))
                    for n, a, b in [("out", out, ref)] + [(f"d{c}", x.grad, y.grad) for c, x, y in zip("qkv", loc, full)]:
                        err = _rel(a.detach(), sh.shard(b.detach(), rank))
                        if not err <= 2e-2:
                            errors.append(f"{name} {kind} S={S} rank {rank}: {n} rel error {err:.3g}")
        assert not errors, "\n".join(errors)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(GPUS < 2, reason="needs 2 or more CUDA GPUs (NCCL)")
def test_nccl_matches_single_gpu():
    import socket
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_nccl_worker, args=(min(GPUS, 4), port), nprocs=min(GPUS, 4), join=True)


# ---------------------------------------------------------------------------------------------------------
# The dense ring baseline's kernels (bench/dense_ring.py) against SDPA's autograd

@pytest.mark.parametrize("causal", [True, False])
def test_dense_ring_flash_helpers(causal):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    import dense_ring

    dev, dtype, tol = ("cuda", torch.bfloat16, 2e-2) if GPUS else ("cpu", torch.float32, 1e-5)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 96, 64, generator=g).to(dev, dtype).requires_grad_()
    k, v = (torch.randn(1, 4, 96 if causal else 160, 64, generator=g).to(dev, dtype).requires_grad_()
            for _ in range(2))
    do = torch.randn_like(q)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ref.backward(do)
    out, lse = dense_ring._flash_forward(q.detach(), k.detach(), v.detach(), causal, 64 ** -0.5)
    grads = dense_ring._flash_backward(do, q.detach(), k.detach(), v.detach(), out, lse, causal, 64 ** -0.5)
    assert lse.dtype == torch.float32 and lse.shape == (1, 4, 96)
    for a, b in zip((out,) + tuple(grads), (ref, q.grad, k.grad, v.grad)):
        assert _rel(a, b) <= tol
    # the ring passes segments of longer rows (zig-zag shards): strided views, an lse slice included
    pad = lambda x: torch.cat([x.new_zeros(x.shape[:2] + (32,) + x.shape[3:]), x], 2)  # noqa: E731
    views = [pad(x.detach())[:, :, 32:] for x in (do, q, k, v, out)]
    lse_view = torch.cat([lse.new_zeros(lse.shape[:2] + (32,)), lse], 2)[:, :, 32:]
    assert not lse_view.is_contiguous()
    strided = dense_ring._flash_backward(*views[:4], views[4], lse_view, causal, 64 ** -0.5)
    for a, b in zip(strided, grads):
        assert _rel(a, b) <= 1e-6

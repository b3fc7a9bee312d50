"""The main job: S2 attention on the best backend this machine has, checked against dense masked
attention, timed against the dense causal pattern on the same backend.

    python -m s2attn demo [--heads 8 --seqlen 8192 --head-dim 64 --block 64 --local 16 --stride 8] [--cpu]

On a GPU (a CUDA build and torch seeing a device) it runs bf16 at H=32 S=32768 D=128 by default.
"""
import argparse
import os
import sys
import time

import numpy as np

import s2attn
from s2attn._timing import median_seconds, causal_attention_flops


def _progress(msg):
    print(f"[s2attn demo] {msg}", flush=True)


def _reference_rows(q, k, v, block_mask, block, scale, h, h_kv, rows):
    """float64 dense masked attention for query rows `rows` of head h (causal, equal lengths)."""
    qh = q[0, rows, h].astype(np.float64)
    kh = k[0, :, h_kv].astype(np.float64)
    vh = v[0, :, h_kv].astype(np.float64)
    s = (qh @ kh.T) * scale
    S = k.shape[1]
    qpos = np.arange(rows.start, rows.stop)[:, None]
    kpos = np.arange(S)[None, :]
    visible = block_mask[h][qpos // block, kpos // block].astype(bool) & (kpos <= qpos)
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    p = np.exp(s - m)
    return (p / p.sum(axis=1, keepdims=True)) @ vh


def _pick_backend():
    """'cuda' where this build has a CUDA backend and torch sees a GPU (the demo's GPU tensors come from
    torch), else 'cpu'."""
    if not (s2attn.backend_available("cuda_sm80") or s2attn.backend_available("cuda_sm90")):
        return "cpu"
    try:
        import torch
    except ImportError:
        _progress("a CUDA backend is built but torch is not installed: running on the CPU")
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _report(backend, density, t_s2, t_dense, flops, rel_err, ok, unit=1e9, unit_name="GFLOP/s"):
    speedup = t_dense / t_s2
    print()
    print(f"  backend            {backend}")
    print(f"  density            {density:.4f}")
    print(f"  S2 attention       {t_s2 * 1e3:9.3f} ms   {flops * density / t_s2 / unit:7.1f} effective {unit_name}")
    print(f"  dense causal       {t_dense * 1e3:9.3f} ms   {flops / t_dense / unit:7.1f} {unit_name}")
    print(f"  speedup            {speedup:.2f}x  (ideal 1/density {1 / density:.2f}x, "
          f"{speedup * density:.2f} of ideal)")
    print(f"  correctness        rel. error {rel_err:.2e} vs float64 dense masked attention: "
          f"{'OK' if ok else 'FAILED'}")


def run_gpu(heads=32, seqlen=32768, head_dim=128, block=64, local=16, stride=8, repeats=20, seed=0):
    """The GPU demo: bf16 torch tensors, the backend the dispatcher picks (Hopper path on sm_90 where it has a
    kernel, else the portable one), checked against float64 masked attention on the GPU, timed with CUDA events."""
    import torch

    dev = torch.device("cuda")
    _progress(f"backend: cuda ({torch.cuda.get_device_name()}); B=1 H={heads} S={seqlen} D={head_dim} bf16, "
              f"block {block}, local {local}, vert_stride {stride}, causal")
    pattern = s2attn.local_stride(heads, block, local, stride)
    dense = s2attn.dense(heads, block)
    density = pattern.density(seqlen)
    _progress(f"pattern density {density:.4f}; ideal speedup over dense 1/density = {1 / density:.2f}x")
    g = torch.Generator(device=dev).manual_seed(seed)
    q, k, v = (torch.randn(1, seqlen, heads, head_dim, device=dev, dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    _progress("running S2 attention (first call) ...")
    out = s2attn.attention(q, k, v, pattern)
    torch.cuda.synchronize()

    _progress("checking against float64 dense masked attention (torch, on the GPU) ...")
    nq = (seqlen + block - 1) // block
    block_mask = torch.from_numpy(pattern.to_block_mask(nq)).to(dev).bool()
    scale = 1.0 / head_dim ** 0.5
    num = den = 0.0
    chunk = 2048
    kpos = torch.arange(seqlen, device=dev)
    for h in range(heads):
        kh, vh = k[0, :, h].double(), v[0, :, h].double()
        for r0 in range(0, seqlen, chunk):
            qpos = torch.arange(r0, min(r0 + chunk, seqlen), device=dev)
            s_ = (q[0, qpos, h].double() @ kh.T) * scale
            vis = block_mask[h][qpos // block][:, kpos // block] & (kpos[None] <= qpos[:, None])
            ref = torch.softmax(s_.masked_fill(~vis, float("-inf")), dim=-1) @ vh
            num += float(((out[0, qpos, h].double() - ref) ** 2).sum())
            den += float((ref ** 2).sum())
        print(f"\r[s2attn demo]   reference head {h + 1}/{heads}", end="", flush=True)
    print(flush=True)
    rel_err = (num / den) ** 0.5
    ok = rel_err <= 1e-2 and bool(torch.isfinite(out).all())
    _progress(f"relative error vs dense masked float64 reference: {rel_err:.2e} ({'OK' if ok else 'FAILED'}, "
              f"bound 1e-2 for bf16)")

    def timed(pat):
        for _ in range(3):
            s2attn.attention(q, k, v, pat, out=out)
        times = []
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            s2attn.attention(q, k, v, pat, out=out)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return sorted(times)[len(times) // 2]

    _progress(f"timing S2 attention and dense causal attention on the same backend (median of {repeats}) ...")
    t_s2, t_dense = timed(pattern), timed(dense)
    flops = causal_attention_flops(1, heads, seqlen, seqlen, head_dim)
    _report("cuda", density, t_s2, t_dense, flops, rel_err, ok, unit=1e12, unit_name="TFLOP/s")
    return ok


def run(heads=8, seqlen=8192, head_dim=64, block=64, local=16, stride=8, threads=0, repeats=3, seed=0):
    backend = "cpu"
    threads = threads or os.cpu_count()
    _progress(f"backend: {backend} ({threads} threads); B=1 H={heads} S={seqlen} D={head_dim} float32, "
              f"block {block}, local {local}, vert_stride {stride}, causal")
    pattern = s2attn.local_stride(heads, block, local, stride)
    dense = s2attn.dense(heads, block)
    density = pattern.density(seqlen)
    _progress(f"pattern density {density:.4f} (visible blocks / causal blocks); "
              f"ideal speedup over dense 1/density = {1 / density:.2f}x")

    rng = np.random.default_rng(seed)
    shape = (1, seqlen, heads, head_dim)
    q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))

    _progress("running S2 attention (first call) ...")
    out, lse = s2attn.attention(q, k, v, pattern, return_lse=True, num_threads=threads)

    _progress("checking against float64 dense masked attention (numpy) ...")
    nq = (seqlen + block - 1) // block
    block_mask = pattern.to_block_mask(nq)
    scale = 1.0 / np.sqrt(head_dim)
    chunk = 1024
    num, den = 0.0, 0.0
    t0 = time.perf_counter()
    for h in range(heads):
        for r0 in range(0, seqlen, chunk):
            rows = slice(r0, min(r0 + chunk, seqlen))
            ref = _reference_rows(q, k, v, block_mask, block, scale, h, h, rows)
            num += float(((out[0, rows, h] - ref) ** 2).sum())
            den += float((ref ** 2).sum())
        print(f"\r[s2attn demo]   reference head {h + 1}/{heads} ({time.perf_counter() - t0:.0f} s)",
              end="", flush=True)
    print(flush=True)
    rel_err = (num / den) ** 0.5
    ok = rel_err <= 1e-5 and np.isfinite(out).all()
    _progress(f"relative error vs dense masked float64 reference: {rel_err:.2e} "
              f"({'OK' if ok else 'FAILED'}, bound 1e-5)")

    _progress(f"timing S2 attention (median of {repeats}) ...")
    t_s2 = median_seconds(lambda: s2attn.attention(q, k, v, pattern, out=out, num_threads=threads), repeats)
    _progress(f"timing dense causal attention on the same backend (median of {repeats}) ...")
    t_dense = median_seconds(lambda: s2attn.attention(q, k, v, dense, out=out, num_threads=threads), repeats)

    flops = causal_attention_flops(1, heads, seqlen, seqlen, head_dim)
    _report(backend, density, t_s2, t_dense, flops, rel_err, ok)
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m s2attn demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=int, default=None, help="default 8 on CPU, 32 on a GPU")
    ap.add_argument("--seqlen", type=int, default=None, help="default 8192 on CPU, 32768 on a GPU")
    ap.add_argument("--head-dim", type=int, default=None, help="default 64 on CPU, 128 on a GPU")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--local", type=int, default=16)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU backend even where a GPU is available")
    a = ap.parse_args(argv)
    if not a.cpu and _pick_backend() == "cuda":
        ok = run_gpu(a.heads or 32, a.seqlen or 32768, a.head_dim or 128, a.block, a.local, a.stride)
    else:
        ok = run(a.heads or 8, a.seqlen or 8192, a.head_dim or 64, a.block, a.local, a.stride, a.threads,
                 a.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Context parallelism: what s2attn's sparse-aware plan moves next to a dense ring, and (on >= 2 GPUs) how long
it takes over NCCL against a dense ring attention built from SDPA's flash kernels (bench/dense_ring.py).

    .venv/bin/python bench/context_parallel.py                 # planner only (CPU, no compute): bytes for
                                                               # 256k-1M tokens -> bench/results/context_parallel_planner.json
    .venv/bin/python bench/context_parallel.py --gpu           # timings on every visible GPU (NCCL), JSON out
    .venv/bin/python bench/context_parallel.py --cpu-smoke     # the --gpu code path on CPU processes (gloo),
                                                               # tiny shapes: checks it end to end
    .venv/bin/python bench/context_parallel.py --plot A.json B.json --out C.png   # plot of --gpu results

Shape (DESIGN §4): H=32, Hkv=8 (GQA), D=128, block 64, L=16, V in {8, 16, 32}, bf16, causal, B=1. Bytes are
K+V received in the forward, summed over ranks (per_kv_head: each KV head receives its own blocks, s2attn's
plan; union_heads: a token is sent with all KV heads when any head needs it; dense_ring: (P-1)/P of the
sequence per rank; dense_causal: every earlier token held elsewhere). The timed rows check their outputs and
gradients against single-device references at a small length first (errors are reported, not hidden).
"""
import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time

import s2attn
from s2attn.distributed import Sharding, plan_context_parallel

SHAPE = dict(H=32, Hkv=8, D=128, block=64, local_blocks=16, B=1)


def pattern_for(V, shape=SHAPE):
    return s2attn.local_stride(shape["H"], shape["block"], local_blocks=shape["local_blocks"], vert_stride=V,
                               num_kv_heads=shape["Hkv"])


def meta_common(args):
    return dict(s2attn=s2attn.__version__, python=platform.python_version(), machine=platform.machine(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([sys.executable] + sys.argv), shape=SHAPE)


def write(path, meta, rows, errors=()):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(meta=meta, results=rows, errors=list(errors)), f, indent=1)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------
# Planner: bytes only

def planner(args):
    rows = []
    print(f"{'S':>8}{'P':>4} {'sharding':<11}{'V':>4}{'per-KV-head':>13}{'union':>9}{'dense ring':>12}"
          f"{'ratio':>8}{'vs causal':>10}{'busiest rank':>14}{'plan s':>8}")
    for S in args.seqlens:
        density = {V: pattern_for(V).density(S) for V in args.strides}  # seconds at 1M tokens: once per S
        for P in args.worlds:
            for kind in args.shardings:
                for V in args.strides:
                    t0 = time.perf_counter()
                    plan = plan_context_parallel(pattern_for(V), Sharding(S, P, kind))
                    t = time.perf_counter() - t0
                    s = plan.summary(head_dim=SHAPE["D"], itemsize=2, batch=SHAPE["B"])
                    s.update(V=V, local_blocks=SHAPE["local_blocks"], plan_seconds=round(t, 4),
                             density=density[V])
                    rows.append(s)
                    gib = 2.0 ** 30
                    print(f"{S:>8}{P:>4} {kind:<11}{V:>4}{s['bytes_per_kv_head'] / gib:>11.2f}Gi"
                          f"{s['bytes_union_heads'] / gib:>7.1f}Gi{s['bytes_dense_ring'] / gib:>10.1f}Gi"
                          f"{s['ratio_vs_dense_ring']:>8.3f}{s['ratio_vs_dense_causal']:>10.3f}"
                          f"{s['max_rank_bytes_per_kv_head'] / gib:>12.2f}Gi{t:>8.2f}", flush=True)
    meta = meta_common(args)
    meta.update(mode="planner", dtype="bf16", note="bytes of K+V received in the forward, summed over ranks; "
                "the backward returns dK/dV of the same keys (same count)")
    write(args.out, meta, rows)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Timed runs (NCCL on GPUs; gloo on CPU for --cpu-smoke)

def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup, iters):
    """Median wall time of fn over iters (after warmup), the slowest rank's."""
    import torch
    import torch.distributed as dist

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _inputs(S, sh, rank, shape, dtype, device, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    n = sh.local_len(rank)
    full = lambda h: torch.randn(shape["B"], S, h, shape["D"], generator=g)  # noqa: E731

    def local(x):
        return sh.shard(x, rank).to(dtype).to(device).requires_grad_()

    if S <= 8192:  # small: the full tensors, so that the caller can check against one device
        q, k, v, do = full(shape["H"]), full(shape["Hkv"]), full(shape["Hkv"]), full(shape["H"])
        return [local(x) for x in (q, k, v)] + [sh.shard(do, rank).to(dtype).to(device)], (q, k, v, do)
    g.manual_seed(seed + rank)
    mk = lambda h: torch.randn(shape["B"], n, h, shape["D"], generator=g).to(dtype).to(device)  # noqa: E731
    return [mk(shape["H"]).requires_grad_(), mk(shape["Hkv"]).requires_grad_(), mk(shape["Hkv"]).requires_grad_(),
            mk(shape["H"])], None


def _check(rank, world, shape, dtype, device, S, errors):
    """Outputs and gradients of both context-parallel implementations against one device, at length S."""
    import torch
    import torch.nn.functional as F
    import s2attn.torch as st
    from s2attn.distributed import context_parallel_attention
    from dense_ring import dense_ring_attention

    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for kind in ("contiguous", "zigzag"):
        sh = Sharding(S, world, kind)
        (q, k, v, do), full = _inputs(S, sh, rank, shape, dtype, device, seed=S)
        qf, kf, vf = (x.to(dtype).to(device).requires_grad_() for x in full[:3])
        dof = full[3].to(dtype).to(device)
        p = pattern_for(8, shape)
        refs = {"s2attn": st.attention(qf, kf, vf, p),
                "ring": F.scaled_dot_product_attention(qf.transpose(1, 2), kf.transpose(1, 2), vf.transpose(1, 2),
                                                       is_causal=True, enable_gqa=True).transpose(1, 2)}
        runs = {"s2attn": lambda: context_parallel_attention(q, k, v, p, sh),
                "ring": lambda: dense_ring_attention(q, k, v, sh)}
        for name, ref in refs.items():
            for x in (q, k, v, qf, kf, vf):
                x.grad = None
            out = runs[name]()
            out.backward(do)
            ref.backward(dof)
            got = [out] + [x.grad for x in (q, k, v)]
            want = [sh.shard(t, rank) for t in (ref, qf.grad, kf.grad, vf.grad)]
            for what, a, b in zip(("out", "dq", "dk", "dv"), got, want):
                err = ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30)).item()
                if not err <= tol:
                    errors.append(f"check {name} {kind} S={S} rank {rank}: {what} relative error {err:.3g}")


def _worker(rank, world, args, init_method, out_path):
    import torch
    import torch.distributed as dist
    from s2attn.distributed import context_parallel_attention
    from dense_ring import dense_ring_attention

    gpu = not args.cpu_smoke
    if gpu:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
        dist.init_process_group("nccl", init_method=init_method, rank=rank, world_size=world, device_id=device)
        dtype = torch.bfloat16
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
        dtype = torch.float32
    shape = dict(SHAPE, **args.shape_override)
    errors, rows = [], []
    meta = meta_common(args)
    meta.update(mode="cpu-smoke (gloo)" if not gpu else "gpu (nccl)", world=world, dtype=str(dtype),
                shape=shape, torch=torch.__version__, warmup=args.warmup, iters=args.iters,
                check_seqlen=args.check_seqlen,
                timing="median wall time per iteration (device synchronised, ranks barriered), slowest "
                       "rank; fwd under no_grad")
    if gpu:
        from gpu_forward import driver_version

        meta.update(gpu=torch.cuda.get_device_name(device), driver=driver_version(), cuda=torch.version.cuda)

    def report(complete):
        """The JSON so far (rank 0), after each length: a run cut short keeps what it measured."""
        gathered = [None] * world
        dist.all_gather_object(gathered, errors)
        if rank == 0:
            meta["complete"] = complete
            write(out_path, meta, rows, [e for errs in gathered for e in errs])

    _check(rank, world, shape, dtype, device, args.check_seqlen, errors)
    for S in args.seqlens:
        for kind in args.shardings:
            sh = Sharding(S, world, kind)
            (q, k, v, do), _ = _inputs(S, sh, rank, shape, dtype, device, seed=1)
            impls = [("dense_ring_sdpa_flash", None, lambda: dense_ring_attention(q, k, v, sh))]
            for V in args.strides:
                p = pattern_for(V, shape)
                impls.append(("s2attn_cp", V, lambda p=p: context_parallel_attention(q, k, v, p, sh)))
            for name, V, run in impls:
                def fwd_bwd(run=run):
                    for x in (q, k, v):
                        x.grad = None
                    run().backward(do)

                def fwd(run=run):
                    with torch.no_grad():
                        run()
                row = dict(impl=name, S=S, world=world, sharding=kind, V=V,
                           fwd_ms=1e3 * _timed(fwd, device, args.warmup, args.iters),
                           fwd_bwd_ms=1e3 * _timed(fwd_bwd, device, args.warmup, args.iters))
                tokens = S * shape["B"]  # of the whole sequence, all ranks together
                row.update(fwd_tokens_per_s=tokens / (row["fwd_ms"] * 1e-3),
                           fwd_bwd_tokens_per_s=tokens / (row["fwd_bwd_ms"] * 1e-3))
                if V is not None:
                    dense = next(r for r in rows if r["impl"] == "dense_ring_sdpa_flash" and r["S"] == S
                                 and r["sharding"] == kind)
                    row.update(fwd_speedup_vs_dense_ring=dense["fwd_ms"] / row["fwd_ms"],
                               fwd_bwd_speedup_vs_dense_ring=dense["fwd_bwd_ms"] / row["fwd_bwd_ms"])
                if V is not None:
                    s = plan_context_parallel(pattern_for(V, shape), sh).summary(
                        head_dim=shape["D"], itemsize=dtype.itemsize, batch=shape["B"])
                    row.update({k: s[k] for k in ("bytes_per_kv_head", "bytes_dense_ring", "ratio_vs_dense_ring",
                                                  "max_rank_bytes_per_kv_head")})
                rows.append(row)
                if rank == 0:
                    speed = (f"   x{row['fwd_speedup_vs_dense_ring']:.2f} / x{row['fwd_bwd_speedup_vs_dense_ring']:.2f}"
                             f" vs dense, bytes x{row['ratio_vs_dense_ring']:.3f}") if V is not None else ""
                    print(f"{name:<22}{kind:<11}S={S:<8} V={V or '-':<3} fwd {row['fwd_ms']:9.2f} ms   "
                          f"fwd+bwd {row['fwd_bwd_ms']:9.2f} ms   {row['fwd_bwd_tokens_per_s']:10.0f} tok/s"
                          + speed, flush=True)
            del q, k, v, do
        report(complete=False)
    report(complete=True)
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------
# Plot of timed results (one or more JSON files of --gpu runs)

def plot(paths, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, meta = [], None
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        rows += d["results"]
        meta = meta or d["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {}
    for kind, style in (("zigzag", "-"), ("contiguous", ":")):
        for impl, V in sorted({(r["impl"], r["V"]) for r in rows}, key=lambda x: (x[1] or 0)):
            pts = sorted(((r["S"], r) for r in rows if r["sharding"] == kind and r["impl"] == impl and r["V"] == V),
                         key=lambda t: t[0])
            if not pts:
                continue
            label = f"{'dense ring (SDPA flash)' if V is None else f's2attn V={V}'} {kind}"
            xs, color = [s for s, _ in pts], colors.setdefault(V, f"C{len(colors)}")  # one colour per V
            axes[0].plot(xs, [r["fwd_bwd_tokens_per_s"] for _, r in pts], style, marker="o", label=label, color=color)
            if V is not None:
                axes[1].plot(xs, [r["ratio_vs_dense_ring"] for _, r in pts], style, marker="o", label=label,
                             color=color)
    axes[0].set_ylabel("tokens/s, forward + backward")
    axes[1].set_ylabel("K/V bytes received / dense ring's")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"context parallelism, {meta.get('world')} x {meta.get('gpu', '?')} (NCCL), "
                 f"H={meta['shape']['H']} Hkv={meta['shape']['Hkv']} D={meta['shape']['D']} bf16 causal")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(args):
    import torch
    import torch.multiprocessing as mp

    if args.cpu_smoke:
        world = args.world or 2
        os.environ.setdefault("S2ATTN_NUM_THREADS", "1")
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < 2:
            print(f"error: --gpu needs a machine with at least 2 CUDA GPUs (NCCL context parallelism); this one "
                  f"has {gpus}. Run without --gpu for the planner-only byte counts, or --cpu-smoke to exercise "
                  f"this code path on CPU processes.", file=sys.stderr)
            return 2
        world = args.world or gpus
        if world > gpus:
            print(f"error: --world {world} but only {gpus} GPUs are visible", file=sys.stderr)
            return 2
    mp.spawn(_worker, args=(world, args, f"tcp://127.0.0.1:{_free_port()}", args.out), nprocs=world, join=True)
    with open(args.out) as f:
        errors = json.load(f)["errors"]
    if errors:
        print("errors:\n  " + "\n  ".join(errors), file=sys.stderr)
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="time over NCCL on the visible GPUs (needs >= 2)")
    mode.add_argument("--cpu-smoke", action="store_true", help="the --gpu path on CPU processes (gloo), tiny")
    mode.add_argument("--plot", nargs="+", metavar="JSON", help="plot timed results (--gpu files) to --out")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seqlens", type=int, nargs="+", default=None)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8, 16], help="planner: world sizes")
    ap.add_argument("--world", type=int, default=None, help="timed: processes (default: every GPU; smoke: 2)")
    ap.add_argument("--strides", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--shardings", nargs="+", default=["contiguous", "zigzag"])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--check-seqlen", type=int, default=None, help="length of the correctness check")
    args = ap.parse_args()
    args.shape_override = {}
    date = datetime.date.today().isoformat()
    if args.plot:
        return plot(args.plot, args.out or "bench/results/context_parallel_gpu.png")
    if args.gpu or args.cpu_smoke:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # dense_ring, gpu_forward
        if args.cpu_smoke:
            args.shape_override = dict(H=4, Hkv=2, D=32, block=16, local_blocks=2)
            args.seqlens = args.seqlens or [1024]
            args.strides = [4]
            args.check_seqlen = args.check_seqlen or 200
            args.out = args.out or os.path.join(tempfile.gettempdir(), "context_parallel_cpu_smoke.json")
        else:
            args.seqlens = args.seqlens or [262144, 524288, 1048576]
            args.check_seqlen = args.check_seqlen or 8192
            args.out = args.out or f"bench/results/context_parallel_gpu_{date}.json"
        return timed(args)
    args.seqlens = args.seqlens or [262144, 524288, 1048576]
    args.out = args.out or "bench/results/context_parallel_planner.json"
    return planner(args)


if __name__ == "__main__":
    sys.exit(main())

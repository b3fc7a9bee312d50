"""Paged decode time against the split count, per (batch, context): the data the automatic split heuristic
(paged_auto_splits in src/inference/cuda/paged_launch.cu) is fitted to. Times one call replayed from a CUDA
graph (GPU time, no host enqueue cost), L2 not flushed between replays.

    python3 tools/sweep_splits.py [--cases 1x8192,32x131072] [--splits 1,2,4,8,16,32,64] [--out sweep.json]
"""
import argparse
import json
import sys

import torch

import s2attn

H, HKV, D, BS, L = 32, 8, 128, 64, 16


def graph_ms(fn, iters=50):
    """Mean GPU time of fn replayed from a CUDA graph (warmed up on a side stream, as capture requires)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(iters):
        g.replay()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1x8192,1x32768,1x131072,8x8192,8x32768,8x131072,32x8192,32x131072")
    ap.add_argument("--splits", default="1,2,3,4,6,8,12,16,24,32,48,64")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--out", default="sweep_splits.json")
    a = ap.parse_args()
    dev = "cuda"
    p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=a.V, num_kv_heads=HKV)
    report = dict(gpu=torch.cuda.get_device_name(), command=" ".join(sys.argv), cases=[])
    for case in a.cases.split(","):
        B, ctx = (int(x) for x in case.split("x"))
        pages = -(-ctx // a.page)
        kp = torch.randn(B * pages, a.page, HKV, D, dtype=torch.bfloat16, device=dev)
        vp = torch.randn_like(kp)
        table = torch.randperm(B * pages, device=dev).to(torch.int32).view(B, pages)
        lens = torch.full((B,), ctx, dtype=torch.int32, device=dev)
        q = torch.randn(B, 1, H, D, dtype=torch.bfloat16, device=dev)
        out = torch.empty_like(q)
        auto = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
        row = dict(batch=B, context=ctx, page=a.page, V=a.V, auto_splits=auto, ms={})
        for n in sorted({int(x) for x in a.splits.split(",")} | {auto}):
            ws = torch.empty(max(1, s2attn.paged_workspace_size(q, kp, vp, table, lens, p, num_splits=n)),
                             dtype=torch.uint8, device=dev)
            row["ms"][n] = graph_ms(lambda: s2attn.paged_attention(q, kp, vp, table, lens, p, out=out, workspace=ws,
                                                                   num_splits=n))
        best = min(row["ms"], key=row["ms"].get)
        row["best_splits"] = best
        print(f"B={B} ctx={ctx}: auto {auto} {row['ms'][auto] * 1e3:.1f} us, best {best} {row['ms'][best] * 1e3:.1f} us |"
              + " ".join(f"{n}:{v * 1e3:.0f}" for n, v in row["ms"].items()), flush=True)
        report["cases"].append(row)
        del kp, vp
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

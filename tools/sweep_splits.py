"""Paged decode time against the split count, per (batch, context): the data the automatic split heuristic
(paged_auto_splits in src/inference/cuda/paged_launch.cu) is fitted to. Times one call replayed from a CUDA
graph (GPU time, no host enqueue cost), L2 not flushed between replays.

    python3 tools/sweep_splits.py [--cases 1x8192,32x131072] [--splits 1,2,4,8,16,32,64] [--out sweep.json]
"""
import argparse
import json
import os
import sys

import torch

import s2attn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gpu_decode import graph_bench_splits  # noqa: E402  (the decode benchmark's CUDA-graph timing)
from profile_decode import BS, H, HKV, L, decode_inputs  # noqa: E402  (tools/: the script's directory)


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
        q, kp, vp, table, lens, out = decode_inputs(B, ctx, a.page, dev)
        auto = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
        row = dict(batch=B, context=ctx, page=a.page, V=a.V, auto_splits=auto, ms={})
        for n in sorted({int(x) for x in a.splits.split(",")} | {auto}):
            row["ms"][n] = graph_bench_splits(q, kp, vp, table, lens, p, out, n)
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

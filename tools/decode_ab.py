"""Graph-timed paged decode calls (the automatic split count; the call as a serving engine that captures its
decode step replays it) for a few (batch x context) cases and V values, written as tools/ab_compare.py's
p_*.json files (pass `decode`, one row: the call), so that `tools/gpu-ab` rounds of decode variants compare
like kernel A/Bs:

    python3 tools/decode_ab.py --out-dir DIR [--cases 1x8192,8x32768] [--V 8,16] [--page 16] [--iters 200]
    python3 tools/ab_compare.py AB_DIR --passes decode --us
"""
import argparse
import json
import os
import pathlib
import sys

import torch

import s2attn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gpu_decode import graph_bench_splits  # noqa: E402  (the decode benchmark's CUDA-graph timing)
from profile_decode import BS, D, H, HKV, L, decode_inputs  # noqa: E402  (tools/: the script's directory)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--cases", default="1x8192,1x32768,1x131072,8x8192,8x32768,32x131072")
    ap.add_argument("--V", default="8,16")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--iters", type=int, default=200)
    a = ap.parse_args()
    out_dir = pathlib.Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in a.cases.split(","):
        B, ctx = (int(x) for x in case.split("x"))
        q, kp, vp, table, lens, out = decode_inputs(B, ctx, a.page)
        for V in (int(v) for v in a.V.split(",")):
            p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=V, num_kv_heads=HKV)
            splits = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
            ms = graph_bench_splits(q, kp, vp, table, lens, p, out, splits, iters=a.iters)
            # ab_compare's shape key is "D{D} S{S} V{V} {layout}": the batch goes in `layout`
            report = dict(gpu=torch.cuda.get_device_name(), command=" ".join(sys.argv),
                          shape=dict(D=D, S=ctx, V=V, layout=f"B{B}", splits=splits, page=a.page),
                          passes=dict(decode=[dict(kernel="paged_decode_call(graph)", ms_per_call=ms)]))
            (out_dir / f"p_decode_b{B}_s{ctx}_v{V}.json").write_text(json.dumps(report, indent=1))
            print(f"B={B} ctx={ctx} V={V}: {splits} splits, {ms * 1e3:.1f} us", flush=True)
        del kp, vp
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

"""The fixed cost of a batch-1 paged decode call: graph-timed time against the context length (1 token to
128k), at the automatic split count and at one split (no combine kernel), beside dense SDPA on the gathered
cache and two floors: a CUDA-graph replay of one and of two trivial kernels. Where the time stops falling
with the context, what is left is the call's latency chain (launch, the CTA's start, the first tile's
round trips, the combine), not bandwidth: the part of issue 7's batch-1 cells that streaming cannot fix.

    python3 tools/decode_latency.py [--V 8] [--contexts 1,64,...] [--out decode_latency.json]
"""
import argparse
import json
import os
import sys

import torch

import s2attn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gpu_decode import gathered, graph_bench, graph_bench_splits, touched_tokens  # noqa: E402  (the decode bench's)
from profile_decode import BS, H, HKV, L, D, decode_inputs  # noqa: E402  (tools/: the script's directory)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--contexts", default="1,64,256,1024,4096,8192,32768,131072")
    ap.add_argument("--out", default="decode_latency.json")
    a = ap.parse_args()
    dev = "cuda"
    p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=a.V, num_kv_heads=HKV)
    x = torch.zeros(1, device=dev)
    floors = {"one_kernel_us": graph_bench(lambda: x.add_(1)) * 1e3,
              "two_kernels_us": graph_bench(lambda: (x.add_(1), x.mul_(1))) * 1e3}
    report = dict(gpu=torch.cuda.get_device_name(), command=" ".join(sys.argv), V=a.V, page=a.page, floors=floors,
                  cases=[])
    print(f"graph floors: one kernel {floors['one_kernel_us']:.1f} us, two {floors['two_kernels_us']:.1f} us")
    print(f"{'ctx':>7} {'MB':>7} {'splits':>6} {'auto us':>8} {'1 split us':>10} {'sdpa us':>8}")
    for ctx in (int(c) for c in a.contexts.split(",")):
        q, kp, vp, table, lens, out = decode_inputs(1, ctx, a.page, dev)
        auto = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
        row = dict(context=ctx, splits=auto, bytes_touched=sum(touched_tokens(p, ctx)) * D * 2 * 2)
        for name, n in (("auto_us", auto), ("one_split_us", 1)):
            row[name] = graph_bench_splits(q, kp, vp, table, lens, p, out, n) * 1e3
        kg, vg = gathered(kp, table, ctx), gathered(vp, table, ctx)
        qs = q.transpose(1, 2).contiguous()
        row["sdpa_us"] = graph_bench(lambda: torch.nn.functional.scaled_dot_product_attention(
            qs, kg, vg, enable_gqa=True)) * 1e3
        report["cases"].append(row)
        print(f"{ctx:>7} {row['bytes_touched'] / 1e6:>7.2f} {auto:>6} {row['auto_us']:>8.1f} {row['one_split_us']:>10.1f} "
              f"{row['sdpa_us']:>8.1f}", flush=True)
        del kp, vp, kg, vg
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

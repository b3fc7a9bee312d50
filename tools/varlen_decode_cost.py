"""What the varlen layout costs a decode batch on CUDA: the same single-token queries passed as [B, 1, H, D]
and as varlen [B, H, D] with cu_seqlens_q = 0..B (the vLLM-style entry point's layout). On CUDA a varlen call
bounds each sequence's rows by its token count B, so at group x B > 16 it runs the 64- or 128-row kernel
instead of the 16-row decode kernel (docs/inference.md, "Known limitation"). Graph-timed, the automatic split
count for each layout; the outputs must agree.

    python3 tools/varlen_decode_cost.py [--cases 8x8192,32x131072] [--V 8] [--page 16] [--out varlen_decode.json]
"""
import argparse
import json
import os
import sys

import torch

import s2attn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gpu_decode import env, graph_bench_splits  # noqa: E402  (the decode benchmark's CUDA-graph timing)
from profile_decode import BS, H, HKV, L, decode_inputs  # noqa: E402  (tools/: the script's directory)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="8x8192,8x32768,32x32768,32x131072,64x32768")
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--out", default="varlen_decode.json")
    a = ap.parse_args()
    p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=a.V, num_kv_heads=HKV)
    rows = []
    for case in a.cases.split(","):
        B, ctx = (int(x) for x in case.split("x"))
        q, kp, vp, table, lens, out = decode_inputs(B, ctx, a.page)
        qv, outv = q.view(B, H, -1), out.view(B, H, -1)  # the same rows, varlen: one token a sequence
        cu = torch.arange(B + 1, dtype=torch.int32, device=q.device)
        dense_splits = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
        dense_ms = graph_bench_splits(q, kp, vp, table, lens, p, out, dense_splits)
        ref = out.clone()
        varlen_splits = s2attn.paged_num_splits(qv, kp, vp, table, lens, p, cu_seqlens_q=cu)
        varlen_ms = graph_bench_splits(qv, kp, vp, table, lens, p, outv, varlen_splits, cu_seqlens_q=cu)
        torch.cuda.synchronize()
        err = float((out.float() - ref.float()).abs().max())
        rows.append(dict(batch=B, context=ctx, V=a.V, page=a.page, dense_splits=dense_splits,
                         dense_graph_ms=dense_ms, varlen_splits=varlen_splits, varlen_graph_ms=varlen_ms,
                         varlen_over_dense=varlen_ms / dense_ms, max_abs_diff=err))
        print(f"B={B} ctx={ctx} V={a.V}: dense {dense_ms * 1e3:.1f} us ({dense_splits} splits), varlen "
              f"{varlen_ms * 1e3:.1f} us ({varlen_splits} splits), x{varlen_ms / dense_ms:.2f}, max diff {err:.2e}")
    with open(a.out, "w") as f:
        json.dump({"env": env(), "command": " ".join(sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""With tools/pending/sm90-bwd-dq-finish-bookkeeper.patch applied (its workspace layout): how many of the
fused-dQ accumulator's (tile, q head) counters end at -1 (converted inside the KV kernel) and at 0 (left to
the post-process) after one fwd+bwd call per shape, as tools/env_ab.py calls it (B = 1, H = 32, D = 128, bf16,
causal, block 64, local 16). Prints one line per shape; not meaningful on main.

    python3 tools/pending/dq_finish_fraction.py --shapes 131072x32,32768x32
"""
import argparse

import torch

import s2attn


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="131072x32")
    a = ap.parse_args()
    H, D = 32, 128
    up = lambda n: (n + 255) // 256 * 256  # noqa: E731  (BackwardWorkspace's section alignment)
    for shape in a.shapes.split(","):
        S, V = (int(x) for x in shape.split("x"))
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn((1, S, H, D), device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        pattern = s2attn.local_stride(H, 64, 16, V, causal=True)
        out, lse = s2attn.attention(q, k, v, pattern, return_lse=True)
        ws = torch.empty(s2attn.backward_workspace_size(q, k, v, pattern), dtype=torch.uint8, device="cuda")
        s2attn.attention_backward(do, q, k, v, out, lse, pattern, workspace=ws)
        torch.cuda.synchronize()
        start = 2 * up(H * S * 4) + up(H * D * (S // 64 * 64 + 128) * 4)
        c = ws[start:start + 4 * H * (S // 64 + 2)].view(torch.int32)
        n = c.numel()
        print(f"{shape}: {n} counters, finished in the kernel {int((c == -1).sum())} "
              f"({100 * float((c == -1).sum()) / n:.1f}%), left {int((c == 0).sum())}, "
              f"other {int(((c != 0) & (c != -1)).sum())}", flush=True)


if __name__ == "__main__":
    main()

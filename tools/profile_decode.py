"""Where paged decode spends its time: the wall time of one `s2attn.paged_attention` call from Python (what
bench/gpu_decode.py times) against the GPU time of its kernels (torch.profiler), per case.

    python3 tools/profile_decode.py [--out profile_decode.json] [--cases 1x131072,32x131072] [--page 16]

Run under `ncu --kernel-name regex:paged_decode --launch-count 1 ...` for the kernel's own counters.
"""
import argparse
import json
import sys
import time

import torch

import s2attn
from profile_kernels import kernel_times  # tools/ is the script's directory

H, HKV, D, BS, L = 32, 8, 128, 64, 16


def decode_inputs(B, ctx, page, dev="cuda", contiguous=False):
    """A batch of B sequences of ctx cached tokens in shuffled pages of `page` tokens (in order when
    `contiguous`), one query token each: (q, k_pages, v_pages, block_table, context_lens, out), bf16, the
    benchmark's H, Hkv, D."""
    pages = -(-ctx // page)
    kp = torch.randn(B * pages, page, HKV, D, dtype=torch.bfloat16, device=dev)
    vp = torch.randn_like(kp)
    order = torch.arange(B * pages, device=dev) if contiguous else torch.randperm(B * pages, device=dev)
    table = order.to(torch.int32).view(B, pages)
    lens = torch.full((B,), ctx, dtype=torch.int32, device=dev)
    q = torch.randn(B, 1, H, D, dtype=torch.bfloat16, device=dev)
    return q, kp, vp, table, lens, torch.empty_like(q)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1x8192,1x131072,32x131072")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--contiguous", action="store_true",
                    help="pages in order (the table an identity): memory locality against the shuffled default")
    ap.add_argument("--out", default="profile_decode.json")
    a = ap.parse_args()
    dev = "cuda"
    p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=a.V, num_kv_heads=HKV)
    report = dict(gpu=torch.cuda.get_device_name(), command=" ".join(sys.argv), cases=[])
    for case in a.cases.split(","):
        B, ctx = (int(x) for x in case.split("x"))
        q, kp, vp, table, lens, out = decode_inputs(B, ctx, a.page, dev, a.contiguous)
        ws = torch.empty(max(1, s2attn.paged_workspace_size(q, kp, vp, table, lens, p)), dtype=torch.uint8,
                         device=dev)

        def call():
            s2attn.paged_attention(q, kp, vp, table, lens, p, out=out, workspace=ws)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            call()
        host_us = (time.perf_counter() - t0) / a.iters * 1e6  # enqueue cost per call (no sync inside)
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) / a.iters * 1e6
        kernels = [dict(kernel=r["kernel"][:120], us_per_call=r["ms_per_call"] * 1e3, launches=r["launches"])
                   for r in kernel_times(call, a.iters)]
        row = dict(batch=B, context=ctx, page=a.page, V=a.V, contiguous=a.contiguous,
                   splits=s2attn.paged_num_splits(q, kp, vp, table, lens, p),
                   host_enqueue_us=host_us, wall_us=wall_us, kernels=kernels)
        report["cases"].append(row)
        print(f"B={B} ctx={ctx} splits={row['splits']}: enqueue {host_us:.1f} us, wall {wall_us:.1f} us/call")
        for k in kernels:
            print(f"   {k['us_per_call']:9.1f} us  x{k['launches']}  {k['kernel']}")
        del kp, vp
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A/B of a run-time switch of the library (an environment variable read per call) in one process: the same
tensors and calls with the variable unset (A) and set (B), alternated round by round so that clock and
temperature drift hit both alike. Reports per shape the median do_bench time of each and the kernels' own
time (torch.profiler), and writes JSON.

    python3 tools/env_ab.py S2ATTN_SM90_STATIC_SCHEDULE=1 --shapes 8192x8,32768x32 [--pass forward] --out ab.json

--pass forward (default) or fwd_bwd (forward then backward, the bench's training step). Shapes are SxV with
B = 1, H = 32, D = 128, bf16, causal, block 64, local 16 (the DESIGN.md section 4 defaults).
"""
import argparse
import json
import os
import statistics
import sys

import torch

import s2attn
from profile_kernels import kernel_times  # tools/ is the script's directory


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("setting", help="NAME=VALUE set for variant B")
    ap.add_argument("--shapes", default="8192x8,8192x32,32768x8,32768x32,131072x8")
    ap.add_argument("--pass", dest="pass_", choices=("forward", "fwd_bwd"), default="forward")
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="env_ab.json")
    a = ap.parse_args()
    name, _, value = a.setting.partition("=")
    if not name or not value:
        ap.error("setting: NAME=VALUE")
    os.environ.pop(name, None)
    from triton.testing import do_bench
    dev = "cuda"
    report = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv),
                  setting=a.setting, pass_=a.pass_, cases=[])
    for shape in a.shapes.split(","):
        S, V = (int(x) for x in shape.split("x"))
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v, do = (torch.randn((1, S, a.H, a.D), device=dev, dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        pattern = s2attn.local_stride(a.H, 64, 16, V, causal=True)
        out, lse = s2attn.attention(q, k, v, pattern, return_lse=True)
        grads = tuple(torch.empty_like(x) for x in (q, k, v))
        ws = torch.empty(s2attn.backward_workspace_size(q, k, v, pattern), dtype=torch.uint8, device=dev)

        def fn():
            s2attn.attention(q, k, v, pattern, out=out, lse=lse, return_lse=True)
            if a.pass_ == "fwd_bwd":
                s2attn.attention_backward(do, q, k, v, out, lse, pattern, dq=grads[0], dk=grads[1], dv=grads[2],
                                          workspace=ws)

        times = {"A": [], "B": []}
        kernels = {}
        for _ in range(a.rounds):
            for variant in ("A", "B"):
                if variant == "B":
                    os.environ[name] = value
                else:
                    os.environ.pop(name, None)
                times[variant].append(do_bench(fn, warmup=25, rep=100))
        for variant in ("A", "B"):
            if variant == "B":
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
            kernels[variant] = sum(r["ms_per_call"] for r in kernel_times(fn, 5) if "s2attn" in r["kernel"])
        os.environ.pop(name, None)
        case = dict(S=S, V=V, density=float(pattern.density(S)),
                    do_bench_ms={k_: statistics.median(t) for k_, t in times.items()}, rounds_ms=times,
                    kernel_ms=kernels)
        case["b_over_a"] = case["do_bench_ms"]["B"] / case["do_bench_ms"]["A"]
        report["cases"].append(case)
        print(f"S={S:6d} V={V:2d}: A {case['do_bench_ms']['A']:.4f} ms, B {case['do_bench_ms']['B']:.4f} ms, "
              f"B/A {case['b_over_a']:.3f}; kernels A {kernels['A']:.4f} B {kernels['B']:.4f}", flush=True)
        del q, k, v, do, out, lse, grads, ws
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where the forward benchmark's time goes at one shape, per input layout: why bench/gpu_forward.py (triton
do_bench) reports more than the kernel's own time, and why the two layouts differ there.

    python3 tools/timing_check.py [--S 32768] [--V 8] [--out timing.json]

For bshd storage (contiguous [B, S, H, D]) and bhsd storage (the peers' [B, H, S, D], passed as a view), with
the benchmark's tensors and its `out=` argument, it measures the same call five ways:
  do_bench          triton.testing.do_bench median, as the benchmark (L2 flushed before each timed call);
  flushed_covered   L2 flushed, then a GPU sleep long enough to cover the host's launch work, then the timed
                    call: do_bench's conditions without the host time in the timed region;
  back_to_back      CUDA events around N calls in a row, no flush (the host runs ahead of the GPU);
  kernel            the kernel's own time (torch.profiler), N calls in a row;
  host_us           host time of one call (enqueue only, the GPU kept busy), microseconds.
do_bench - flushed_covered is the host launch time that do_bench counts; flushed_covered - back_to_back what
a cold L2 costs; back_to_back - kernel the gaps between kernels.
"""
import argparse
import json
import statistics
import sys
import time

import torch

import s2attn
from profile_kernels import add_shape_args, kernel_times  # tools/ is the script's directory


def events_ms(fn, iters, before=None):
    """Per-call ms of fn (events around each call), `before` run untimed ahead of each."""
    times = []
    for _ in range(iters):
        if before is not None:
            before()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_ms(fn, iters):
    """The Hopper kernels' own time per call (torch.profiler, tools/profile_kernels.py)."""
    return sum(r["ms_per_call"] for r in kernel_times(fn, iters) if "sm90" in r["kernel"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default="timing.json")
    a = ap.parse_args()
    from triton.testing import do_bench
    dev = "cuda"
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, a.H, a.S, a.D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    views = tuple(x.transpose(1, 2) for x in (q, k, v))
    layouts = {"bshd": tuple(x.contiguous() for x in views), "bhsd": views}
    pattern = s2attn.local_stride(a.H, a.block, a.local, a.V, causal=True)
    flush_buf = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=dev)

    report = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv),
                  shape=dict(B=1, H=a.H, S=a.S, D=a.D, V=a.V, block=a.block, local=a.local), layouts={})
    for name, (qq, kk, vv) in layouts.items():
        out = s2attn.attention(qq, kk, vv, pattern, backend="cuda_sm90")
        fn = lambda: s2attn.attention(qq, kk, vv, pattern, out=out, backend="cuda_sm90")  # noqa: E731
        fn()
        torch.cuda.synchronize()
        # host time of one call, with the GPU busy so that nothing waits on it
        torch.cuda._sleep(200_000_000)
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        host_us = (time.perf_counter() - t0) / 10 * 1e6
        torch.cuda.synchronize()
        row = dict(
            do_bench=do_bench(fn, warmup=25, rep=200, return_mode="median"),
            flushed_covered=events_ms(fn, a.iters,
                                      before=lambda: (flush_buf.zero_(), torch.cuda._sleep(5_000_000))),
            back_to_back=events_ms(lambda: [fn() for _ in range(a.iters)], 3) / a.iters,
            kernel=kernel_ms(fn, a.iters),
            host_us=host_us,
            out_strides=list(out.stride()),
        )
        report["layouts"][name] = row
        print(f"{name}: " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in row.items()), flush=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

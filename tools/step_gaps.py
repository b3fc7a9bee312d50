"""Whether the GPU idles inside the bench's training step (forward, then backward: the same calls as
`bench/gpu_backward.s2attn_steps`) and where: the step's kernels on the GPU timeline (torch.profiler), their
busy time (the union of the kernels' intervals) against the span from the first kernel's start to the last
one's end, and the largest gaps with the kernels on either side. A step whose wall time exceeds its kernels'
sum by more than the clock explains shows up here as gaps.

    python3 tools/step_gaps.py --cases 32768:32,131072:32 [--iters 5] [--out step_gaps.json]

Same shapes as the bench (B = 1, H = 32, D = 128, bf16, causal, block 64, local 16, bhsd storage passed as
[B, S, H, D] views); also prints the step's time as the bench measures it (bench/gpu_forward.do_bench:
heated, triton do_bench median, with the SM clock and power it ran at) beside the kernels' busy time.
"""
import argparse
import json
import pathlib
import sys
import time


def step_fn(S, V, H=32, D=128, block=64, local=16):
    """The bench's fwd+bwd step on fresh random operands (bench/gpu_backward.s2attn_steps)."""
    import torch

    import gpu_backward  # bench/ (main puts it on the path)
    import s2attn
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v, dout = (torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(4))
    qs, ks, vs, gs = (x.transpose(1, 2) for x in (q, k, v, dout))
    pattern = s2attn.local_stride(H, block, local, V, causal=True, num_kv_heads=H)
    return gpu_backward.s2attn_steps(qs, ks, vs, gs, pattern)[2]


def kernel_intervals(prof):
    """(start_us, end_us, name) of every GPU kernel / memset / memcpy the profiler saw, sorted by start."""
    from torch.autograd import DeviceType
    out = []
    for e in prof.events():
        if getattr(e, "device_type", None) != DeviceType.CUDA:
            continue
        tr = e.time_range
        if tr.end > tr.start:
            out.append((tr.start, tr.end, e.name))
    out.sort()
    return out


def analyse(iv, iters, top=8):
    """Busy time (the union of the intervals), span (first start to last end) and the idle gaps between the
    union's pieces, per step (iters steps in iv)."""
    if not iv:
        return dict(span_ms_per_step=0.0, busy_ms_per_step=0.0, idle_fraction=0.0, gaps_over_5us=0.0,
                    largest_gaps=[])
    busy, gaps, end = 0.0, [], max(e for _, e, _ in iv)
    cur_s, cur_e, last_name = iv[0][0], iv[0][1], iv[0][2]
    for s, e, name in iv[1:]:
        if s > cur_e:  # an idle stretch between the union's pieces
            busy += cur_e - cur_s
            gaps.append((s - cur_e, last_name, name))
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
        if e >= cur_e:
            last_name = name
    busy += cur_e - cur_s
    span = end - iv[0][0]
    gaps.sort(reverse=True)
    return dict(span_ms_per_step=span / 1e3 / iters, busy_ms_per_step=busy / 1e3 / iters,
                idle_fraction=(span - busy) / span, gaps_over_5us=sum(1 for g in gaps if g[0] > 5) / iters,
                largest_gaps=[dict(us=round(g, 1), after=a[:90], before=b[:90]) for g, a, b in gaps[:top]])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="32768:32,131072:32", help="S:V,S:V,...")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", default="step_gaps.json")
    a = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
    import gpu_forward  # the bench's timing: heated, median, clock sampled

    report = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv), cases=[])
    for case in a.cases.split(","):
        S, V = (int(x) for x in case.split(":"))
        step = step_fn(S, V)
        step()
        torch.cuda.synchronize()
        ms = gpu_forward.do_bench(step)
        clock = gpu_forward.do_bench.last_clock
        # the host's own time to enqueue a step (no synchronisation inside): a step whose enqueue outlasts its
        # GPU time leaves the GPU waiting for the host
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            step()
        host_ms = (time.perf_counter() - t0) * 1e3 / a.iters
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(a.iters):
                step()
            torch.cuda.synchronize()
        r = dict(S=S, V=V, do_bench_ms=ms, do_bench_clock=clock, host_enqueue_ms_per_step=host_ms,
                 **analyse(kernel_intervals(prof), a.iters))
        report["cases"].append(r)
        print(f"S={S} V={V}: do_bench {ms:.3f} ms; host enqueue {host_ms:.3f} ms a step; profiled step span "
              f"{r['span_ms_per_step']:.3f} ms, busy {r['busy_ms_per_step']:.3f} ms, "
              f"idle {100 * r['idle_fraction']:.2f}%, {r['gaps_over_5us']:.1f} gaps > 5 us a step", flush=True)
        for g in r["largest_gaps"][:5]:
            print(f"    {g['us']:9.1f} us after {g['after'][:60]} before {g['before'][:60]}")
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

"""Per-kernel GPU time of s2attn's forward and backward at one shape (torch.profiler), to see where a pass
spends its time: e.g. the Hopper backward's KV kernel against its pre-pass, dQ kernel and post-process.

    python3 tools/profile_kernels.py [--S 32768] [--V 8] [--out profile.json]
    python3 tools/profile_kernels.py --cases 8192:8,32768:32 --out-dir DIR   (DIR/p_S_V.json per case, one
                                                                              process: tools/gpu-ab rounds)

Prints, for each pass (forward automatic / portable; backward automatic / deterministic / portable / with
fused dQ on the Hopper path), each kernel's total time over --iters calls divided by --iters, and writes them
as JSON.
"""
import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import s2attn

# backward passes: name -> (deterministic, backend, environment set for the call: a switch read per call)
BACKWARD_PASSES = {"backward": (False, "auto", {}), "backward_deterministic": (True, "auto", {}),
                   "backward_sm80": (False, "cuda_sm80", {}),
                   "backward_fused": (False, "auto", {"S2ATTN_SM90_FUSED_DQ": "1"})}
PASSES = ("forward", "forward_sm80") + tuple(BACKWARD_PASSES)

def with_env(env, fn):
    """fn() with the variables of env set, then each restored (unset if it was)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_times(fn, iters):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None)
        if t is None:
            t = ev.cuda_time_total
        if t > 0:
            rows.append(dict(kernel=ev.key[:140], ms_per_call=t / 1e3 / iters, launches=ev.count // iters))
    rows.sort(key=lambda r: -r["ms_per_call"])
    return rows


def add_shape_args(ap):
    """The shape options of the GPU profiling tools (B = 1, bf16, causal local + vertical-stride pattern)."""
    ap.add_argument("--S", type=int, default=32768)
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--D", type=int, default=128)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--local", type=int, default=16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(ap)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--layout", choices=("bhsd", "bshd"), default="bhsd",
                    help="storage of q, k, v, dO (always passed as [B, S, H, D] views)")
    ap.add_argument("--passes", default=",".join(PASSES), help=f"comma-separated subset of {', '.join(PASSES)}")
    ap.add_argument("--out", default="profile.json")
    ap.add_argument("--cases", default=None, help="S:V,S:V,...: several shapes in one process (with --out-dir)")
    ap.add_argument("--out-dir", default=None, help="with --cases: writes OUT_DIR/p_S_V.json per case")
    a = ap.parse_args()
    wanted = a.passes.split(",")
    unknown = [n for n in wanted if n not in PASSES]
    if unknown:
        ap.error(f"--passes: unknown {unknown}; expected names from {PASSES}")
    if a.cases is None:
        return profile_case(a, wanted, a.out)
    if a.out_dir is None:
        ap.error("--cases needs --out-dir")
    status = 0
    for case in a.cases.split(","):
        S, V = (int(x) for x in case.split(":"))
        a.S, a.V = S, V
        try:
            profile_case(a, wanted, f"{a.out_dir}/p_{S}_{V}.json")
        except Exception as e:  # noqa: BLE001 - one failed case must not lose the others
            print(f"case {case}: failed ({type(e).__name__}: {e})", flush=True)
            status = 1
        torch.cuda.empty_cache()
    return status


def profile_case(a, wanted, out_path):
    """Times the passes `wanted` at the shape in `a` and writes the report to out_path."""
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    if a.layout == "bhsd":
        q, k, v, do = (torch.randn((1, a.H, a.S, a.D), device=dev, dtype=torch.bfloat16, generator=g)
                       .transpose(1, 2) for _ in range(4))
    else:
        q, k, v, do = (torch.randn((1, a.S, a.H, a.D), device=dev, dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
    pattern = s2attn.local_stride(a.H, a.block, a.local, a.V, causal=True)
    out, lse = s2attn.attention(q, k, v, pattern, return_lse=True)
    grads = tuple(torch.empty_like(x) for x in (q, k, v))  # outputs of the backward passes
    passes = {}
    for name in wanted:  # only the passes asked for get their buffers
        if name == "forward":
            passes[name] = lambda: s2attn.attention(q, k, v, pattern, out=out, lse=lse, return_lse=True)
        elif name == "forward_sm80":
            passes[name] = lambda: s2attn.attention(q, k, v, pattern, out=out, lse=lse, return_lse=True,
                                                    backend="cuda_sm80")
        else:
            det, backend, env = BACKWARD_PASSES[name]
            ws = torch.empty(s2attn.backward_workspace_size(q, k, v, pattern, deterministic=det, backend=backend),
                             dtype=torch.uint8, device=dev)
            passes[name] = (lambda det=det, backend=backend, ws=ws, env=env: with_env(env, lambda: s2attn.attention_backward(
                do, q, k, v, out, lse, pattern, deterministic=det, backend=backend, dq=grads[0], dk=grads[1],
                dv=grads[2], workspace=ws)))
    report = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv),
                  shape=dict(B=1, H=a.H, S=a.S, D=a.D, block=a.block, local=a.local, V=a.V, dtype="bf16",
                             layout=a.layout),
                  density=float(pattern.density(a.S)), passes={})
    for name, fn in passes.items():
        rows = kernel_times(fn, a.iters)
        report["passes"][name] = rows
        print(f"== {name}: {sum(r['ms_per_call'] for r in rows):.3f} ms in kernels")
        for r in rows:
            print(f"   {r['ms_per_call']:8.3f} ms  x{r['launches']}  {r['kernel']}")
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

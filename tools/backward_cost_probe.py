#!/usr/bin/env python3
"""Where the Hopper backward's time goes, from timings alone (the backward's twin of forward_cost_probe.py):
the kernel time of its KV kernel and of its dQ kernel over the forward probe's grid of patterns (B = 1,
H = Hkv = 32, D = 128, bf16, causal, block 64), each fitted per CTA against the work it walks:
  KV kernel (a unit: a KV head's pair of key blocks): full query steps (both consumer warpgroups busy),
    half steps (one skips its GEMMs), units, launches (tools/kv_schedule_model.py counts them);
  dQ kernel (the forward's units and stages, three GEMMs a stage): 128-key stages, masked warpgroup-stages,
    units, launches (tools/forward_stage_counts.py).

    python3 tools/backward_cost_probe.py --out probe.json     # on the GPU: times, counts, fits
    python3 tools/backward_cost_probe.py --fit probe.json     # anywhere: the fits again from the file
"""
import sys

from forward_cost_probe import CONFIGS, gpu_report, probe_parser, refit, save_fitted  # tools/ (script dir)
from forward_stage_counts import stage_counts
from kv_schedule_model import kv_units

COLUMNS = {"kv": ("full_steps", "half_steps", "units"), "dq": ("stages", "masked_wg_stages", "units")}


def fit(cases, sms):
    import numpy as np
    out = {}
    for kernel, cols in COLUMNS.items():
        a = np.array([[c[kernel][k] / sms for k in cols] + [1.0] for c in cases])
        y = np.array([c[kernel]["ms"] * 1e3 for c in cases])
        x, *_ = np.linalg.lstsq(a, y, rcond=None)
        res = float(np.max(np.abs(a @ x - y) / y))
        out[kernel] = dict(zip([f"us_per_{k}" for k in cols] + ["us_per_launch"], map(float, x)),
                           max_rel_residual=res)
        terms = ", ".join(f"{k} {v:.3f} us" for k, v in zip(cols, x[:-1]))
        print(f"{kernel} kernel, per CTA: {terms}; per launch {x[-1]:.1f} us; max residual {res * 100:.1f}%")
    return out


def main():
    a = probe_parser(__doc__, "backward_cost_probe.json", iters=3).parse_args()
    if a.fit:
        return refit(a.fit, fit)
    import torch
    import s2attn
    from profile_kernels import kernel_times
    dev = "cuda"
    report, sms = gpu_report(shape=dict(B=1, H=a.H, D=128, block=64, dtype="bf16", causal=True))
    for S, L, V, vp in CONFIGS:
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v, do = (torch.randn((1, S, a.H, 128), device=dev, dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        pattern = s2attn.local_stride(a.H, 64, L, V, causal=True, vert_position=vp)
        out, lse = s2attn.attention(q, k, v, pattern, return_lse=True)
        grads = tuple(torch.empty_like(x) for x in (q, k, v))
        ws = torch.empty(s2attn.backward_workspace_size(q, k, v, pattern), dtype=torch.uint8, device=dev)
        fn = lambda: s2attn.attention_backward(do, q, k, v, out, lse, pattern, dq=grads[0], dk=grads[1],  # noqa: E731
                                               dv=grads[2], workspace=ws)
        rows = kernel_times(fn, a.iters)
        kv_ms = sum(r["ms_per_call"] for r in rows if "backward_kv_kernel_sm90" in r["kernel"])
        dq_ms = sum(r["ms_per_call"] for r in rows if "backward_dq_kernel_sm90" in r["kernel"])
        units = kv_units(S, a.H, L, V, vert_position=vp)
        kv = dict(ms=kv_ms, full_steps=sum(f for f, _ in units), half_steps=sum(h for _, h in units), units=len(units))
        dq = dict(ms=dq_ms, **stage_counts(pattern, S, a.H))
        report["cases"].append(dict(S=S, L=L, V=V, vert_position=vp, kv=kv, dq=dq))
        print(f"S={S} L={L} V={V} {vp}: KV {kv_ms:.4f} ms {kv}; dQ {dq_ms:.4f} ms", flush=True)
        del q, k, v, do, out, lse, grads, ws
    return save_fitted(report, fit, sms, a.out)


if __name__ == "__main__":
    sys.exit(main())

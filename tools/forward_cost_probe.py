#!/usr/bin/env python3
"""Where the Hopper forward's time goes, from timings alone: the kernel time of the forward over a grid of
local + vertical-stride patterns (B = 1, H = 32, D = 128, bf16, causal, block 64), and for each the work the
kernel does, counted from the pattern as the kernel walks it (tools/forward_stage_counts.py): 128-key
stages, of them the warpgroup-stages that need the element-wise mask, and work units. A least-squares fit
of time against those counts gives the cost of a stage, of a masked warpgroup-stage on top, of a unit on
top (prologue, epilogue, pipeline fill and drain), and a constant per launch (start, schedule tail).

    python3 tools/forward_cost_probe.py --out probe.json     # on the GPU: times, counts, fit
    python3 tools/forward_cost_probe.py --fit probe.json     # anywhere: the fit again from the file
"""
import argparse
import json
import sys

from forward_stage_counts import stage_counts  # tools/ is the script's directory

# (S, local blocks, vertical stride, vertical position): "relative" strides make the two query blocks of a
# tile see different vertical blocks, so most of their warpgroup-stages are masked: they separate the
# masked stage's cost from the unit's.
CONFIGS = [
    (8192, 16, 8, "absolute"), (8192, 16, 32, "absolute"), (8192, 4, 8, "absolute"), (8192, 2, 4, "absolute"),
    (8192, 32, 16, "absolute"), (8192, 8, 64, "absolute"), (8192, 1, 1, "absolute"), (8192, 16, 8, "relative"),
    (32768, 16, 8, "absolute"), (32768, 16, 32, "absolute"), (32768, 4, 8, "absolute"), (32768, 2, 16, "absolute"),
    (32768, 32, 64, "absolute"), (32768, 8, 4, "absolute"), (32768, 64, 1024, "absolute"),
    (32768, 2, 64, "absolute"), (32768, 1, 1, "absolute"), (32768, 16, 8, "relative"), (32768, 4, 16, "relative"),
    (32768, 2, 3, "relative"),
]


def fit(cases, sms):
    import numpy as np
    a = np.array([[c["stages"] / sms, c["masked_wg_stages"] / sms, c["units"] / sms, 1.0] for c in cases])
    y = np.array([c["kernel_ms"] * 1e3 for c in cases])
    x, *_ = np.linalg.lstsq(a, y, rcond=None)
    pred = a @ x
    out = dict(us_per_stage=x[0], us_per_masked_wg_stage=x[1], us_per_unit=x[2], us_per_launch=x[3],
               max_rel_residual=float(np.max(np.abs(pred - y) / y)))
    print(f"per stage {x[0]:.3f} us, per masked warpgroup-stage +{x[1]:.3f} us, per unit +{x[2]:.3f} us "
          f"(one CTA's time), per launch {x[3]:.1f} us; max residual {out['max_rel_residual'] * 100:.1f}%")
    for c, p in zip(cases, pred):
        print(f"  S={c['S']:6d} L={c['L']:4d} V={c['V']:5d} {c['vert_position'][:3]} H={c.get('H', 32)}: {c['kernel_ms']:.4f} ms, fit {p / 1e3:.4f}; "
              f"stages/unit {c['stages'] / c['units']:.1f}, masked wg-stages/unit {c['masked_wg_stages'] / c['units']:.2f}")
    return out


def refit(path, fit_fn):
    """--fit: the fit again from a probe file (no GPU needed)."""
    with open(path) as f:
        report = json.load(f)
    fit_fn(report["cases"], report["sms"])
    return 0


def probe_parser(doc, out, iters):
    """The arguments both probes take: --out, --fit (a probe file to fit again), --H, --iters."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=out)
    ap.add_argument("--fit", help="a probe file to fit again (no GPU needed)")
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--iters", type=int, default=iters)
    return ap


def save_fitted(report, fit_fn, sms, path):
    """The fit of the report's cases into the report, and the report to `path` as JSON."""
    report["fit"] = fit_fn(report["cases"], sms)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return 0


def gpu_report(**fields):
    """The probe's JSON header on the GPU it runs on (name, torch, command, SM count) and its SM count."""
    import torch
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    report = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv), sms=sms,
                  **fields, cases=[])
    return report, sms


def main():
    ap = probe_parser(__doc__, "forward_cost_probe.json", iters=5)
    ap.add_argument("--configs", help="S:L:V:position[:H],... instead of the built-in grid (H defaults to --H)")
    ap.add_argument("--backend", choices=("cuda_sm90", "cuda_sm80"), default="cuda_sm90",
                    help="cuda_sm80: the portable kernel (one 64-key tile a step of its 128-row CTAs)")
    a = ap.parse_args()
    if a.fit:
        return refit(a.fit, fit)
    import torch
    import s2attn
    from profile_kernels import kernel_times
    dev = "cuda"
    report, sms = gpu_report(backend=a.backend, shape=dict(B=1, D=128, block=64, dtype="bf16", causal=True))
    configs = [(S, L, V, vp, a.H) for S, L, V, vp in CONFIGS]
    if a.configs:
        configs = []
        for item in a.configs.split(","):
            f = item.split(":")
            configs.append((int(f[0]), int(f[1]), int(f[2]), f[3], int(f[4]) if len(f) > 4 else a.H))
    for S, L, V, vp, H in configs:
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn((1, S, H, 128), device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3))
        pattern = s2attn.local_stride(H, 64, L, V, causal=True, vert_position=vp)
        out, lse = s2attn.attention(q, k, v, pattern, return_lse=True, backend=a.backend)
        fn = lambda: s2attn.attention(q, k, v, pattern, out=out, lse=lse, return_lse=True,  # noqa: E731
                                      backend=a.backend)
        name = "forward_kernel_sm90" if a.backend == "cuda_sm90" else "forward_kernel_sm80"
        ms = sum(r["ms_per_call"] for r in kernel_times(fn, a.iters) if name in r["kernel"])
        counts = stage_counts(pattern, S, H, boxes_per_stage=2 if a.backend == "cuda_sm90" else 1)
        report["cases"].append(dict(S=S, L=L, V=V, vert_position=vp, H=H, kernel_ms=ms, **counts))
        print(f"S={S} L={L} V={V} {vp} H={H}: {ms:.4f} ms {counts}", flush=True)
        del q, k, v, out, lse
    return save_fitted(report, fit, sms, a.out)


if __name__ == "__main__":
    sys.exit(main())

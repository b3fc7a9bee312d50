"""CPU backend: forward time follows the visible blocks.

Times S2 attention against the dense causal pattern on the same (CPU) backend and reports the speedup next
to 1/density. Acceptance (issue 3): at S=8192, V=8, L=16 the speedup is >= 0.7 x (1/density).

    .venv/bin/python bench/cpu_scaling.py [--out bench/results/cpu_scaling.json]
"""
import argparse
import datetime
import json
import os
import platform

import numpy as np

import s2attn
from s2attn._timing import median_seconds, causal_attention_flops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--local", type=int, default=16)
    ap.add_argument("--seqlens", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--strides", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/cpu_scaling.json")
    a = ap.parse_args()

    dtype = np.float32
    if a.dtype == "bfloat16":
        import ml_dtypes
        dtype = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    rows = []
    for S in a.seqlens:
        shape = (1, S, a.heads, a.head_dim)
        q, k, v = (rng.standard_normal(shape, dtype=np.float32).astype(dtype) for _ in range(3))
        out = np.empty_like(q)
        flops = causal_attention_flops(1, a.heads, S, S, a.head_dim)
        dense = s2attn.dense(a.heads, a.block)
        t_dense = median_seconds(lambda: s2attn.attention(q, k, v, dense, out=out), a.repeats)
        for V in a.strides:
            p = s2attn.local_stride(a.heads, a.block, a.local, V)
            d = p.density(S)
            t = median_seconds(lambda: s2attn.attention(q, k, v, p, out=out), a.repeats)
            row = dict(seqlen=S, vert_stride=V, local_blocks=a.local, density=d, ms_s2=t * 1e3,
                       ms_dense=t_dense * 1e3, speedup=t_dense / t, ideal=1 / d,
                       fraction_of_ideal=(t_dense / t) * d,
                       effective_gflops=flops * d / t / 1e9, dense_gflops=flops / t_dense / 1e9)
            rows.append(row)
            print(f"S={S:6d} V={V:3d} density={d:.4f}  s2 {t * 1e3:8.1f} ms  dense {t_dense * 1e3:8.1f} ms  "
                  f"speedup {t_dense / t:5.2f}x  ideal {1 / d:5.2f}x  ({(t_dense / t) * d:.2f} of ideal)  "
                  f"{flops * d / t / 1e9:6.1f} eff. GFLOP/s", flush=True)
    result = dict(
        benchmark="cpu_scaling", backend="cpu", date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                     python=platform.python_version(), numpy=np.__version__),
        s2attn=s2attn.__version__, config=dict(batch=1, heads=a.heads, head_dim=a.head_dim, block=a.block,
                                              dtype=a.dtype, causal=True),
        command="python bench/cpu_scaling.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(a).items() if k != "out"),
        rows=rows)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

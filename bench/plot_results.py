"""Plots of committed GPU benchmark results: effective TFLOP/s per implementation and shape, one panel per
sequence length (forward and fwd+bwd files alike: both carry `results` rows with impl, S, V, mode, ms,
effective_tflops).

    .venv/bin/python bench/plot_results.py bench/results/gpu_forward_2026-11-24.json [--out PNG]
"""
import argparse
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def best_rows(results, mode):
    """The fastest row per (impl, S, V) (storage layouts are alternatives of one implementation)."""
    best = {}
    for r in results:
        if r.get("mode", "fwd") != mode:
            continue
        key = (r["impl"], r["S"], r["V"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--mode", default=None, help="fwd (default for forward files) or fwd+bwd")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    data = json.load(open(a.result))
    results = data["results"]
    mode = a.mode or ("fwd+bwd" if any(r.get("mode") == "fwd+bwd" for r in results) else "fwd")
    best = best_rows(results, mode)
    seqlens = sorted({s for _, s, _ in best})
    impls = sorted({i for i, _, _ in best}, key=lambda i: (not i.startswith("s2attn"), i))
    fig, axes = plt.subplots(1, len(seqlens), figsize=(5 * len(seqlens), 4), squeeze=False)
    for ax, S in zip(axes[0], seqlens):
        groups = sorted({v for _, s, v in best if s == S})
        width = 0.8 / max(1, len(impls))
        for n, impl in enumerate(impls):
            xs, ys = [], []
            for g, v in enumerate(groups):
                r = best.get((impl, S, v))
                if r is not None:
                    xs.append(g + n * width)
                    ys.append(r["effective_tflops"])
            if xs:  # one colour per implementation in every panel (absent rows must not shift them)
                ax.bar(xs, ys, width, label=impl, color=f"C{n % 10}")
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax.set_xticklabels(["dense" if v == 0 else f"V={v}" for v in groups])
        ax.set_title(f"S = {S // 1024}k ({mode})")
        ax.set_ylabel("effective TFLOP/s")
    handles = {}
    for ax in axes[0]:  # the legend lists every implementation, whichever panel it appears in
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=7)
    meta = data.get("meta", {})
    fig.suptitle(f"{meta.get('gpu', '?')}, torch {meta.get('torch', '?')}, {meta.get('date', '')[:10]}")
    fig.tight_layout()
    out = a.out or os.path.splitext(a.result)[0] + ".png"
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Figures of a model-benchmark result file, written beside it:
  <stem>_prefill_latency.png   prefill latency vs context per configuration (and the non-attention time)
  <stem>_prefill_speedup.png   speedup vs context against FA2 and cuDNN dense, with the Amdahl limit
                               (the dense model's time over its non-attention time: attention for free)
  <stem>_decode_max_batch.png  largest decode batch that fits, per configuration and context
  <stem>_decode_throughput.png decode tokens/s vs batch, per configuration and context

    .venv/bin/python bench/model/plot.py bench/results/model_bench_<date>.json
"""
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _k(n):
    return f"{n // 1024}k" if n >= 1024 else str(n)


def _title(data, what):
    m = data["meta"]
    return f"{what} — {m.get('gpu') or m.get('cpu')}, torch {m.get('torch')}, {m.get('date', '')[:10]}"


def _lines(ax, series, black=()):
    """One line per label of {label: {x: y}}; labels in `black` dashed black (the reference lines)."""
    for label, pts in series.items():
        xs = sorted(pts)
        style = dict(color="black", linestyle="--") if label in black else {}
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=label, **style)


def _save(fig, out):
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _context_axis(ax, contexts):
    ax.set_xscale("log", base=2)
    ax.set_xticks(contexts)
    ax.set_xticklabels([_k(c) for c in contexts])
    ax.set_xlabel("context (tokens)")


def prefill_latency(data, out):
    series = defaultdict(dict)
    for r in data["prefill"]:
        series[f"{r['label']} ({r['model']})"][r["context"]] = r["ms"] / 1e3
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    _lines(ax, series, black=[k for k in series if k.startswith("no attention")])
    _context_axis(ax, sorted({r["context"] for r in data["prefill"]}))
    ax.set_yscale("log")
    ax.set_ylabel("prefill latency, batch 1 (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_title(data, "prefill"), fontsize=9)
    return _save(fig, out)


def prefill_speedup(data, out):
    rows = [r for r in data["prefill"] if r["config"] != "none" and not r["config"].startswith("dense")]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), squeeze=False)
    for ax, (key, name) in zip(axes[0], (("sdpa_flash", "FA2 (SDPA flash) dense"), ("sdpa_cudnn", "cuDNN dense"))):
        series, limit = defaultdict(dict), "limit: attention free"
        for r in rows:
            if f"speedup_vs_{key}" in r:
                series[r["label"]][r["context"]] = r[f"speedup_vs_{key}"]
            if f"amdahl_max_speedup_vs_{key}" in r:
                series[limit][r["context"]] = r[f"amdahl_max_speedup_vs_{key}"]
        _lines(ax, series, black=[limit])
        if series:
            _context_axis(ax, sorted({c for pts in series.values() for c in pts}))
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel(f"speedup over {name}")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no baseline rows", ha="center", transform=ax.transAxes)
        ax.set_title(f"model prefill speedup vs {name}", fontsize=9)
    fig.suptitle(_title(data, "prefill speedup"), fontsize=9)
    return _save(fig, out)


def decode_max_batch(data, out):
    rows = [r for r in data["kv_cache"] if r.get("max_batch") is not None]
    if not rows:
        return None
    groups = sorted({(r["model"], r["context"]) for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    labels = {r["config"]: r["label"] for r in rows}
    by = {(r["model"], r["context"], r["config"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(groups)), 5))
    width = 0.8 / len(configs)
    for n, c in enumerate(configs):
        xs, ys = [], []
        for g, (model, ctx) in enumerate(groups):
            r = by.get((model, ctx, c))
            if r is not None:
                xs.append(g + n * width)
                ys.append(r["max_batch"])
        bars = ax.bar(xs, ys, width, label=labels[c])
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{_k(c)} context" for m, c in groups], fontsize=8)
    ax.set_ylabel("largest batch that fits (sequences)")
    ax.set_yscale("symlog", linthresh=1)
    ax.legend(fontsize=7)
    ax.set_title(_title(data, "decode: largest batch that fits in memory"), fontsize=9)
    return _save(fig, out)


def decode_throughput(data, out):
    rows = [r for r in data["decode"] if r.get("status") == "ok"]
    if not rows:
        return None
    groups = sorted({(r["model"], r["context"]) for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4.5), squeeze=False)
    for ax, (model, ctx) in zip(axes[0], groups):
        series = defaultdict(dict)
        for r in rows:
            if r["model"] == model and r["context"] == ctx:
                series[r["label"]][r["batch"]] = r["tokens_per_s"]
        _lines(ax, series, black=["no attention"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("tokens/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{model}, {_k(ctx)} context", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(_title(data, "decode throughput"), fontsize=9)
    return _save(fig, out)


def plot_all(path):
    """Every figure the result file has data for; returns the paths written."""
    with open(path) as f:
        data = json.load(f)
    stem = os.path.splitext(path)[0]
    made = [fn(data, f"{stem}_{name}.png") for name, fn in (
        ("prefill_latency", prefill_latency), ("prefill_speedup", prefill_speedup),
        ("decode_max_batch", decode_max_batch), ("decode_throughput", decode_throughput))]
    return [m for m in made if m]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for p in plot_all(sys.argv[1]):
        print(f"wrote {p}")

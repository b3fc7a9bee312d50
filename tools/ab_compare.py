#!/usr/bin/env python3
"""Table of a `tools/gpu-ab` run's kernel times: each variant against base, per shape, pass and kernel.

    python3 tools/ab_compare.py AB_DIR [--passes forward,backward] [--kernels] [--us]

AB_DIR holds one folder per variant (base first), each with the p_*.json files that tools/profile_kernels.py
wrote there. Prints, for every shape and pass, base's ms per call and each variant's change in percent; with
--kernels also each kernel of the pass (named by its function, template arguments dropped; the portable
backward's KV kernels, which variants may swap for one another, share the row backward_kv*_kernel_sm80).

A run with rounds (AB_ROUNDS > 1: the files in <variant>/r<k>/) is compared round by round: a variant's change
is the median over the rounds of its ratio to base in the same round, followed by the lowest and highest of
those ratios; base's ms is its median.
"""
import statistics
import argparse
import json
import pathlib
import re
import sys


def kernel_name(full):
    m = re.search(r"(\w+)<", full) or re.search(r"(\w+)\(", full)
    name = m.group(1) if m else full[:40]
    # one KV kernel runs per portable backward, whichever variant (backward_kv_kernel_sm80, _2x2_, _phased_)
    return re.sub(r"^backward_kv(_\w+?)?_kernel_sm80$", "backward_kv*_kernel_sm80", name)


def load_dir(d):
    shapes = {}
    for f in sorted(d.glob("p_*.json")):
        rep = json.loads(f.read_text())
        sh = rep["shape"]
        key = f"D{sh['D']} S{sh['S']} V{sh['V']}" + (f" {sh['layout']}" if "layout" in sh else "")
        shapes[key] = {name: rows for name, rows in rep["passes"].items()}
    return shapes


def load(variant_dir):
    """{round: {shape: {pass: rows}}}; one round ("") where the variant has no r<k> folders."""
    rounds = sorted(p for p in variant_dir.glob("r*") if p.is_dir() and p.name[1:].isdigit())
    if not rounds:
        return {"": load_dir(variant_dir)}
    return {p.name: load_dir(p) for p in rounds}


def pass_ms(rows):
    return sum(r["ms_per_call"] for r in rows)


def kernel_ms(rows, name):
    match = [x["ms_per_call"] for x in rows or [] if kernel_name(x["kernel"]) == name]
    return match[0] if match else None


def median_ms(by_round):
    return statistics.median(x for x in by_round.values() if x is not None)


def change(base_by_round, var_by_round):
    """The variant's per-round ratio to base: (median, lowest, highest), or None where no round has both."""
    ratios = [var_by_round[r] / ms for r, ms in base_by_round.items()
              if ms is not None and ms > 0 and var_by_round.get(r) is not None]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


def cell(change):
    if change is None:
        return f" {'-':>10}"
    med, lo, hi = change
    text = f" {100 * (med - 1):+9.1f}%"
    if hi > lo:
        text += f" [{100 * (lo - 1):+.1f},{100 * (hi - 1):+.1f}]"
    return text


def table_line(label, ms, variants, scale=1.0):
    """label, base's median ms (times `scale`: 1000 prints us), then each variant's change; ms: {variant:
    {round: ms or None}}."""
    return f"{label} {scale * median_ms(ms['base']):9.3f}" + "".join(
        cell(change(ms["base"], ms[v])) for v in variants[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ab_dir")
    ap.add_argument("--passes", default="forward,forward_sm80,backward,backward_sm80")
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--us", action="store_true", help="base times in microseconds (decode calls)")
    a = ap.parse_args()
    scale = 1000.0 if a.us else 1.0
    root = pathlib.Path(a.ab_dir)
    variants = ["base"] + sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "base")
    data = {v: load(root / v) for v in variants}
    passes = a.passes.split(",")
    # the columns in full (the header has room for 10 characters of a name, and names often share a prefix)
    for n, v in enumerate(variants[1:], 1):
        print(f"# column {n}: {v}")
    unit = "base us" if a.us else "base ms"
    head = f"{'shape':23} {'pass / kernel':34} {unit:>9}" + "".join(f" {v[:10]:>10}" for v in variants[1:])
    print(head)
    base_rounds = data["base"]
    shapes = sorted({sh for rd in base_rounds.values() for sh in rd})
    for shape in shapes:
        for p in passes:
            # {variant: {round: rows}}
            rows = {v: {r: data[v][r].get(shape, {}).get(p) for r in data[v]} for v in variants}
            if all(x is None for x in rows["base"].values()):
                continue
            totals = {v: {r: pass_ms(x) if x else None for r, x in rows[v].items()} for v in variants}
            print(table_line(f"{shape:23} {p:34}", totals, variants, scale))
            if not a.kernels:
                continue
            first = next(x for x in rows["base"].values() if x)
            for r in first:
                name = kernel_name(r["kernel"])
                per = {v: {rd: kernel_ms(x, name) for rd, x in rows[v].items()} for v in variants}
                print(table_line(f"{'':23}   {name[:32]:32}", per, variants, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())

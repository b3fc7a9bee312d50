#!/usr/bin/env python3
"""Table of a `tools/gpu-ab` run's kernel times: each variant against base, per shape, pass and kernel.

    python3 tools/ab_compare.py AB_DIR [--passes forward,backward] [--kernels]

AB_DIR holds one folder per variant (base first), each with the p_*.json files that tools/profile_kernels.py
wrote there. Prints, for every shape and pass, base's ms per call and each variant's change in percent; with
--kernels also each kernel of the pass (named by its function, template arguments dropped).
"""
import argparse
import json
import pathlib
import re
import sys


def kernel_name(full):
    m = re.search(r"(\w+)<", full) or re.search(r"(\w+)\(", full)
    return m.group(1) if m else full[:40]


def load(variant_dir):
    shapes = {}
    for f in sorted(variant_dir.glob("p_*.json")):
        rep = json.loads(f.read_text())
        sh = rep["shape"]
        key = f"D{sh['D']} S{sh['S']} V{sh['V']}" + (f" {sh['layout']}" if "layout" in sh else "")
        shapes[key] = {name: rows for name, rows in rep["passes"].items()}
    return shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ab_dir")
    ap.add_argument("--passes", default="forward,forward_sm80,backward,backward_sm80")
    ap.add_argument("--kernels", action="store_true")
    a = ap.parse_args()
    root = pathlib.Path(a.ab_dir)
    variants = ["base"] + sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "base")
    data = {v: load(root / v) for v in variants}
    passes = a.passes.split(",")
    head = f"{'shape':23} {'pass / kernel':34} {'base ms':>9}" + "".join(f" {v[:10]:>10}" for v in variants[1:])
    print(head)
    for shape in sorted(data["base"]):
        for p in passes:
            rows = {v: data[v].get(shape, {}).get(p) for v in variants}
            if rows["base"] is None:
                continue
            total = {v: sum(r["ms_per_call"] for r in rs) for v, rs in rows.items() if rs}
            line = f"{shape:23} {p:34} {total['base']:9.3f}"
            for v in variants[1:]:
                line += f" {100 * (total[v] / total['base'] - 1):+9.1f}%" if v in total else f" {'-':>10}"
            print(line)
            if not a.kernels:
                continue
            for r in rows["base"]:
                name = kernel_name(r["kernel"])
                line = f"{'':23}   {name[:32]:32} {r['ms_per_call']:9.3f}"
                for v in variants[1:]:
                    match = [x for x in (rows[v] or []) if kernel_name(x["kernel"]) == name]
                    line += (f" {100 * (match[0]['ms_per_call'] / r['ms_per_call'] - 1):+9.1f}%" if match
                             else f" {'-':>10}")
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

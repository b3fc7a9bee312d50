"""Summary of an Nsight Compute source page (tools/ncu-kernels writes source_<kernel>.csv): the share of warp
samples per stall reason over the whole kernel, then the instructions with the most samples.

    python3 tools/ncu_source_summary.py source_forward_kernel_sm90.csv [TOP]
"""
import collections
import csv
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0  # "-" or empty: no samples


def main():
    path = sys.argv[1]
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(path) as f:
        rows = list(csv.reader(f))
    # a block per profiled launch, each a "Kernel Name" row, a header row and the instructions: the first one
    starts = [i for i, r in enumerate(rows) if r and r[0] == "Kernel Name"] + [len(rows)]
    header = rows[starts[0] + 1]
    data = [r for r in rows[starts[0] + 2:starts[1]] if len(r) == len(header)]
    col = {h: i for i, h in enumerate(header)}
    stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    total = sum(number(r[col[SAMPLES]]) for r in data)
    if total == 0:
        sys.exit(f"{path}: no samples")
    by_reason = collections.Counter()
    for r in data:
        for s in stalls:
            by_reason[s] += number(r[col[s]])
    print(f"total samples {total:.0f}")
    for s, v in by_reason.most_common(12):
        print(f"  {s:28s} {v / total * 100:5.1f}%")
    for r in sorted(data, key=lambda r: -number(r[col[SAMPLES]]))[:top_n]:
        reasons = sorted(((number(r[col[s]]), s) for s in stalls), reverse=True)[:2]
        print(f"{r[col['Address']]:>8} {number(r[col[SAMPLES]]) / total * 100:5.1f}% {r[col['Source']][:60]:60s} "
              + " ".join(f"{s[len('stall_'):]}={v / total * 100:.1f}" for v, s in reasons))


if __name__ == "__main__":
    main()

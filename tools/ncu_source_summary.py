"""Summary of an Nsight Compute source page (tools/ncu-kernels writes source_<kernel>.csv): the share of warp
samples per stall reason over the whole kernel, then the instructions with the most samples.

    python3 tools/ncu_source_summary.py source_forward_kernel_sm90.csv [TOP]
    python3 tools/ncu_source_summary.py source_....csv[.gz] [TOP] --blocks

--blocks: the straight-line runs of instructions (consecutive addresses executed equally often: basic blocks,
near enough) with the most warp instructions executed, each with its share of the instructions and of the
samples and its first opcodes. Where a kernel issues at a steady rate (the Hopper KV kernel, session 16) its
time follows its instruction count, and this shows which code the count comes from.
"""
import collections
import csv
import gzip
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0  # "-" or empty: no samples


def print_blocks(data, col, total_samples, top_n):
    executed = "Instructions Executed"
    blocks = []  # [first address, times executed, instructions, samples]
    for r in data:
        n = number(r[col[executed]])
        if blocks and n == blocks[-1][1]:
            blocks[-1][2].append(r[col["Source"]].strip())
            blocks[-1][3] += number(r[col[SAMPLES]])
        else:
            blocks.append([r[col["Address"]], n, [r[col["Source"]].strip()], number(r[col[SAMPLES]])])
    total = sum(b[1] * len(b[2]) for b in blocks)
    print(f"warp instructions executed {total / 1e6:.1f} M")
    for addr, n, ins, smp in sorted(blocks, key=lambda b: -b[1] * len(b[2]))[:top_n]:
        ops = [i.split()[1] if i.startswith("@") else i.split()[0] for i in ins if i]
        print(f"{addr:>8} {n / 1e3:8.0f}k x {len(ins):3d} = {n * len(ins) / total * 100:5.1f}% instructions, "
              f"{smp / total_samples * 100:4.1f}% samples: {' '.join(o.split('.')[0] for o in ops[:12])}")


def main():
    args = [a for a in sys.argv[1:] if a != "--blocks"]
    path = args[0]
    top_n = int(args[1]) if len(args) > 1 else 25
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
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
    if "--blocks" in sys.argv:
        print_blocks(data, col, total, top_n)
        return
    print(f"total samples {total:.0f}")
    for s, v in by_reason.most_common(12):
        print(f"  {s:28s} {v / total * 100:5.1f}%")
    for r in sorted(data, key=lambda r: -number(r[col[SAMPLES]]))[:top_n]:
        reasons = sorted(((number(r[col[s]]), s) for s in stalls), reverse=True)[:2]
        print(f"{r[col['Address']]:>8} {number(r[col[SAMPLES]]) / total * 100:5.1f}% {r[col['Source']][:60]:60s} "
              + " ".join(f"{s[len('stall_'):]}={v / total * 100:.1f}" for v, s in reasons))


if __name__ == "__main__":
    main()

"""Per source line of one kernel: the warp instructions it executed and the warp stall samples it took, from an
Nsight Compute source page (tools/ncu-kernels' source_<kernel>.csv, SASS only, as exported without the
sources) and the line table of the same code compiled with -lineinfo. The address of each instruction
relative to the kernel's first one is the key, so the cubin must hold exactly the code that was profiled (same
sources, flags and nvcc): check that the instruction counts agree.

    nvcc -std=c++17 -O3 -DNDEBUG -lineinfo --expt-relaxed-constexpr -Iinclude -Isrc -arch=sm_90 -cubin \\
        src/inference/cuda/paged_launch.cu -o /tmp/paged.cubin
    python3 tools/ncu_lines.py source_paged_mma_kernel.csv /tmp/paged.cubin \\
        'paged_mma_kernelI13__nv_bfloat16Li128ELi1ELb0E' [TOP]

The csv may be gzipped (.gz). nvdisasm is taken from PATH or $NVDISASM.
"""
import collections
import csv
import gzip
import os
import re
import subprocess
import sys


def line_table(cubin, kernel):
    """{offset: (file, line)} of the first kernel whose mangled name contains `kernel` (innermost inlined
    location, as nvdisasm prints it)."""
    nvdisasm = os.environ.get("NVDISASM", "nvdisasm")
    text = subprocess.run([nvdisasm, "--print-line-info", cubin], capture_output=True, text=True, check=True).stdout
    table, name, where, found = {}, None, None, None
    for line in text.splitlines():
        m = re.match(r"\s*\.text\.(\S+):", line)
        if m:
            if found:
                break
            name = m.group(1)
            found = kernel in name
            continue
        if not found:
            continue
        m = re.search(r'//## File "([^"]+)", line (\d+)', line)
        if m:
            where = (os.path.basename(m.group(1)), int(m.group(2)))
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/", line)
        if m:
            table[int(m.group(1), 16)] = where
    if not table:
        sys.exit(f"no kernel matching {kernel!r} in {cubin}")
    return name, table


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, cubin, kernel = sys.argv[1:4]
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        rows = list(csv.reader(f))
    starts = [i for i, r in enumerate(rows) if r and r[0] == "Kernel Name"] + [len(rows)]
    header = rows[starts[0] + 1]
    data = [r for r in rows[starts[0] + 2:starts[1]] if len(r) == len(header)]
    col = {h: i for i, h in enumerate(header)}
    name, table = line_table(cubin, kernel)
    print(f"{name}: {len(table)} instructions in the cubin, {len(data)} in the profile"
          + ("" if len(table) == len(data) else "  (DIFFERENT CODE: the attribution is not valid)"))
    base = int(data[0][col["Address"]], 16)
    executed, samples = collections.Counter(), collections.Counter()
    for r in data:
        where = table.get(int(r[col["Address"]], 16) - base)
        executed[where] += number(r[col["Instructions Executed"]])
        samples[where] += number(r[col["Warp Stall Sampling (All Samples)"]])
    total_e, total_s = sum(executed.values()) or 1, sum(samples.values()) or 1
    print(f"warp instructions executed {total_e:.0f}, stall samples {total_s:.0f}")
    print(f"{'file:line':42s} {'executed':>10s} {'%':>6s} {'samples %':>9s}")
    for where, e in executed.most_common(top):
        label = f"{where[0]}:{where[1]}" if where else "?"
        print(f"{label:42s} {e:10.0f} {100 * e / total_e:6.1f} {100 * samples[where] / total_s:9.1f}")


if __name__ == "__main__":
    main()

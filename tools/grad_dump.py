"""Gradients of the deterministic portable backward on the GPU test matrix, saved for a bitwise comparison
between two builds (an A/B of a kernel change that should not change a single bit, e.g. a retiling that keeps
each dQ element's summation order).

    python3 tools/grad_dump.py --out A.pt [--backend cuda_sm80]     # in build A's environment
    python3 tools/grad_dump.py --out B.pt                           # in build B's environment
    python3 tools/grad_dump.py --compare A.pt B.pt                  # exit status 1 on any difference

The cases are tests/python/test_gpu.py's forward and backward matrices (odd lengths, q_offset, Sq > Sk,
bidirectional, every block size, GQA / MQA, layouts, softmax scales), bf16 and fp16, with inputs from a
generator seeded by the case's index: both builds see the same tensors. The dump holds the forward's output
and LSE too, so a forward change can be compared the same way.
"""
import argparse
import os
import sys

import torch


def cases():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
    import test_gpu  # noqa: E402  (its helpers build the patterns and inputs)

    seen, out = set(), []
    for c in test_gpu.CASES + test_gpu.BWD_CASES:
        key = repr(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return test_gpu, out


def dump(path, backend):
    import s2attn

    test_gpu, matrix = cases()
    result = {}
    for i, c in enumerate(matrix):
        for dtype in ("bf16", "fp16"):
            gen = torch.Generator()
            gen.manual_seed(1000 + i)
            pattern, q, k, v, kw, _, _ = test_gpu.case_inputs(c, dtype, gen)
            out, lse = s2attn.attention(q, k, v, pattern, return_lse=True, backend=backend, **kw)
            dout = torch.randn(out.shape, generator=gen).to(out.dtype).to(out.device)
            grads = s2attn.attention_backward(dout, q, k, v, out, lse, pattern, deterministic=True,
                                              backend=backend, **kw)
            name = f"{i:02d}_{test_gpu.case_id(c)}_{dtype}"
            result[name] = {k_: t.detach().cpu() for k_, t in zip(("out", "lse", "dq", "dk", "dv"),
                                                                   (out, lse, *grads))}
    torch.save(result, path)
    print(f"grad_dump: {len(result)} cases ({backend}) -> {path}")


def compare(path_a, path_b):
    a, b = torch.load(path_a), torch.load(path_b)
    if a.keys() != b.keys():
        print("grad_dump: the two dumps hold different cases")
        return 1
    diff = []
    for name in a:
        for t in a[name]:
            x, y = a[name][t], b[name][t]
            if not torch.equal(x, y):
                both = torch.isfinite(x) & torch.isfinite(y)
                gap = (x[both].float() - y[both].float()).abs().max().item() if both.any() else float("nan")
                diff.append(f"{name} {t}: max |a - b| {gap:.3g}")
    n = sum(len(a[name]) for name in a)
    print(f"grad_dump: {n - len(diff)} of {n} tensors bitwise equal ({path_a} vs {path_b})")
    for line in diff[:30]:
        print("  " + line)
    return 1 if diff else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the dump here")
    ap.add_argument("--backend", default="cuda_sm80")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        ap.error("--out or --compare")
    dump(args.out, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())

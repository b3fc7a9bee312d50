"""A few small calls of the Hopper (sm_90a) forward, forced with backend="cuda_sm90", for compute-sanitizer
(memcheck, racecheck): odd lengths, block 64 and 128, head dims 64 and 128, bf16 and fp16, GQA, decode,
bidirectional, varlen with an empty sequence, Sq > Sk, and more work units than CTAs (the persistent loop
and the Q / K/V ring phases). Checks the outputs against a float64 reference; exits non-zero on a mismatch.
Exits 0 with a note where there is no Hopper GPU or no Hopper path in the build.

    compute-sanitizer --tool memcheck python3 tools/gpu_small_case_sm90.py
"""
import os
import sys

import torch

import s2attn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_small_case import DEV, check, hopper_missing, packed_inputs, packed_reference, unless_not_built  # noqa: E402


def run(name, lens_q, lens_k, H, Hkv, D, bs, causal, dtype, gen, local=2, stride=3):
    return unless_not_built(name, run_case, name, lens_q, lens_k, H, Hkv, D, bs, causal, dtype, gen, local, stride)


def run_case(name, lens_q, lens_k, H, Hkv, D, bs, causal, dtype, gen, local, stride):
    p = s2attn.local_stride(H, bs, local, stride, causal=causal, num_kv_heads=Hkv)
    q, k, v, cu_q, cu_k = packed_inputs(lens_q, lens_k, H, Hkv, D, dtype, gen)
    if len(lens_q) == 1:  # dense batch of one
        out = torch.full((1, *q.shape), float("nan"), dtype=dtype, device=DEV)
        s2attn.attention(q[None], k[None], v[None], p, out=out, backend="cuda_sm90")
        out = out[0]
    else:
        out = torch.full(q.shape, float("nan"), dtype=dtype, device=DEV)
        s2attn.attention(q, k, v, p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, out=out, backend="cuda_sm90")
    torch.cuda.synchronize()
    return check(name, out, packed_reference(q, k, v, p, lens_q, lens_k))


def main():
    if hopper_missing("small cases (sm90)"):
        return 0
    gen = torch.Generator().manual_seed(0)
    ok = True
    ok &= run("odd-77-bs64-d64-gqa", [77], [77], 4, 2, 64, 64, True, torch.bfloat16, gen)
    ok &= run("decode-bs128-d128", [1], [203], 2, 1, 128, 128, True, torch.float16, gen)
    ok &= run("chunk-bs64-d128", [70], [203], 2, 2, 128, 64, True, torch.bfloat16, gen)
    ok &= run("bidir-bs128-d64", [150], [270], 2, 2, 64, 128, False, torch.float16, gen)
    ok &= run("sq-gt-sk-bs64-d128", [300], [130], 2, 1, 128, 64, True, torch.float16, gen)
    ok &= run("varlen-bs64-d128", [1, 17, 0, 40, 190], [1, 30, 5, 40, 260], 4, 2, 128, 64, True, torch.bfloat16, gen)
    ok &= run("varlen-bs128-d64", [33, 7, 300], [20, 100, 300], 2, 1, 64, 128, True, torch.float16, gen)
    # 2 x 16 tiles x 32 heads = 1024 units: several per CTA (Q reuse, ring phases across units), taken from the
    # dynamic schedule's counter (>= 4 waves)
    ok &= run("persistent-bs64-d128", [2048, 2000], [2048, 2000], 32, 8, 128, 64, True, torch.bfloat16, gen,
              local=4, stride=8)
    print("small cases (sm90):", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

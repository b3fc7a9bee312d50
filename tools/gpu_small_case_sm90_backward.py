"""A few small calls of the Hopper (sm_90a) backward, forced with backend="cuda_sm90", for compute-sanitizer
(memcheck, racecheck, synccheck): head dims 128 and 64, odd lengths, block 64 and 128, bf16 and fp16, GQA,
bidirectional, Sq > Sk,
varlen with an empty sequence, deterministic mode, and more work units than CTAs (the persistent loop, the
K/V and stage ring phases, the dS double buffer). Checks dq, dk, dv against float64 autograd of the dense
reference; exits non-zero on a mismatch. Exits 0 with a note where there is no Hopper GPU or no Hopper path.

    compute-sanitizer --tool memcheck python3 tools/gpu_small_case_sm90_backward.py
"""
import os
import sys

import torch

import s2attn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_small_case import (  # noqa: E402
    DEV, check, hopper_missing, packed_inputs, packed_reference_grads, unless_not_built,
)


def run(name, lens_q, lens_k, H, Hkv, bs, causal, dtype, gen, deterministic=False, local=2, stride=3, D=128):
    return unless_not_built(name, run_case, name, lens_q, lens_k, H, Hkv, bs, causal, dtype, gen, deterministic,
                            local, stride, D)


def run_case(name, lens_q, lens_k, H, Hkv, bs, causal, dtype, gen, deterministic, local, stride, D):
    p = s2attn.local_stride(H, bs, local, stride, causal=causal, num_kv_heads=Hkv)
    q, k, v, cu_q, cu_k = packed_inputs(lens_q, lens_k, H, Hkv, D, dtype, gen)
    kw = dict(backend="cuda_sm90")
    if len(lens_q) > 1:
        kw.update(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    args = (q, k, v) if len(lens_q) > 1 else (q[None], k[None], v[None])
    out, lse = s2attn.attention(*args, p, return_lse=True, **kw)
    dout = torch.randn(out.shape, generator=gen).to(dtype).to(DEV)
    grads = [torch.full_like(x, float("nan")) for x in args]
    dq, dk, dv = s2attn.attention_backward(dout, *args, out, lse, p, deterministic=deterministic, dq=grads[0],
                                           dk=grads[1], dv=grads[2], **kw)
    torch.cuda.synchronize()
    if len(lens_q) == 1:
        dq, dk, dv, dout = dq[0], dk[0], dv[0], dout[0]
    ref = packed_reference_grads(q, k, v, dout, p, lens_q, lens_k)
    ok = True
    for n, x, r in zip(("dq", "dk", "dv"), (dq, dk, dv), ref):
        ok &= check(f"{name} {n}", x, r)
    return ok


def main():
    if hopper_missing("small cases (sm90 backward)"):
        return 0
    gen = torch.Generator().manual_seed(0)
    ok = True
    ok &= run("odd-77-bs64-gqa", [77], [77], 4, 2, 64, True, torch.bfloat16, gen)
    ok &= run("bs128-fp16", [203], [203], 2, 1, 128, True, torch.float16, gen)
    ok &= run("chunk-bs64", [70], [203], 2, 2, 64, True, torch.bfloat16, gen)
    ok &= run("bidir-bs128", [150], [270], 2, 2, 128, False, torch.float16, gen)
    ok &= run("sq-gt-sk-bs64", [300], [130], 2, 1, 64, True, torch.bfloat16, gen)
    ok &= run("varlen-bs64", [1, 17, 0, 40, 190], [1, 30, 5, 40, 260], 4, 2, 64, True, torch.bfloat16, gen)
    ok &= run("deterministic-bs64", [333], [333], 4, 2, 64, True, torch.bfloat16, gen, deterministic=True)
    # more units than CTAs on an H100 (132): 32 key tiles x 4 KV heads + 32 vertical ones (both passes)
    ok &= run("many-units-bs64", [4096], [4096], 4, 4, 64, True, torch.bfloat16, gen, local=4, stride=8)
    # head dim 64 (dQ always from the dQ kernel; 5 stages in the KV kernel's ring)
    ok &= run("d64-odd-bs64-gqa", [77], [77], 4, 2, 64, True, torch.bfloat16, gen, D=64)
    ok &= run("d64-bidir-bs128-fp16", [150], [270], 2, 2, 128, False, torch.float16, gen, D=64)
    ok &= run("d64-varlen-bs64", [1, 17, 0, 40, 190], [1, 30, 5, 40, 260], 4, 2, 64, True, torch.bfloat16, gen,
              D=64)
    ok &= run("d64-many-units-bs64", [4096], [4096], 4, 4, 64, True, torch.bfloat16, gen, local=4, stride=8, D=64)
    # the dQ kernel's ping-pong (S2ATTN_SM90_DQ_PINGPONG=1, opt-in while measured): turns on named barriers
    os.environ["S2ATTN_SM90_DQ_PINGPONG"] = "1"
    ok &= run("pingpong-varlen-bs64", [1, 17, 0, 40, 190], [1, 30, 5, 40, 260], 4, 2, 64, True, torch.bfloat16, gen)
    ok &= run("pingpong-sq-gt-sk-bs128-fp16", [300], [130], 2, 1, 128, True, torch.float16, gen)
    ok &= run("pingpong-d64-many-units", [4096], [4096], 4, 4, 64, True, torch.bfloat16, gen, local=4, stride=8,
              D=64)
    del os.environ["S2ATTN_SM90_DQ_PINGPONG"]
    print("small cases (sm90 backward):", "all ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

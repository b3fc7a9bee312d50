"""A few small paged-KV CUDA calls for compute-sanitizer (memcheck, racecheck): decode with GQA and a
1-token context, page sizes that are not the block size, split-KV with the combine kernel, varlen with an
empty sequence, query rows of one CTA straddling query blocks, head-paged with unmapped (-1) pages, chunked
prefill, combine_partitions. Checks against a float64 reference; exits non-zero on a mismatch.

    compute-sanitizer --tool memcheck python3 tools/gpu_small_case_paged.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import s2attn  # noqa: E402
from paged_torch import make_cache, reference, rel_err  # noqa: E402

DEV = torch.device("cuda")


def run(name, gen, ctx, qlens, ps, H, Hkv, D, bs, dtype, splits, **kw):
    p = s2attn.local_stride(H, block_size=bs, local_blocks=2, vert_stride=3, num_kv_heads=Hkv)
    c = make_cache(gen, p, ctx, qlens, ps, D, dtype, DEV, **kw)
    out, lse = s2attn.paged_attention(c["q"], c["k_pages"], c["v_pages"], c["block_table"], c["context_lens"], p,
                                      cu_seqlens_q=c["cu_seqlens_q"], return_lse=True, num_splits=splits)
    torch.cuda.synchronize()
    ro, rl = reference(c, p)
    eo, el = rel_err(out, ro), rel_err(lse, rl)
    ok = not torch.isnan(out).any() and eo <= 1e-2 and el <= 1e-3
    print(f"{name}: out {eo:.2e} lse {el:.2e} {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    gen = torch.Generator().manual_seed(0)
    bf, fp = torch.bfloat16, torch.float16
    ok = True
    ok &= run("decode-g4-d128", gen, [1, 150, 333], 1, 16, 8, 2, 128, 64, bf, 1)
    ok &= run("decode-split3-page24", gen, [400, 17], 1, 24, 4, 2, 64, 16, fp, 3)
    ok &= run("spec-q3-page64-bs16", gen, [200, 90], 3, 64, 4, 1, 128, 16, bf, 2)
    ok &= run("varlen-empty", gen, [60, 50, 70], [4, 0, 9], 32, 4, 2, 64, 32, bf, 2, varlen=True)
    # one CTA's rows straddle query blocks (93..96 over 5|6, 30..33 over 1|2; varlen-empty's 61..64 too)
    ok &= run("straddle-q4-bs16", gen, [97, 34], 4, 16, 4, 2, 128, 16, bf, 1)
    ok &= run("straddle-q4-split3", gen, [97, 34], 4, 16, 4, 2, 128, 16, fp, 3)
    ok &= run("head-paged-unmapped", gen, [300, 45], 1, 16, 4, 2, 128, 16, bf, 2, head_paged=True,
              drop_unneeded=True)
    ok &= run("chunk-40", gen, [260], 40, 16, 4, 2, 64, 16, fp, 1)
    ok &= run("chunk-70-rows128-split2", gen, [300, 90], 70, 16, 4, 2, 128, 64, bf, 2)  # 140 packed rows: 8 warps
    if torch.cuda.get_device_capability() >= (9, 0):  # the decode kernel's TMA path (opt-in), same cases
        os.environ["S2ATTN_PAGED_TMA"] = "1"
        ok &= run("tma-decode-g4-d128", gen, [1, 150, 333], 1, 16, 8, 2, 128, 64, bf, 1)
        ok &= run("tma-decode-split3-d64-page32", gen, [400, 17], 1, 32, 4, 2, 64, 16, fp, 3)
        ok &= run("tma-head-paged-unmapped", gen, [300, 45], 1, 16, 4, 2, 128, 16, bf, 2, head_paged=True,
                  drop_unneeded=True)
        del os.environ["S2ATTN_PAGED_TMA"]
    if torch.cuda.get_device_capability() == (9, 0) and s2attn.backend_available("cuda_sm90"):
        # chunked prefill through the Hopper forward over the pages (the default there): partial last boxes,
        # varlen; and the packed kernel on the same shape (S2ATTN_PAGED_PREFILL_SM90=0)
        ok &= run("sm90-prefill-page64", gen, [300, 150], 70, 64, 4, 2, 128, 64, bf, 1)
        ok &= run("sm90-prefill-varlen-bs128", gen, [400, 200], [130, 70], 128, 4, 1, 64, 128, fp, 1, varlen=True)
        os.environ["S2ATTN_PAGED_PREFILL_SM90"] = "0"
        ok &= run("packed-prefill-page64", gen, [300, 150], 70, 64, 4, 2, 128, 64, bf, 1)
        del os.environ["S2ATTN_PAGED_PREFILL_SM90"]
    outs = [torch.randn(2, 3, 4, 64, generator=gen).to(bf).to(DEV) for _ in range(3)]
    lses = [torch.randn(2, 4, 3, generator=gen).to(DEV) for _ in range(3)]
    lses[0][0, 0, 0] = -float("inf")
    o, l = s2attn.combine_partitions(outs, lses)
    oc, lc = s2attn.combine_partitions([x.cpu() for x in outs], [x.cpu() for x in lses])
    torch.cuda.synchronize()
    e = rel_err(o, oc.double())
    print(f"combine: {e:.2e}")
    ok &= e <= 1e-2 and rel_err(l, lc.double()) <= 1e-6
    print("paged small cases:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

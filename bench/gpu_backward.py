"""GPU forward+backward benchmark: s2attn against its peers in the same process (DESIGN.md section 4).

Peers (dense causal): PyTorch SDPA with the flash backend (FlashAttention-2 code) and the cuDNN backend; and
FlexAttention (torch.compile) with the same S2 block pattern as a BlockMask (built as in gpu_forward.py, whose
helpers and shape constants this script imports). Shapes: B=1, H=32, D=128, bf16, causal, block 64, L=16,
V in {8, 16, 32}, S in {8192, 32768} (--long adds 131072); --gqa adds DESIGN's GQA shape (H 32 : Hkv 8,
D=64, block 128). Timing: triton.testing.do_bench, median, after 500 ms of untimed calls (gpu_forward.heat).

    python3 bench/gpu_backward.py --out results.json [--long] [--gqa | --gqa-only] [--no-flex] [--seqlens ..]
                                  [--strides ..]

Rows: fwd+bwd (the forward returning lse, then the backward; the peers through autograd) and, for s2attn,
fwd+bwd on [B, S, H, D] storage as well as on the peers' [B, H, S, D] one (the note says which), bwd alone and
the deterministic mode (on sm_90 at D = 128: fused dQ by default, the ordered kernels in
deterministic mode, so the two rows compare them). The
dense causal pattern runs through s2attn too (V = 0, rows *_dense), beside cuDNN. Dense-equivalent TFLOP/s counts the causal dense FLOPs, 4 * B * H *
S^2 * D / 2 for the forward, x 3.5 for fwd+bwd (DESIGN.md section 4) and x 2.5 for bwd alone; effective
TFLOP/s = dense-equivalent x block density (visible blocks / causal block triangle; 1 for dense peers).
"paired": in alternating rounds (gpu_forward.paired), s2attn's dense fwd+bwd time against cuDNN's, and the
portable path's fwd+bwd against FlexAttention's at each S2 shape where Flex runs, and the automatic backend's
fwd+bwd on bhsd against bshd storage at each S2 shape (each storage's median over the rounds, as effective
TFLOP/s: the single rows of the two run a minute apart, after different rows).
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_clock  # noqa: E402
import gpu_forward as fwd  # noqa: E402  (shape constants, do_bench, driver_version, flex_block_mask)

import s2attn  # noqa: E402

FACTOR = {"fwd+bwd": 3.5, "bwd": 2.5}


def dense_tflops(B, H, S, D, ms, mode):
    return FACTOR[mode] * 4.0 * B * H * S * S * D / 2.0 / (ms * 1e-3) / 1e12


def s2attn_steps(qs, ks, vs, gs, pattern, configs=((False, "auto"),)):
    """s2attn's timed calls on one shape: (grads, bwd, step). step(det, backend) is the forward returning the
    LSE, then the backward (the fwd+bwd rows); bwd(det, backend) the backward alone. Outputs, gradients and a
    workspace per (deterministic, backend) in `configs` are allocated here, once, so that the calls allocate
    nothing; grads holds the latest call's gradients."""
    out, lse = s2attn.attention(qs, ks, vs, pattern, return_lse=True)
    grads = s2attn.attention_backward(gs, qs, ks, vs, out, lse, pattern)
    ws = {}  # workspace per (deterministic, backend), sized by the library
    for det, backend in configs:
        n = s2attn.backward_workspace_size(qs, ks, vs, pattern, deterministic=det, backend=backend)
        ws[det, backend] = torch.empty(n, dtype=torch.uint8, device=qs.device)

    def bwd(det=False, backend="auto"):
        s2attn.attention_backward(gs, qs, ks, vs, out, lse, pattern, deterministic=det, dq=grads[0],
                                  dk=grads[1], dv=grads[2], workspace=ws[det, backend], backend=backend)

    def step(det=False, backend="auto"):
        s2attn.attention(qs, ks, vs, pattern, out=out, lse=lse, return_lse=True, backend=backend)
        bwd(det, backend)
    return grads, bwd, step


def storage_pair(S, V, bhsd_step, bshd_step, effective):
    """The same fwd+bwd step on bhsd and on bshd storage in alternating rounds (gpu_forward.paired). The two
    rows above run a minute apart, after different rows: at 128k V32 they differed by 10% in three runs
    (session 30) while the kernels take the same cycles under Nsight Compute and the same time in a fresh
    process (bench/results/layout_128k_v32_h100_2026-12-08_s30.txt). Each storage's median over the rounds,
    as effective TFLOP/s (`effective`: ms -> TFLOP/s), goes into the entry, its note (the summary's paired
    line) and the log."""
    entry = fwd.paired(f"fwd+bwd V={V} s2attn bhsd (ours) vs bshd storage (peer)", S, bhsd_step, bshd_step)
    for storage, key in (("bhsd", "ours"), ("bshd", "peer")):
        ms = statistics.median(t[key] for t in entry["rounds"])
        entry[f"{storage}_median_ms"] = ms
        entry[f"{storage}_effective_tflops"] = effective(ms)
    entry["note"] = (f"bhsd {entry['bhsd_median_ms']:.3f} ms ({entry['bhsd_effective_tflops']:.1f} effective "
                     f"TFLOP/s), bshd {entry['bshd_median_ms']:.3f} ms ({entry['bshd_effective_tflops']:.1f})")
    print(f"  storages, alternating rounds, S={S} V={V}: {entry['note']}", flush=True)
    return entry


def dkernel_row(cfg, S, V, q, k, v, dout, grads, density, add, errors):
    """fwd+bwd of the paper's Triton library (dkernel) on the same pattern, when importable (see
    gpu_forward.dkernel_row); it reads the [B, H, S, D] storage with seq_dim=2."""
    LocalStrideSparseAttention = fwd.import_dkernel(errors)
    if LocalStrideSparseAttention is None:
        return
    if cfg["Hkv"] != cfg["H"]:
        # measured on the H100 (2026-11-24, H 32 : Hkv 8, D 64, block 128): NaN gradients at 8k and an illegal
        # memory access at 32k, which leaves the CUDA context unusable for every later row: not run
        errors.append(f"dkernel S={S} V={V}: skipped with num_kv_heads != num_heads (its backward gave NaN "
                      f"gradients at 8k and an illegal memory access at 32k on the H100)")
        return
    try:
        kw = {"num_kv_heads": cfg["Hkv"]} if cfg["Hkv"] != cfg["H"] else {}
        attn = LocalStrideSparseAttention(cfg["H"], S, cfg["BS"], cfg["L"], V, seq_dim=2, **kw)

        def step():
            o = attn(q, k, v)
            return torch.autograd.grad(o, (q, k, v), dout)

        dg = step()
        torch.cuda.synchronize()
        err = max(fwd.rel_err(a.transpose(1, 2), b) for a, b in zip(grads, dg))
        add("dkernel", V, "fwd+bwd", fwd.do_bench(step), density, f"s2attn vs dkernel grad rel err {err:.1e}")
    except Exception as e:  # noqa: BLE001 - a peer failing is reported, not fatal
        errors.append(f"dkernel S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
        print(f"  dkernel V={V}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True)


def bench_shape(cfg, S, strides, rows, errors, flex_on, pairs=None):
    B, H, Hkv, D, BS, L = cfg["B"], cfg["H"], cfg["Hkv"], cfg["D"], cfg["BS"], cfg["L"]
    torch.manual_seed(0)
    dev = torch.device("cuda")
    # [B, H, S, D] storage (SDPA / Flex layout); s2attn reads it as a [B, S, H, D] view
    q = torch.randn(B, H, S, D, device=dev, dtype=fwd.DTYPE, requires_grad=True)
    k = torch.randn(B, Hkv, S, D, device=dev, dtype=fwd.DTYPE, requires_grad=True)
    v = torch.randn(B, Hkv, S, D, device=dev, dtype=fwd.DTYPE, requires_grad=True)
    dout = torch.randn(B, H, S, D, device=dev, dtype=fwd.DTYPE)
    ref_ms = None

    def add(name, V, mode, ms, density, note=""):
        nonlocal ref_ms
        dense_eq = dense_tflops(B, H, S, D, ms, mode)
        row = dict(impl=name, mode=mode, S=S, V=V, B=B, H=H, Hkv=Hkv, D=D, block=BS, ms=ms,
                   dense_equiv_tflops=dense_eq, density=density, effective_tflops=dense_eq * density, note=note,
                   gpu_clock=fwd.do_bench.last_clock)
        if name == "sdpa_flash" and mode == "fwd+bwd":
            ref_ms = ms
        row["speedup_vs_sdpa_flash"] = (ref_ms / ms) if (ref_ms and mode == "fwd+bwd") else None
        rows.append(row)
        print(f"  {name:<22} {mode:<8} S={S:<6} V={V if V else '-':<3} {ms:9.3f} ms  dense-eq {dense_eq:7.1f}  "
              f"effective {dense_eq * density:7.1f} TFLOP/s  density {density:.3f} "
              f"{gpu_clock.label(fwd.do_bench.last_clock)}{note}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    gqa = {"enable_gqa": True} if Hkv != H else {}

    def sdpa_step():  # under the caller's sdpa_kernel backend
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        return torch.autograd.grad(o, (q, k, v), dout)

    for name, backend in (("sdpa_flash", "FLASH_ATTENTION"), ("sdpa_cudnn", "CUDNN_ATTENTION")):
        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                sdpa_step()
                add(name, 0, "fwd+bwd", fwd.do_bench(sdpa_step), 1.0)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            errors.append(f"{name} S={S}: {type(e).__name__}: {e}")
            print(f"  {name}: skipped ({type(e).__name__}: {e})", flush=True)

    flex = flex_tuned = None
    if flex_on:
        try:
            from torch.nn.attention.flex_attention import flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
            if flex_on == "autotune":
                # Inductor's autotuned configs include tiles that divide 64-token sparse blocks, which its
                # default backward configs (filtered before kernel_options apply: pytorch #176025) may not
                flex_tuned = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"flex import/compile S={S}: {e}")

    qs, ks, vs, gs = (x.detach().transpose(1, 2) for x in (q, k, v, dout))  # [B, S, H, D] views
    # the same tensors in [B, S, H, D] storage (Megatron's sbhd at B = 1; the forward bench's bshd rows): the
    # layout a training stack hands s2attn, timed beside the bhsd rows (the "bshd storage" fwd+bwd rows)
    qb, kb, vb, gb = (x.contiguous() for x in (qs, ks, vs, gs))
    # V = 0: the dense causal pattern through s2attn (rows "*_dense"), against cuDNN above (issue 6: the dense
    # case at >= 1.0x cuDNN's fwd+bwd time); then the S2 patterns
    for V in [0] + list(strides):
        dense = V == 0
        pattern = (s2attn.dense(H, BS, causal=True, num_kv_heads=Hkv) if dense
                   else s2attn.local_stride(H, BS, L, V, causal=True, num_kv_heads=Hkv))
        density = 1.0 if dense else float(pattern.density(S))
        sfx = "_dense" if dense else ""
        # the portable path runs the S2 patterns only (below)
        configs = ((False, "auto"), (True, "auto")) + (() if dense else ((False, "cuda_sm80"),))
        grads, s2_bwd, s2_step = s2attn_steps(qs, ks, vs, gs, pattern, configs)

        # "s2attn": the automatic backend (the Hopper kernels on an H100 where they have a variant);
        # "s2attn_sm80": the portable path forced, on the same tensors
        add("s2attn" + sfx, V, "fwd+bwd", fwd.do_bench(s2_step), density, "bhsd storage, automatic backend")
        add("s2attn" + sfx, V, "bwd", fwd.do_bench(s2_bwd), density, "bhsd storage, automatic backend")
        add("s2attn_deterministic" + sfx, V, "fwd+bwd", fwd.do_bench(lambda: s2_step(True)), density,
            "bhsd storage, automatic backend")
        s2_step()  # bhsd's default-mode gradients again (the deterministic row left its own), to compare with
        grads_b, bwd_b, step_b = s2attn_steps(qb, kb, vb, gb, pattern)
        err_b = max(fwd.rel_err(a, b) for a, b in zip(grads_b, grads))
        add("s2attn" + sfx, V, "fwd+bwd", fwd.do_bench(step_b), density,
            f"bshd storage, automatic backend; grad rel err vs bhsd {err_b:.1e}")
        if pairs is not None and not dense:
            pairs.append(storage_pair(S, V, s2_step, step_b,
                                      lambda ms: dense_tflops(B, H, S, D, ms, "fwd+bwd") * density))
        del grads_b, bwd_b, step_b  # (the closures hold its outputs, gradients and workspace)
        if dense:  # the peers' dense rows are above; the portable path and dkernel run the S2 patterns only
            if pairs is not None:  # issue 6's dense criterion against cuDNN, clock-paired (gpu_forward.paired)
                def cudnn_step():
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return sdpa_step()
                try:
                    cudnn_step()
                    pairs.append(fwd.paired("fwd+bwd dense s2attn (automatic, bhsd) vs sdpa_cudnn", S, s2_step,
                                            cudnn_step))
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    errors.append(f"paired dense S={S}: {type(e).__name__}: {e}")
            continue
        s2_step()  # the default path's gradients again (the deterministic row left its own), for the rows below
        if torch.cuda.get_device_capability() == (9, 0):
            auto_grads = [g.clone() for g in grads]
            s2_step(False, "cuda_sm80")
            sm80_err = max(fwd.rel_err(a, b) for a, b in zip(grads, auto_grads))
            add("s2attn_sm80", V, "fwd+bwd", fwd.do_bench(lambda: s2_step(False, "cuda_sm80")), density,
                f"bhsd storage, portable path forced; grad rel err vs automatic {sm80_err:.1e}")
            add("s2attn_sm80", V, "bwd", fwd.do_bench(lambda: s2_bwd(False, "cuda_sm80")), density,
                "bhsd storage, portable path forced")
            s2_step()  # the automatic backend's gradients again, for the peers' error columns
        if flex is not None:
            try:
                t0 = time.time()
                bmask = fwd.flex_block_mask(pattern, S, dev)
                kw = {"enable_gqa": True} if Hkv != H else {}
                # Flex's default backward tiles (128 wide) do not divide 64-token sparse blocks: tiles of the
                # block size first, then smaller ones; the options that compile are noted in the row.
                candidates = [{"BLOCK_M": BS, "BLOCK_N": BS, "BLOCK_M1": BS, "BLOCK_N1": BS, "BLOCK_M2": BS,
                               "BLOCK_N2": BS},
                              {"BLOCK_M": BS, "BLOCK_N": BS, "BLOCK_M1": 32, "BLOCK_N1": BS, "BLOCK_M2": BS,
                               "BLOCK_N2": 32}, None]
                fg, last, mask_kind = None, None, f"{BS}-token blocks"
                # then (--flex-autotune) the autotuned compile on the same blocks; last, Flex's own 128-token
                # blocks (mask_mod keeps the 64-block pattern, but Flex then skips only whole 128-token blocks:
                # more visited work than the pattern's, which flatters s2attn at vertical strides)
                for opts in candidates + (["autotune"] if flex_tuned is not None else []) + ["coarse"]:
                    fn = flex
                    if opts == "autotune":
                        fn, opts, mask_kind = flex_tuned, None, f"{BS}-token blocks, max-autotune"
                    if opts == "coarse":
                        fn, opts = flex, None
                        bmask, mask_kind = fwd.flex_block_mask(pattern, S, dev, 128), "128-token blocks"
                    def flex_step(opts=opts, fn=fn):
                        o = fn(q, k, v, block_mask=bmask, kernel_options=opts, **kw)
                        return torch.autograd.grad(o, (q, k, v), dout)

                    try:
                        fg = flex_step()
                        break
                    except Exception as e:  # noqa: BLE001 - try the next tiles
                        last = f"{type(e).__name__}: {str(e)[:200]}"
                        errors.append(f"flex S={S} V={V} kernel_options={opts}: {last}")
                if fg is None:
                    raise RuntimeError(f"no flex kernel options compiled ({last})")
                torch.cuda.synchronize()
                compile_s = time.time() - t0
                err = max(fwd.rel_err(a.transpose(1, 2), b) for a, b in zip(grads, fg))
                add("flex", V, "fwd+bwd", fwd.do_bench(flex_step), density,
                    f"compile {compile_s:.0f}s, BlockMask of {mask_kind}, kernel_options {opts}, "
                    f"s2attn vs flex grad rel err {err:.1e}")
                rows[-1]["s2attn_vs_flex_grad_rel_err"] = err
                if pairs is not None:  # issue 4's 1.3x Flex: the portable path against Flex, clock-paired
                    portable = "cuda_sm80" if torch.cuda.get_device_capability() == (9, 0) else "auto"
                    try:
                        pairs.append(fwd.paired(f"fwd+bwd V={V} s2attn {portable} vs flex ({mask_kind})", S,
                                                lambda: s2_step(False, portable), flex_step))
                    except Exception as e:  # noqa: BLE001 - reported, not fatal (the flex row stands)
                        errors.append(f"paired flex S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
                    s2_step()  # the automatic backend's gradients again, for dkernel's error column
            except Exception as e:  # noqa: BLE001
                errors.append(f"flex S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
                print(f"  flex V={V}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True)
        dkernel_row(cfg, S, V, q, k, v, dout, grads, density, add, errors)
    del q, k, v, dout, qb, kb, vb, gb
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_backward.json")
    ap.add_argument("--long", action="store_true", help="add S = 131072")
    ap.add_argument("--gqa", action="store_true", help="add H 32 : Hkv 8, D 64, block 128")
    ap.add_argument("--gqa-only", action="store_true", help="only the --gqa shape")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile takes a while)")
    ap.add_argument("--flex-autotune", action="store_true",
                    help="where Flex's backward does not compile on the pattern's blocks, try its max-autotune "
                         "compile before falling back to 128-token blocks (slow to compile)")
    ap.add_argument("--seqlens", default="8192,32768")
    ap.add_argument("--strides", default="8,16,32")
    args = ap.parse_args()
    seqlens = [int(s) for s in args.seqlens.split(",")] + ([131072] if args.long else [])
    strides = [int(s) for s in args.strides.split(",")]
    base = fwd.BS
    configs = [] if args.gqa_only else [dict(B=fwd.B, H=fwd.H, Hkv=fwd.H, D=fwd.D, BS=base, L=fwd.L)]
    if args.gqa or args.gqa_only:
        configs.append(dict(B=fwd.B, H=32, Hkv=8, D=64, BS=128, L=fwd.L * base // 128))
    import triton

    meta = dict(gpu=torch.cuda.get_device_name(), driver=fwd.driver_version(), cuda=torch.version.cuda,
                torch=torch.__version__, triton=triton.__version__, s2attn=s2attn.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([sys.executable] + sys.argv), dtype="bf16", causal=True, configs=configs,
                flops="dense causal 4*B*H*S^2*D/2 per forward; fwd+bwd x3.5, bwd x2.5; effective = x density",
                timing=fwd.timing_note())
    print(json.dumps(meta, indent=1), flush=True)
    rows, errors, pairs = [], [], []
    for cfg in configs:
        for S in seqlens:
            print(f"S = {S}  {cfg}", flush=True)
            try:
                bench_shape(cfg, S, strides, rows, errors,
                            False if args.no_flex else "autotune" if args.flex_autotune else True, pairs)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory at 128k: report, go on
                errors.append(f"S={S} {cfg}: {type(e).__name__}: {e}")
                print(f"  failed: {type(e).__name__}: {e}", flush=True)
                torch.cuda.empty_cache()
            fwd.write_report(args.out, meta, rows, errors, pairs)  # after each shape: a cut run keeps its rows
    return 0


if __name__ == "__main__":
    sys.exit(main())

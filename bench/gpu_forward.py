"""GPU forward benchmark: s2attn against its peers in the same process (DESIGN.md section 4).

Rows: the paper's Triton library (dkernel) when importable (see dkernel_row); s2attn's portable path (backend="cuda_sm80", impl s2attn_sm80) and, on an H100/H200, its Hopper path
(backend="cuda_sm90", impl s2attn_sm90), each on the S2 pattern and on the dense causal pattern (all heads
dense: impl *_dense, compared with cuDNN); peers: PyTorch SDPA with the flash backend (FlashAttention-2 code)
and the cuDNN backend (dense causal), and FlexAttention (torch.compile) with the same S2 block pattern as a
BlockMask built at the block level.
Shapes: B=1, H=32, D=128, bf16, causal, block 64, L=16, V in {8, 16, 32}, S in {8192, 32768}
(--long adds 131072). Timing: triton.testing.do_bench, median, after 500 ms of untimed calls (heat).

    python3 bench/gpu_forward.py --out results.json [--long] [--seqlens 8192,32768] [--strides 8,16,32]
                                 [--no-flex] [--flex-autotune] [--no-sm80]

Reported per row: ms, dense-equivalent TFLOP/s = 4 * B * H * S^2 * D / 2 / t (causal), effective TFLOP/s
= dense-equivalent x block density (density = visible blocks / causal block triangle; 1 for the dense
peers), and the speedup over the SDPA flash backend. Beside the rows, "paired": the Hopper path's dense time
against cuDNN's, measured in alternating rounds (paired(); S2_BENCH_PAIRED_ROUNDS, default 4), since under
the 700 W cap the clock differs by several percent between rows run at different times.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import s2attn
import gpu_clock  # bench/: the script's directory

B, H, D, BS, L = 1, 32, 128, 64, 16
DTYPE = torch.bfloat16


# Untimed calls before each row, so that every row runs at the clock of sustained load (S2_BENCH_HEAT_MS).
# do_bench times only ~200 ms, and the first row after a pause (inputs, reference checks) ran at a higher
# clock than the rows after it: session 21, two rows of the same code 47.2 and 53.7 ms (128k V32), the first
# at 1725 MHz / 293 W, the later at 1455 MHz / 694 W (gpu_backward_2026-12-07_s21_fused_grouped.json).
HEAT_MS = 500.0


def heat_ms():
    return float(os.environ.get("S2_BENCH_HEAT_MS", HEAT_MS))


def heat(fn):
    """Calls fn until heat_ms() of GPU time have passed, at least once."""
    budget = heat_ms()
    start = time.perf_counter()
    while True:
        fn()
        torch.cuda.synchronize()
        if (time.perf_counter() - start) * 1e3 >= budget:
            return


def do_bench(fn):
    """Median ms of fn (triton do_bench) after heat(fn); the SM clock and power it ran at are left in
    do_bench.last_clock."""
    from triton.testing import do_bench as tb

    heat(fn)
    with gpu_clock.ClockMonitor() as clock:
        try:
            ms = float(tb(fn, warmup=25, rep=200, return_mode="median"))
        except TypeError:  # older triton: no return_mode
            ms = float(tb(fn, warmup=25, rep=200, quantiles=[0.5])[0])
    do_bench.last_clock = clock.summary()
    return ms


do_bench.last_clock = {}


PAIRED_ROUNDS = 4


def paired_rounds():
    return max(1, int(os.environ.get("S2_BENCH_PAIRED_ROUNDS", PAIRED_ROUNDS)))


def paired(what, S, ours, peer):
    """Our time against a peer's in alternating rounds (ours first, then the peer first, ...), each a do_bench
    (heated): under the power cap the clock moves by several percent from row to row, and alternation gives
    both the same clocks. Returns the rounds' medians and the median of peer / ours per round (>= 1: ours
    takes no more time). The issues' dense criteria (s2attn's dense time against cuDNN's) read this."""
    rounds = []
    for r in range(paired_rounds()):
        t = {}
        for key, fn in ((("ours", ours), ("peer", peer)) if r % 2 == 0 else (("peer", peer), ("ours", ours))):
            t[key] = do_bench(fn)
            t[key + "_clock"] = do_bench.last_clock
        rounds.append(t)
    ratios = sorted(t["peer"] / t["ours"] for t in rounds)
    median = statistics.median(ratios)
    entry = dict(what=what, S=S, rounds=rounds, peer_over_ours_median=median,
                 peer_over_ours_range=[ratios[0], ratios[-1]])
    ours_ms = ", ".join(f"{t['ours']:.3f}" for t in rounds)
    print(f"  paired {what} S={S}: peer / ours time {median:.3f} (rounds {ratios[0]:.3f}-{ratios[-1]:.3f}; "
          f"ours {ours_ms} ms)", flush=True)
    return entry


def timing_note():
    return f"triton.testing.do_bench median (warmup 25 ms, rep 200 ms) after {heat_ms():.0f} ms of untimed calls"


def driver_version():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({e})"


def dense_tflops(S, ms):
    return 4.0 * B * H * S * S * D / 2.0 / (ms * 1e-3) / 1e12


def rel_err(x, ref):
    x, ref = x.float(), ref.float()
    return ((x - ref).norm() / ref.norm()).item()


def flex_block_mask(pattern, S, device, flex_bs=None):
    """The pattern as a FlexAttention BlockMask, built at the block level (no S x S evaluation), of flex_bs-
    token blocks (default: the pattern's own block size; a multiple of it, e.g. 128, for Flex's backward
    tiles). A Flex block is full when all its pattern blocks are visible and it is below the diagonal,
    partial when some are (mask_mod applies the pattern and the causal cut)."""
    from torch.nn.attention.flex_attention import BlockMask

    bs = pattern.block_size
    flex_bs = flex_bs or bs
    nb, f = S // bs, flex_bs // bs
    bm = torch.from_numpy(pattern.to_block_mask(nb, nb).copy()).to(device=device, dtype=torch.bool)  # [H, nb, nb]
    H, nc = bm.shape[0], nb // f
    fine = bm.view(H, nc, f, nc, f)
    any_, all_ = fine.any(dim=(2, 4)), fine.all(dim=(2, 4))
    diag = torch.eye(nc, dtype=torch.bool, device=device)[None]
    full = all_ & ~diag
    partial = any_ & ~full

    def indices(m):
        num = m.sum(-1, dtype=torch.int32)
        idx = torch.sort(m.to(torch.int8), dim=-1, descending=True, stable=True).indices.to(torch.int32)
        return num[None].contiguous(), idx[None].contiguous()  # [1, H, nc], [1, H, nc, nc]

    def mask_mod(b, h, q_idx, kv_idx):
        return bm[h, q_idx // bs, kv_idx // bs] & (q_idx >= kv_idx)

    kv_num, kv_idx = indices(partial)
    full_num, full_idx = indices(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=flex_bs, mask_mod=mask_mod,
                                    seq_lengths=(S, S))


def bench_seqlen(S, strides, rows, errors, flex_on=True, sm80_on=True, pairs=None):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    # one storage for everyone: [B, H, S, D] (SDPA / Flex layout); s2attn reads it as a [B, S, H, D] view
    q = torch.randn(B, H, S, D, device=dev, dtype=DTYPE)
    k = torch.randn(B, H, S, D, device=dev, dtype=DTYPE)
    v = torch.randn(B, H, S, D, device=dev, dtype=DTYPE)
    qs, ks, vs = (x.transpose(1, 2) for x in (q, k, v))
    qc, kc, vc = (x.contiguous() for x in (qs, ks, vs))  # bshd-contiguous copies
    ref_ms = None

    def add(name, V, ms, density, note=""):
        nonlocal ref_ms
        dense_eq = dense_tflops(S, ms)
        row = dict(impl=name, S=S, V=V, ms=ms, dense_equiv_tflops=dense_eq, density=density,
                   effective_tflops=dense_eq * density, note=note, gpu_clock=do_bench.last_clock)
        if name == "sdpa_flash":
            ref_ms = ms
        row["speedup_vs_sdpa_flash"] = (ref_ms / ms) if ref_ms else None
        rows.append(row)
        print(f"  {name:<18} S={S:<6} V={V if V else '-':<3} {ms:9.3f} ms  dense-eq {dense_eq:7.1f}  "
              f"effective {dense_eq * density:7.1f} TFLOP/s  density {density:.3f} "
              f"{gpu_clock.label(do_bench.last_clock)}{note}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa():  # under the caller's sdpa_kernel backend
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", "CUDNN_ATTENTION")):
        try:
            be = backend if not isinstance(backend, str) else getattr(SDPBackend, backend)
            with sdpa_kernel(be):
                sdpa()
                add(name, 0, do_bench(sdpa), 1.0)
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            errors.append(f"{name} S={S}: {type(e).__name__}: {e}")
            print(f"  {name}: skipped ({type(e).__name__}: {e})", flush=True)

    sm90 = s2attn.backend_available("cuda_sm90")
    backends = ([("s2attn_sm80", "cuda_sm80")] if sm80_on else []) + ([("s2attn_sm90", "cuda_sm90")] if sm90 else [])

    def s2_rows(name, backend, V, pattern, density, ref=None):
        """One row per storage (bshd contiguous, bhsd = the peers' storage); err vs `ref` in the note."""
        try:
            out_c = s2attn.attention(qc, kc, vc, pattern, backend=backend)
            note = ""
            if ref is not None:
                note = f", rel err vs {ref[0]} {rel_err(out_c, ref[1]):.1e}"
            add(name, V, do_bench(lambda: s2attn.attention(qc, kc, vc, pattern, out=out_c, backend=backend)),
                density, "bshd storage" + note)
            out = s2attn.attention(qs, ks, vs, pattern, backend=backend)
            add(name, V, do_bench(lambda: s2attn.attention(qs, ks, vs, pattern, out=out, backend=backend)),
                density, "bhsd storage")
            return out
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            errors.append(f"{name} S={S} V={V}: {type(e).__name__}: {e}")
            print(f"  {name} V={V}: failed ({type(e).__name__}: {e})", flush=True)
            return None

    # dense causal through s2attn (every head dense), against cuDNN / FA2 above
    dense_pattern = s2attn.dense(H, BS, causal=True)
    sdpa_ref = F.scaled_dot_product_attention(q[:, :4], k[:, :4], v[:, :4], is_causal=True).transpose(1, 2)
    for name, backend in backends:
        out = s2_rows(name + "_dense", backend, 0, dense_pattern, 1.0)
        if out is not None:
            rows[-1]["note"] += f", rel err vs sdpa (4 heads) {rel_err(out[:, :, :4], sdpa_ref):.1e}"
            if name == "s2attn_sm90" and pairs is not None:  # issue 5's dense criterion, clock-paired
                def cudnn():
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return sdpa()
                try:
                    cudnn()
                    pairs.append(paired("forward dense s2attn_sm90 (bhsd) vs sdpa_cudnn", S,
                                        lambda: s2attn.attention(qs, ks, vs, dense_pattern, out=out, backend=backend),
                                        cudnn))
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    errors.append(f"paired dense S={S}: {type(e).__name__}: {e}")

    flex = flex_tuned = None
    try:
        if flex_on:
            from torch.nn.attention.flex_attention import flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
            if flex_on == "autotune":  # Flex at its best too: Inductor's autotuned kernels on the same blocks
                flex_tuned = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
    except Exception as e:  # noqa: BLE001
        errors.append(f"flex import/compile S={S}: {e}")

    for V in strides:
        pattern = s2attn.local_stride(H, BS, L, V, causal=True)
        density = float(pattern.density(S))
        out, ref = None, None
        for name, backend in backends:
            o = s2_rows(name, backend, V, pattern, density, ref)
            if o is not None and out is None:
                out = o
                ref = (name, o.contiguous())
        if out is None:
            continue

        def flex_row(name, first, run, note=""):
            """A FlexAttention row: `first()` compiles (timed) and returns the output, `run` is timed."""
            try:
                t0 = time.time()
                fo = first()
                torch.cuda.synchronize()
                compile_s = time.time() - t0
                err = rel_err(out.transpose(1, 2), fo)
                add(name, V, do_bench(run), density,
                    f"compile {compile_s:.0f}s{note}, s2attn vs flex rel err {err:.1e}")
                rows[-1]["s2attn_vs_flex_rel_err"] = err
            except Exception as e:  # noqa: BLE001
                errors.append(f"{name} S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
                print(f"  {name} V={V}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True)

        bmask = None
        if flex is not None or flex_tuned is not None:
            try:
                bmask = flex_block_mask(pattern, S, dev)
            except Exception as e:  # noqa: BLE001 - reported, not fatal (no Flex rows then)
                errors.append(f"flex block mask S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
        if flex is not None and bmask is not None:
            opts = {"BLOCK_M": 64, "BLOCK_N": 64}  # the sparse blocks are 64 x 64

            def flex_first():
                nonlocal opts
                try:
                    fo = flex(q, k, v, block_mask=bmask, kernel_options=opts)
                    torch.cuda.synchronize()
                    return fo
                except Exception as e:  # noqa: BLE001 - retry with Flex's own tile choice
                    errors.append(f"flex S={S} V={V} with {opts}: {type(e).__name__}: {e}; retried without")
                    opts = None
                    return flex(q, k, v, block_mask=bmask)

            flex_row("flex", flex_first, lambda: flex(q, k, v, block_mask=bmask, kernel_options=opts))
        if flex_tuned is not None and bmask is not None:
            run_tuned = lambda: flex_tuned(q, k, v, block_mask=bmask)  # noqa: E731
            flex_row("flex_autotune", run_tuned, run_tuned, f", max-autotune, BlockMask of {BS}-token blocks")
        dkernel_row(S, V, qc, kc, vc, out, density, add, errors)
    del q, k, v, qc, kc, vc
    torch.cuda.empty_cache()


def import_dkernel(errors):
    """dkernel's LocalStrideSparseAttention, or None: silently where no checkout is on the path, with the reason
    in `errors` where one is but does not import (session 12's bench lost its dkernel rows to a silent
    PackageNotFoundError: the checkout had no package metadata)."""
    try:
        from dkernel import LocalStrideSparseAttention
        return LocalStrideSparseAttention
    except ImportError as e:
        if getattr(e, "name", None) != "dkernel":
            errors.append(f"dkernel: not importable: {type(e).__name__}: {str(e)[:300]}")
            print(f"  dkernel: not importable ({type(e).__name__}: {str(e)[:300]})", flush=True)
        return None


def dkernel_row(S, V, qc, kc, vc, ref, density, add, errors):
    """The paper's own Triton library (dkernel), same pattern and storage, when it is importable: not on PyPI,
    so a checkout of github.com/linxihui/dkernel is put on PYTHONPATH by hand (tools/gpu-check adds
    .deps/peers/dkernel when that folder exists). Skipped silently otherwise."""
    LocalStrideSparseAttention = import_dkernel(errors)
    if LocalStrideSparseAttention is None:
        return
    try:
        attn = LocalStrideSparseAttention(H, S, BS, L, V)  # dkernel's defaults: causal, seq_dim 1 (bshd)
        with torch.no_grad():
            o = attn(qc, kc, vc)
            torch.cuda.synchronize()
            err = rel_err(o, ref)
            add("dkernel", V, do_bench(lambda: attn(qc, kc, vc)), density, f"bshd storage, s2attn vs dkernel rel err "
                f"{err:.1e}")
    except Exception as e:  # noqa: BLE001 - a peer failing is reported, not fatal
        errors.append(f"dkernel S={S} V={V}: {type(e).__name__}: {str(e)[:300]}")
        print(f"  dkernel V={V}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_forward.json")
    ap.add_argument("--long", action="store_true", help="add S = 131072")
    ap.add_argument("--seqlens", default="8192,32768")
    ap.add_argument("--strides", default="8,16,32")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile takes minutes)")
    ap.add_argument("--flex-autotune", action="store_true",
                    help="also FlexAttention compiled with Inductor's max-autotune (rows flex_autotune; ~1 min "
                         "of compile a shape)")
    ap.add_argument("--no-sm80", action="store_true", help="skip the portable path's rows")
    args = ap.parse_args()
    seqlens = [int(s) for s in args.seqlens.split(",")] + ([131072] if args.long else [])
    strides = [int(s) for s in args.strides.split(",")]
    import triton

    meta = dict(gpu=torch.cuda.get_device_name(), driver=driver_version(), cuda=torch.version.cuda,
                torch=torch.__version__, triton=triton.__version__, s2attn=s2attn.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([sys.executable] + sys.argv),
                shape=dict(B=B, H=H, D=D, dtype="bf16", causal=True, block=BS, local_blocks=L),
                timing=timing_note())
    print(json.dumps(meta, indent=1), flush=True)
    rows, errors, pairs = [], [], []
    for S in seqlens:
        print(f"S = {S}", flush=True)
        flex_on = False if args.no_flex else "autotune" if args.flex_autotune else True
        bench_seqlen(S, strides, rows, errors, flex_on=flex_on, sm80_on=not args.no_sm80, pairs=pairs)
    write_report(args.out, meta, rows, errors, pairs)
    return 0


def write_report(path, meta, rows, errors, pairs=()):
    """The result file (meta, rows, errors, paired comparisons) and the summary table (a mode column when rows
    carry one); shared with gpu_backward.py. tools/gpu-check shows the table from its 'impl' header on."""
    with open(path, "w") as f:
        json.dump(dict(meta=meta, results=rows, errors=errors, paired=list(pairs)), f, indent=1)
    with_mode = any("mode" in r for r in rows)
    w = 22 if with_mode else 18
    mode_head = f"{'mode':<9}" if with_mode else ""
    print(f"\n{'impl':<{w}}{mode_head}{'S':>{7 if with_mode else 8}}{'V':>4}{'ms':>10}{'dense-eq':>10}"
          f"{'effective':>10}{'vs FA2':>8}  note")
    for r in rows:
        sp = f"{r['speedup_vs_sdpa_flash']:.2f}x" if r["speedup_vs_sdpa_flash"] else "-"
        mode = f"{r['mode']:<9}" if with_mode else ""
        print(f"{r['impl']:<{w}}{mode}{r['S']:>{7 if with_mode else 8}}{r['V'] or '-':>4}{r['ms']:>10.3f}"
              f"{r['dense_equiv_tflops']:>10.1f}{r['effective_tflops']:>10.1f}{sp:>8}  {r['note']}")
    for pr in pairs:
        note = f"; {pr['note']}" if pr.get("note") else ""  # what the entry's maker adds (storage_pair)
        print(f"paired: {pr['what']} S={pr['S']}: peer / ours time {pr['peer_over_ours_median']:.3f} "
              f"[{pr['peer_over_ours_range'][0]:.3f}, {pr['peer_over_ours_range'][1]:.3f}]{note}")
    if errors:
        print("\nerrors:\n  " + "\n  ".join(errors))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    sys.exit(main())

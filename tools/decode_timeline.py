"""Where a short paged decode call's time goes, from %globaltimer stamps: the probe build of
tools/pending/probe-paged-timeline.patch (timing only, never to land) makes every decode CTA and every
split-combine CTA write its stamps past the split workspace; this script gives them a workspace that reaches
that far, replays the call from a CUDA graph between two stamp kernels (Triton, the same stream), and prints
per case, in microseconds from the first stamp kernel:

  entry      the decode CTAs' first instruction (first / median / last CTA)
  rows       rows, split range and Q issued (median CTA, from its entry), in four parts: setup (entry to
             the rows), context (the context length's load), search (the split range), Q (the Q copies issued)
  first      the first K/V tile landed (median CTA, from its entry)
  stream     the tile loop, first tile to past the last (median CTA), its iterations (tiles scored + 1),
             and, within it, the time thread 0 spent waiting at the tops of the iterations after the first
             (its cp.async / mbarrier wait and the barrier)
  epilogue   past the last tile to outputs stored (median CTA)
  decode end the last decode CTA's end
  combine    entry / after griddepcontrol.wait / end of the combine CTAs (first / last)
  after      the second stamp kernel

beside the call's graph-replayed time (back-to-back replays, as bench/gpu_decode.py's graph_ms) and the
timer's step (the smallest non-zero difference between two stamps of a replay: below it, 0 means "less").

    python3 tools/decode_timeline.py [--cases 1x8192,...] [--V 8] [--page 16] [--reps 20] [--out F.json]
"""
import argparse
import json
import os
import statistics
import sys

import torch

import s2attn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gpu_decode import graph_bench  # noqa: E402  (the decode benchmark's graph timing)
from model.timing import capture_graph  # noqa: E402
from profile_decode import BS, H, HKV, L, decode_inputs  # noqa: E402  (tools/: the script's directory)

DECODE_CTAS, DECODE_FIELDS, COMBINE_CTAS, COMBINE_FIELDS = 8192, 12, 65536, 4  # paged_timeline.cuh
AREA = 256 + DECODE_CTAS * DECODE_FIELDS * 8 + COMBINE_CTAS * COMBINE_FIELDS * 8


def stamp_kernel():
    """A one-thread Triton kernel that stores %globaltimer at ptr[0]."""
    import triton
    import triton.language as tl

    @triton.jit
    def stamp(ptr):
        z = tl.zeros([1], dtype=tl.int32)
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [z], dtype=tl.int64, is_pure=False,
                                      pack=1)
        tl.store(ptr + tl.arange(0, 1), t)

    return lambda t: stamp[(1,)](t)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def one_replay(ws_area, stamps):
    """The replay's stamps (us from the first stamp kernel) as a dict of lists / values; a record the
    replay did not write is zero (the area is zeroed before each replay)."""
    a = ws_area.view(torch.int64).cpu()
    t0, t1 = (int(x) for x in stamps.cpu())
    dec = a[:DECODE_CTAS * DECODE_FIELDS].view(DECODE_CTAS, DECODE_FIELDS)
    com = a[DECODE_CTAS * DECODE_FIELDS:].view(COMBINE_CTAS, COMBINE_FIELDS)
    us = lambda x: (int(x) - t0) / 1e3  # noqa: E731
    ran = [r for r in dec.tolist() if r[0] != 0]
    if not ran:
        raise SystemExit("no decode CTA wrote a stamp: is this the probe build "
                         "(tools/pending/probe-paged-timeline.patch)?")
    def span(a, b):  # us from stamp a to stamp b, over the CTAs that wrote both
        return [(x[b] - x[a]) / 1e3 for x in ran if x[a] and x[b]]

    r = dict(
        entry=[us(x[0]) for x in ran],
        rows=[(x[1] - x[0]) / 1e3 for x in ran],
        setup=span(0, 8), ctx_load=span(8, 9), search=span(9, 11), q_issue=span(11, 1),
        first=span(0, 2), stream=span(2, 3),
        ctas=len(ran),
        iterations=[x[5] for x in ran],
        wait=[x[6] / 1e3 for x in ran],
        epilogue=span(3, 4),
        decode_end=max(us(x[4]) for x in ran),
        sms=len({x[7] for x in ran}),
        after=us(t1),
    )
    stamps_ns = sorted({int(v) for x in ran for v in x[:5] if v})
    r["timer_step_ns"] = min((b - a for a, b in zip(stamps_ns, stamps_ns[1:])), default=0)
    crow = [x for x in com.tolist() if x[0] != 0]
    if crow:
        r.update(combine_entry=[us(x[0]) for x in crow], combine_go=[us(x[1]) for x in crow],
                 combine_end=[us(x[2]) for x in crow if x[2]])
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1x8192,1x32768,1x131072,8x8192,8x32768")
    ap.add_argument("--V", type=int, default=8)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="decode_timeline.json")
    a = ap.parse_args()
    dev = "cuda"
    p = s2attn.local_stride(H, block_size=BS, local_blocks=L, vert_stride=a.V, num_kv_heads=HKV)
    stamp = stamp_kernel()
    report = dict(gpu=torch.cuda.get_device_name(), command=" ".join(sys.argv), V=a.V, page=a.page, cases=[])
    for case in a.cases.split(","):
        B, ctx = (int(x) for x in case.split("x"))
        q, kp, vp, table, lens, out = decode_inputs(B, ctx, a.page, dev)
        splits = s2attn.paged_num_splits(q, kp, vp, table, lens, p)
        need = s2attn.paged_workspace_size(q, kp, vp, table, lens, p)
        off = (need + 255) // 256 * 256
        ws = torch.zeros(off + AREA, dtype=torch.uint8, device=dev)
        area = ws[off:off + AREA - 256]
        stamps = torch.zeros(2, dtype=torch.int64, device=dev)

        def call():
            s2attn.paged_attention(q, kp, vp, table, lens, p, out=out, workspace=ws)

        def stamped():
            stamp(stamps[0:1])
            call()
            stamp(stamps[1:2])

        graph_us = graph_bench(call) * 1e3
        g = capture_graph(stamped, warmup=3)
        reps = []
        for _ in range(a.reps):
            area.zero_()
            g.replay()
            torch.cuda.synchronize()
            reps.append(one_replay(area, stamps))
        # per field: the median over replays of the per-replay statistic
        def over(f, key):
            return med([f(r[key]) for r in reps if key in r])
        combined = any("combine_entry" in r for r in reps)  # split-KV: the combine kernel ran
        row = dict(batch=B, context=ctx, splits=splits, decode_ctas=over(lambda x: x, "ctas"), graph_us=graph_us,
                   sms=over(lambda x: x, "sms"),
                   entry_first=over(min, "entry"), entry_median=over(med, "entry"), entry_last=over(max, "entry"),
                   rows=over(med, "rows"), setup=over(med, "setup"), ctx_load=over(med, "ctx_load"),
                   search=over(med, "search"), q_issue=over(med, "q_issue"),
                   first_tile=over(med, "first"), stream=over(med, "stream"),
                   iterations=over(med, "iterations"), wait=over(med, "wait"), epilogue=over(med, "epilogue"),
                   decode_end=over(lambda x: x, "decode_end"), after=over(lambda x: x, "after"),
                   timer_step_ns=min(r["timer_step_ns"] for r in reps))
        if combined:
            row.update(combine_entry_first=over(min, "combine_entry"), combine_go_first=over(min, "combine_go"),
                       combine_go_last=over(max, "combine_go"), combine_end_last=over(max, "combine_end"))
        report["cases"].append(row)
        print(f"{B} x {ctx}: {splits} splits, {row['decode_ctas']:.0f} decode CTAs on {row['sms']:.0f} SMs; "
              f"graph {graph_us:.1f} us a call; from the first stamp kernel (us): entry {row['entry_first']:.1f} / "
              f"{row['entry_median']:.1f} / {row['entry_last']:.1f}; median CTA: rows +{row['rows']:.1f} (setup "
              f"{row['setup']:.1f}, context {row['ctx_load']:.1f}, search {row['search']:.1f}, "
              f"Q {row['q_issue']:.1f}), first tile "
              f"+{row['first_tile']:.1f}, stream {row['stream']:.1f} ({row['iterations']:.0f} loop iterations, "
              f"waiting {row['wait']:.1f}), epilogue {row['epilogue']:.1f}; decode end {row['decode_end']:.1f}"
              + (f"; combine entry {row['combine_entry_first']:.1f}, go {row['combine_go_first']:.1f} / "
                 f"{row['combine_go_last']:.1f}, end {row['combine_end_last']:.1f}" if combined else "")
              + f"; after {row['after']:.1f}; timer step {row['timer_step_ns']} ns", flush=True)
        del kp, vp
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

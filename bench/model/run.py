"""The model-level benchmark's driver (issue 10; docs/model_benchmark.md): a Llama-7B-shaped decoder with
random bf16 weights, prefill latency per context and decode tokens/s per batch and context, for all-dense
(SDPA flash = FA2, SDPA cuDNN), all-S2 and hybrid attention configurations, KV-cache bytes per sequence and
the largest batch that fits; one JSON (written as it goes) and plots beside it.

    python3 bench/model/run.py --out bench/results/model_bench.json                 # the full run (H100)
    python3 bench/model/run.py --quick --out /tmp/model_quick.json                  # a GPU smoke run
    python3 bench/model/run.py --device cpu --layers 2 --contexts 1024 --quick      # CPU dry run (tiny model)
"""
import argparse
import datetime
import os
import platform
import sys
import time

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = BENCH  # bench/model as the package `model`, bench/ for gpu_forward's helpers
elif BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import torch  # noqa: E402

import s2attn  # noqa: E402
from model.config import SparseParams, bad, model_shape, parse_config, parse_list, parse_size  # noqa: E402
from model.decode import measure_decode  # noqa: E402
from model.model import Llama  # noqa: E402
from model.prefill import measure_prefill  # noqa: E402
from model.report import Report  # noqa: E402
from model.timing import Timer  # noqa: E402

# defaults per device: the H100 run, and a CPU dry run on the tiny model
DEFAULTS = {
    "cuda": dict(model="llama7b", decode_models="llama7b,llama7b-gqa8", contexts="32k,64k,128k,256k",
                 configs="dense:flash,dense:cudnn,s2:8,s2:16,s2:32,hybrid:4:8", decode_contexts="32k,128k",
                 batches="1,8,32", decode_configs="dense,s2:8,s2:16,s2:32,hybrid:4:8:auto", dtype="bfloat16"),
    "cpu": dict(model="tiny", decode_models="tiny", contexts="1024", configs="dense:flash,dense:cudnn,s2:8,hybrid:2:8:flash",
                decode_contexts="1024", batches="1,2", decode_configs="dense,s2:8,hybrid:2:8:auto", dtype="float32"),
}
QUICK = {
    "cuda": dict(contexts="32k", configs="dense:flash,dense:cudnn,s2:8,hybrid:4:8", decode_models="llama7b-gqa8",
                 decode_contexts="32k", batches="1,8", decode_configs="dense,s2:8,hybrid:4:8:auto"),
    "cpu": dict(decode_contexts="512", batches="1,2"),
}
SPARSE = {"tiny": SparseParams(block_size=16, local_blocks=4, page_size=16)}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--model", default=None, help="prefill model: llama7b | llama7b-gqa8 | tiny; 'none': no prefill")
    ap.add_argument("--decode-models", default=None, help="comma list of decode models; 'none': no decode")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the shape's, 32)")
    ap.add_argument("--contexts", default=None, help="prefill contexts, e.g. 32k,64k,128k,256k")
    ap.add_argument("--configs", default=None, help="prefill configs: dense:flash,dense:cudnn,s2:V,hybrid:K:V")
    ap.add_argument("--decode-contexts", default=None, help="decode contexts, e.g. 32k,128k")
    ap.add_argument("--batches", default=None, help="decode batches, e.g. 1,8,32")
    ap.add_argument("--decode-configs", default=None, help="decode configs: dense,s2:V,hybrid:K:V")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--local-blocks", type=int, default=None)
    ap.add_argument("--page-size", type=int, default=None, help="decode cache page size (tokens)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--iters", type=int, default=None, help="timed prefill passes (default 1 at >= 128k, else 2)")
    ap.add_argument("--reserve-gib", type=float, default=2.0, help="memory kept for decode activations")
    ap.add_argument("--no-graph", action="store_true", help="time decode steps eagerly (no CUDA graph)")
    ap.add_argument("--s2-splits", type=int, default=None, help="split-KV count of the S2 decode (default: "
                    "the library's choice from the shapes)")
    ap.add_argument("--no-verify-max-batch", action="store_true", help="do not run the largest batch")
    ap.add_argument("--max-verify-batch", type=int, default=512)
    ap.add_argument("--deadline-s", type=float, default=None, help="skip what is left after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer contexts, configs and batches")
    ap.add_argument("--out", default="model_bench.json")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = torch.device(args.device).type
    if kind not in DEFAULTS:
        raise bad("device", f"cuda or cpu, got {args.device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise bad("device", "a CUDA device (torch.cuda.is_available() is False); use --device cpu")
    defaults = dict(DEFAULTS[kind], **(QUICK[kind] if args.quick else {}))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _list(text, parse, argument):
    return [] if text == "none" else parse_list(text, parse, argument)


def sparse_for(args, shape):
    base = SPARSE.get(shape.name, SparseParams())
    return SparseParams(block_size=args.block_size or base.block_size,
                        local_blocks=args.local_blocks or base.local_blocks,
                        page_size=args.page_size or base.page_size)


def device_meta(device):
    if torch.device(device).type != "cuda":
        return dict(gpu=None, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    from gpu_forward import driver_version

    p = torch.cuda.get_device_properties(device)
    return dict(gpu=torch.cuda.get_device_name(device), driver=driver_version(), sm_count=p.multi_processor_count,
                memory_bytes=p.total_memory, capability=list(torch.cuda.get_device_capability(device)))


class DecodeOptions:
    def __init__(self, args):
        cuda = torch.device(args.device).type == "cuda"
        self.reserve_bytes = int(args.reserve_gib * 2**30) if cuda else 0
        self.use_graph = cuda and not args.no_graph
        self.verify_max_batch = cuda and not args.no_verify_max_batch
        self.max_verify_batch = int(args.max_verify_batch)
        self.dense_candidates = ("flash", "cudnn", "efficient") if cuda else ("flash", "math")
        if args.s2_splits is not None and args.s2_splits < 1:
            raise bad("s2_splits", f"a positive integer, got {args.s2_splits}")
        self.s2_splits = args.s2_splits


def main(argv=None):
    args = parse_args(argv)
    dtype = getattr(torch, args.dtype)
    prefill_model = None if args.model == "none" else args.model
    decode_models = _list(args.decode_models, str, "decode_models")
    contexts = _list(args.contexts, parse_size, "contexts")
    configs = _list(args.configs, parse_config, "configs")
    decode_contexts = _list(args.decode_contexts, parse_size, "decode_contexts")
    batches = _list(args.batches, lambda t: parse_size(t, "batches"), "batches")
    decode_configs = _list(args.decode_configs, parse_config, "decode_configs")
    names = list(dict.fromkeys(([prefill_model] if prefill_model else []) + decode_models))
    shapes = {n: model_shape(n, args.layers) for n in names}  # validates the names before any work
    meta = dict(device=args.device, **device_meta(args.device), cuda=torch.version.cuda, torch=torch.__version__,
                s2attn=s2attn.__version__, python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([os.path.basename(sys.executable)] + sys.argv), dtype=args.dtype, seed=args.seed,
                shapes={n: vars(s) | dict(head_dim=s.head_dim, params=s.params()) for n, s in shapes.items()},
                sparse={n: vars(sparse_for(args, s)) for n, s in shapes.items()},
                prefill=dict(model=prefill_model, contexts=contexts, configs=[c.name for c in configs], batch=1),
                decode=dict(models=decode_models, contexts=decode_contexts, batches=batches,
                            configs=[c.name for c in decode_configs]),
                notes=[
                    "prefill: batch 1, whole-model forward timed with CUDA events after a warm-up of the first "
                    "layers at the same shape; logits of the last position only; MLP in 32768-token chunks",
                    "non_attention_ms: the same forward with every attention replaced by `return q` (config none)",
                    "attention_ms: sum over layers of the same attention call on random q/k/v of the layer's "
                    "shapes; bound_ms = non_attention_ms + attention_ms (the Amdahl bound of the configuration)",
                    "decode: caches filled with random K/V in the state of a step at position context-1 (no "
                    "prefill is run for decode timing); one step of the whole model per replay of a CUDA graph",
                    "decode S2 layers: head-paged cache keeping only the key blocks each KV head still needs "
                    "(s2attn.needed_key_blocks), s2attn.paged_attention; dense layers: contiguous cache, the "
                    "fastest SDPA backend measured on it in the same run (dense_backend)",
                    "max_batch = (free memory with the weights loaded - reserve) // kv_bytes_per_seq",
                ])
    timer = Timer(args.device)
    decode_opts = DecodeOptions(args)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    report = Report(args.out, meta, log=log, deadline_s=args.deadline_s)
    log(f"device {meta.get('gpu') or meta.get('cpu')}, torch {torch.__version__}, writing {args.out}")
    # decode first (a few minutes at most), then prefill (the long dense passes): a run cut short by its
    # deadline loses the longest contexts of the prefill, not the decode
    phases = [("decode", n) for n in decode_models if decode_contexts and batches and decode_configs]
    phases += [("prefill", prefill_model)] if prefill_model and contexts and configs else []
    for phase, name in phases:
        if report.out_of_time(f"{phase} {name}"):
            break
        shape, sparse = shapes[name], sparse_for(args, shapes[name])
        model = None
        try:
            model = Llama(shape, device=args.device, dtype=dtype, seed=args.seed)
            weights = sum(p.nbytes for p in model.parameters())
            if name not in {m["name"] for m in report.data["models"]}:
                report.add("models", [dict(name=name, params=shape.params(), weight_bytes=weights)])
            log(f"{phase}: model {name}, {shape.params() / 1e9:.2f} B parameters, {weights / 2**30:.1f} GiB")
            if phase == "prefill":
                measure_prefill(model, configs, contexts, sparse, timer, report, log, iters=args.iters)
            else:
                measure_decode(model, decode_configs, decode_contexts, batches, sparse, timer, report, log,
                               decode_opts)
        except Exception as e:  # noqa: BLE001 - a model that cannot be built or run: the next phase still runs
            report.error(phase, dict(model=name), e)
        finally:
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    print_summary(report.data)
    if not args.no_plots:
        try:
            from model.plot import plot_all

            for path in plot_all(args.out):
                log(f"wrote {path}")
        except Exception as e:  # noqa: BLE001 - plots can be made later with bench/model/plot.py
            report.error("plot", {}, e)
    log(f"wrote {args.out}")
    return 0


def print_summary(data):
    print("\nprefill (ms; speedups against the dense baselines of the same run)")
    print(f"{'model':<14}{'config':<18}{'context':>8}{'ms':>11}{'attn ms':>11}{'bound ms':>11}{'vs bound':>9}"
          f"{'vs FA2':>8}{'vs cuDNN':>9}")
    for r in data["prefill"]:
        def f(k, fmt):
            return format(r[k], fmt) if r.get(k) is not None else "-"
        print(f"{r['model']:<14}{r['config']:<18}{r['context']:>8}{f('ms', '.1f'):>11}{f('attention_ms', '.1f'):>11}"
              f"{f('bound_ms', '.1f'):>11}{f('model_vs_bound', '.3f'):>9}{f('speedup_vs_sdpa_flash', '.2f'):>8}"
              f"{f('speedup_vs_sdpa_cudnn', '.2f'):>9}")
    print("\ndecode (one step of the whole model)")
    print(f"{'model':<14}{'config':<18}{'context':>8}{'batch':>6}{'ms/step':>10}{'tok/s':>10}{'KV MiB/seq':>11}  status")
    for r in data["decode"]:
        ms = f"{r['ms_per_step']:.2f}" if "ms_per_step" in r else "-"
        tps = f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else "-"
        print(f"{r['model']:<14}{r['config']:<18}{r['context']:>8}{r['batch']:>6}{ms:>10}{tps:>10}"
              f"{r['kv_bytes_per_seq'] / 2**20:>11.1f}  {r['status']} {r.get('dense_backend', '')}")
    print("\nlargest batch")
    for r in data["kv_cache"]:
        print(f"{r['model']:<14}{r['config']:<18}{r['context']:>8}  {r['kv_bytes_per_seq'] / 2**20:10.1f} MiB/seq  "
              f"max batch {r['max_batch'] if r['max_batch'] is not None else '-'}")
    print("\nacceptance")
    for k, v in data["acceptance"].items():
        print(f"  {k}: {v}")
    if data["errors"]:
        print(f"\n{len(data['errors'])} errors (see the JSON 'errors'):")
        for e in data["errors"]:
            print(f"  {e.get('phase')} {e.get('config', '')} {e.get('context', '')}: {e['error'][:200]}")


if __name__ == "__main__":
    sys.exit(main())

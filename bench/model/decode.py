"""Decode measurement: one decode step of the whole model (batch B, every sequence at `context` tokens),
per attention configuration, plus KV-cache bytes per sequence and the largest batch that fits.

The caches are filled with random K/V in the state of a step at position context - 1 (no prefill runs):
S2 layers keep a head-paged cache holding only the key blocks each KV head still needs
(s2attn.needed_key_blocks) and attend through s2attn.paged_attention; dense layers keep a contiguous cache
and attend through the fastest SDPA backend measured on that cache in the same run (recorded per row).
The step (embedding, every layer, LM head) is captured in a CUDA graph and replayed back to back, so the
time is the GPU's and not Python's (eager when capture fails; the row says which).

Largest batch = (free GPU memory with the weights loaded - a reserve for activations and workspaces) //
the cache bytes per sequence (what the caches of one sequence allocate, computed exactly as allocated).
The largest batch is also run once when it exceeds the batches asked for, to show that it fits.
"""
import gc

import torch

import s2attn

from .attention import DenseSDPA, build_layer_attention, sdpa
from .config import AttentionConfig
from .kv_cache import ModelCache
from .timing import capture_graph

NO_ATTENTION = AttentionConfig("none", none=True)


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def free_memory(device):
    """Bytes the caches may use now (CUDA: torch.cuda.mem_get_info after releasing cached blocks; CPU:
    MemAvailable)."""
    if torch.device(device).type == "cuda":
        _free()
        return int(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def library_footprint(config, shape, sparse, context, dtype_name):
    """Bytes per sequence as s2attn.kv_cache_footprint counts them (K and V, every layer) at context - 1
    cached tokens: dense (everything), vLLM page layout, head-paged layout."""
    kinds = config.kinds(shape.layers)
    dense_layers, s2_layers = kinds.count("dense"), kinds.count("s2")
    dense_pattern = s2attn.dense(shape.heads, sparse.block_size, num_kv_heads=shape.kv_heads)
    d = s2attn.kv_cache_footprint(dense_pattern, context - 1, sparse.page_size, shape.head_dim, dtype_name)
    out = {k: (dense_layers + s2_layers) * d["dense_bytes"] if k == "dense_bytes" else dense_layers * d[k]
           for k in ("dense_bytes", "vllm_bytes", "head_paged_bytes")}
    if s2_layers:
        f = s2attn.kv_cache_footprint(sparse.pattern(shape, config.vert_stride), context - 1, sparse.page_size,
                                      shape.head_dim, dtype_name)
        out["vllm_bytes"] += s2_layers * f["vllm_bytes"]
        out["head_paged_bytes"] += s2_layers * f["head_paged_bytes"]
    return out


def pick_dense_backend(cache, shape, batch, timer, candidates):
    """Times the candidates' SDPA over layer 0 of the contiguous cache; returns (best, {name: ms or error})."""
    contiguous = next(c for c in cache.caches if c.kind == "contiguous")
    kc, vc = contiguous.keys_values(0)
    q = torch.randn(batch, 1, shape.heads, shape.head_dim, device=kc.device, dtype=kc.dtype)
    times = {}
    for be in candidates:
        try:
            times[be] = timer.per_call(lambda: sdpa(q, kc, vc, be, scale=shape.head_dim ** -0.5), calls=10)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this shape is skipped
            times[be] = f"{type(e).__name__}: {str(e)[:160]}"
    ok = {k: v for k, v in times.items() if isinstance(v, float)}
    if not ok:
        raise RuntimeError(f"no dense SDPA backend ran: {times}")
    return min(ok, key=ok.get), times


def time_step(step, timer, use_graph):
    """(ms per step, mode, note): CUDA-graph replays when use_graph and the capture works, else eager."""
    note = None
    if use_graph:
        graph = None
        try:
            graph = capture_graph(step, warmup=2)
            one = timer.once(graph.replay)[0]
            calls = max(3, min(50, int(600.0 / max(one, 1e-3))))
            return timer.per_call(graph.replay, calls), "cuda_graph", None
        except Exception as e:  # noqa: BLE001 - eager timing instead
            note = f"graph capture failed, eager: {type(e).__name__}: {str(e)[:200]}"
            try:
                torch.cuda.synchronize()
            except Exception:  # noqa: BLE001
                pass
        finally:
            del graph
    one = timer.once(step)[0]
    calls = max(3, min(30, int(600.0 / max(one, 1e-3))))
    return timer.per_call(step, calls), "eager", note


def measure_config(model, config, sparse, context, batches, free_bytes, opts, timer, report, log):
    """KV row and decode rows of one (configuration, context)."""
    s, dev, dt = model.shape, model.embed.device, model.dtype
    elem = torch.empty((), dtype=dt).element_size()
    attentions = build_layer_attention(config, s, sparse)
    model.set_attention(attentions)
    per_seq = ModelCache.bytes_per_sequence(attentions, s, context, sparse.page_size, elem)
    usable = free_bytes - opts.reserve_bytes
    max_batch = None if config.none else max(0, usable // per_seq["total"])
    kv = dict(model=s.name, config=config.name, label=config.label, context=context,
              kv_bytes_per_seq=per_seq["total"], kv_detail=per_seq, free_bytes_with_weights=free_bytes,
              reserve_bytes=opts.reserve_bytes, max_batch=max_batch)
    if not config.none:
        kv["library_footprint"] = library_footprint(config, s, sparse, context, str(dt).split(".")[-1])
    report.add("kv_cache", [kv])
    runs = list(batches)
    if max_batch and opts.verify_max_batch and max_batch > max(batches):
        runs.append(min(int(max_batch), opts.max_verify_batch))
    for B in runs:
        base = dict(model=s.name, config=config.name, label=config.label, context=context, batch=B,
                    kv_bytes_per_seq=per_seq["total"], at_max_batch=B == max_batch)
        if max_batch is not None and B > max_batch:
            need = B * per_seq["total"] + opts.reserve_bytes
            report.add("decode", [dict(base, status="does not fit",
                                       note=f"needs {need / 2**30:.1f} GiB, {free_bytes / 2**30:.1f} GiB free "
                                            f"with the weights loaded")])
            log(f"decode  {s.name} ctx={context:>7} {config.name:<18} B={B:<4} does not fit")
            continue
        cache = None
        try:
            gen = torch.Generator(device=dev)
            gen.manual_seed(context + B)
            cache = ModelCache.for_step(attentions, s, B, context, sparse.page_size, dt, dev, generator=gen,
                                        num_splits=opts.s2_splits)
            row = dict(base, status="ok", cache_bytes_allocated=cache.nbytes)
            dense = [a for a in attentions if isinstance(a, DenseSDPA)]
            if dense and config.dense_backend == "auto":
                best, times = pick_dense_backend(cache, s, B, timer, opts.dense_candidates)
                for a in dense:
                    a.backend = best
                row["dense_backend_ms"] = times
            if dense:
                row["dense_backend"] = dense[0].name
            tokens = torch.randint(0, s.vocab, (B, 1), device=dev, generator=gen)
            ms, mode, note = time_step(lambda: model(tokens, cache=cache), timer, opts.use_graph)
            row.update(ms_per_step=ms, tokens_per_s=B * 1e3 / ms, mode=mode)
            paged = [c for c in cache.caches if c.kind == "paged"]
            if paged:
                row["s2_splits"] = paged[0].splits_used()
            if note:
                row["note"] = note
            report.add("decode", [row])
            log(f"decode  {s.name} ctx={context:>7} {config.name:<18} B={B:<4} {ms:8.2f} ms/step "
                f"{B * 1e3 / ms:9.1f} tok/s ({mode})")
        except torch.cuda.OutOfMemoryError as e:
            report.add("decode", [dict(base, status="does not fit", note=f"out of memory: {str(e)[:200]}")])
        except Exception as e:  # noqa: BLE001 - one case failing must not lose the run
            report.error("decode", base, e)
        finally:
            cache = None  # the caches go before the next batch's are allocated
            _free()


def measure_decode(model, configs, contexts, batches, sparse, timer, report, log, opts):
    """Every context, configuration (the no-attention step first) and batch."""
    with torch.inference_mode():
        free_bytes = free_memory(model.embed.device)
        for context in contexts:
            for config in [NO_ATTENTION] + list(configs):
                if report.out_of_time(f"decode {model.shape.name} ctx={context} {config.name}"):
                    return
                try:
                    model.set_attention([None] * model.shape.layers)
                    measure_config(model, config, sparse, context, batches, free_bytes, opts, timer, report, log)
                except Exception as e:  # noqa: BLE001
                    report.error("decode", dict(model=model.shape.name, config=config.name, context=context), e)

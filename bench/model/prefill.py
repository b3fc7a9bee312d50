"""Prefill measurement: the whole model's forward at batch 1, per context and attention configuration, next
to the time of attention alone and of everything except attention.

Per context S:
  - non-attention time N: the model with every layer's attention replaced by `return q` (config 'none');
  - per configuration: the model's forward time T (CUDA events around one whole forward, after a warm-up of
    the first layers at the same shape), and the attention-alone time A = sum over layers of the time of the
    same attention call on random q/k/v of the same shapes (layers of one kind share one timing);
  - the Amdahl bound of the configuration, N + A, and T / (N + A): how close the model runs to it;
  - speedups T(baseline) / T against the dense baselines in the same run (dense:flash = FlashAttention-2,
    dense:cudnn = the fastest dense kernel), and the largest speedup attention could give, T(baseline) / N.
"""
import gc

import torch

from .attention import build_layer_attention
from .config import AttentionConfig
from .timing import summary

BASELINES = {"dense:flash": "sdpa_flash", "dense:cudnn": "sdpa_cudnn"}
NO_ATTENTION = AttentionConfig("none", none=True)


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _warmup_layers(config, layers):
    """Layers to run as a warm-up so that every attention kind of the configuration runs once."""
    kinds = config.kinds(layers)
    return max(kinds.index(k) for k in set(kinds)) + 1


def _attention_alone(model, attentions, S, timer, generator, iters):
    """{attention name: {layers, ms (per call), ms_total}} for the distinct attention objects."""
    s = model.shape
    dev, dt = model.embed.device, model.dtype

    def time_one(attn):  # q/k/v live for this call only
        q = torch.randn(1, S, s.heads, s.head_dim, device=dev, dtype=dt, generator=generator)
        k = torch.randn(1, S, s.kv_heads, s.head_dim, device=dev, dtype=dt, generator=generator)
        v = torch.randn_like(k)
        return summary(timer.repeat(lambda: attn.prefill(q, k, v), warmup=1, min_iters=iters, budget_ms=2000.0))

    out = {}
    for attn in {id(a): a for a in attentions}.values():
        n = sum(a is attn for a in attentions)
        t = time_one(attn)
        out[attn.name] = dict(layers=n, ms=t["ms"], iters=t["iters"], ms_total=n * t["ms"])
    return out


def measure_context(model, configs, sparse, S, timer, iters, report, log):
    """Rows of one context (the non-attention row first); errors go to report.error and the run goes on."""
    s = model.shape
    dev = model.embed.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(S)
    tokens = torch.randint(0, s.vocab, (1, S), device=dev, generator=gen)
    rows = []
    for config in [NO_ATTENTION] + list(configs):
        if report.out_of_time(f"prefill {s.name} S={S} {config.name}"):
            break
        try:
            attentions = build_layer_attention(config, s, sparse)
            model.set_attention(attentions)
            model(tokens, layers=_warmup_layers(config, s.layers))  # kernels, cuDNN plans, allocator
            t = summary(timer.repeat(lambda: model(tokens), warmup=0, min_iters=iters, max_iters=iters))
            row = dict(model=s.name, config=config.name, label=config.label, context=S, batch=1, **t)
            if not config.none:
                row["attention"] = _attention_alone(model, attentions, S, timer, gen, iters=2)
                row["attention_ms"] = sum(a["ms_total"] for a in row["attention"].values())
            if config.vert_stride is not None:
                row["s2_density"] = float(sparse.pattern(s, config.vert_stride).density(S))
            rows.append(row)
            log(f"prefill {s.name} S={S:>7} {config.name:<18} {t['ms']:10.1f} ms"
                + (f"  (attention alone {row['attention_ms']:9.1f} ms)" if "attention_ms" in row else ""))
        except Exception as e:  # noqa: BLE001 - one configuration failing must not lose the run
            report.error("prefill", dict(model=s.name, config=config.name, context=S), e)
        finally:
            model.set_attention([None] * s.layers)
            _free()
    derive(rows)
    return rows


def derive(rows):
    """Non-attention time, Amdahl bound and speedups of the rows of one (model, context)."""
    by = {r["config"]: r for r in rows}
    none = by.get("none")
    for r in rows:
        if r["config"] == "none":
            continue
        if none is not None:
            r["non_attention_ms"] = none["ms"]
            if "attention_ms" in r:
                r["bound_ms"] = none["ms"] + r["attention_ms"]
                r["model_vs_bound"] = r["ms"] / r["bound_ms"]
        for base, short in BASELINES.items():
            b = by.get(base)
            if b is None:
                continue
            r[f"speedup_vs_{short}"] = b["ms"] / r["ms"]
            if none is not None:
                # attention free: the most any attention kernel could give against this baseline
                r[f"amdahl_max_speedup_vs_{short}"] = b["ms"] / none["ms"]
                if "bound_ms" in r:
                    r[f"bound_speedup_vs_{short}"] = b["ms"] / r["bound_ms"]


def measure_prefill(model, configs, contexts, sparse, timer, report, log, iters=None):
    """Every context in turn (shortest first); rows are added to the report as each context completes."""
    with torch.inference_mode():
        for S in contexts:
            n = iters if iters is not None else (1 if S >= 131072 else 2)
            report.add("prefill", measure_context(model, configs, sparse, S, timer, n, report, log))

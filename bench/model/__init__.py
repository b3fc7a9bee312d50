"""Model-level benchmark of s2attn (docs/model_benchmark.md): a Llama-7B-shaped decoder with random weights
whose attention layers are S2 (s2attn) or dense (SDPA), prefill and paged decode, against dense baselines.

    python3 bench/model/run.py --out bench/results/model_bench.json

Modules: config (shapes, per-layer attention configurations), attention (per-layer attention backends),
kv_cache (contiguous and paged KV caches), model (the decoder), timing, prefill / decode (measurements),
report (the result file and the acceptance checks), run (the driver), plot (figures of a result file).
"""

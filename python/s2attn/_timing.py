"""Wall-clock timing for host backends (median of repeats after a warm-up)."""
import statistics
import time


def median_seconds(fn, repeats=3, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def causal_attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal=True):
    """Dense-equivalent FLOPs of attention forward (2 GEMMs, 2 FLOPs per MAC; causal halves)."""
    full = 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim
    return full / 2 if causal else full

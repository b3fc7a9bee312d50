"""Timing of the model benchmark: CUDA events around the call (after a synchronize) on a GPU, the wall
clock on the CPU; warm-up calls first, then timed calls until a time budget or a call count is reached.
Long calls (a 13 s dense prefill) are timed once or twice, short ones (a decode step) many times."""
import statistics
import time

import torch


class Timer:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn):
        """(milliseconds of one call of fn, its result)."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end), out
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1e3, out

    def repeat(self, fn, warmup=1, min_iters=1, max_iters=20, budget_ms=1000.0):
        """Timed calls after `warmup` untimed ones: at least min_iters, then more while the total stays under
        budget_ms, at most max_iters. Returns the list of milliseconds."""
        for _ in range(warmup):
            fn()
        times = []
        while len(times) < max_iters:
            times.append(self.once(fn)[0])
            if len(times) >= min_iters and sum(times) + statistics.mean(times) > budget_ms:
                break
        return times

    def per_call(self, fn, calls, warmup=2):
        """Milliseconds per call of `calls` back-to-back calls (no sync between them), after warm-ups: for
        decode steps and graph replays, where a sync per call would add its own latency."""
        for _ in range(warmup):
            fn()

        def run():
            for _ in range(calls):
                fn()

        return self.once(run)[0] / calls


def capture_graph(fn, warmup=2):
    """A CUDA graph of one call of fn, captured after `warmup` calls on a side stream (what capture needs:
    lazy initialisation and allocator warm-up outside the capture). Raises what the capture raises."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def summary(times):
    """{'ms': median, 'ms_min', 'iters'} of a list of milliseconds."""
    return dict(ms=statistics.median(times), ms_min=min(times), iters=len(times))

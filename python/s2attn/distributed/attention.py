"""Context-parallel S2 attention on torch.distributed (NCCL on GPUs, gloo on CPU): the sequence is sharded over a
process group, each rank receives only the key blocks its queries see (see planner.py), computes its queries
with the library's own ops, and returns dK/dV of the received blocks to their owners in the backward.

Compute (exact, any analytic pattern): per rank, a key buffer covering absolute positions [0, end of its last
segment) holds the local keys and the received ones; every other slot is never read, because the kernels
enumerate only the key blocks the pattern shows (the tests fill those slots with NaN to prove it). Each local
segment [s, e) is one call of the existing op on keys [0, e) with its queries at offset s: block indices stay
absolute, so vertical phases, sinks and ranges mean what they mean on one GPU. Why not a compacted key set:
a compacted buffer needs a per-rank block-mask pattern, which the CUDA backends do not run (analytic patterns
only), and the buffer costs only a transient [B, E, Hkv, D] K and V per call (see docs/context_parallel.md).

Overlap: all receives and sends are posted before the buffer is built; segment w waits only for the messages
of wave w (zig-zag: a rank's early chunk needs only earlier ranks, so it is computed while the rest
arrive). The backward runs the segments in reverse and returns each wave's dK/dV as soon as no remaining
segment adds to them, overlapping that traffic with the next segment's backward. The received K/V are saved
for the backward, so the backward exchanges gradients only.
"""
import threading
from collections import OrderedDict

import numpy as np
import torch
import torch.distributed as dist

from .._errors import UnsupportedError, invalid
from ..torch import ops as _ops  # registers the custom ops
from ..torch._registry import pattern_key
from ..torch.functional import from_bshd, to_bshd
from .planner import check_pattern, expand, plan_context_parallel
from .sharding import Sharding

# Value of the key-buffer slots no query reads. The tests set NaN to prove that the kernels skip them.
BUFFER_FILL = 0.0


class RankPlan:
    """One rank's share of a CommPlan, as index tensors on a device.

    Index tensors address a [B, tokens * Hkv, D] view of K/V (flat index token * Hkv + kv_head): `recv` rows
    (src, wave, positions in the key buffer), `send` rows (dst, wave, positions in the local shard). A
    message holds its KV heads in order, each head's tokens ascending; sender and receiver derive the same
    order from the plan.
    """

    def __init__(self, plan, rank, device):
        sh, hkv = plan.sharding, plan.num_kv_heads
        self.segments, offset = [], 0  # (start, end, local offset)
        for s, e in sh.segments(rank):
            self.segments.append((s, e, offset))
            offset += e - s
        self.local_len = offset
        self.buffer_len = self.segments[-1][1]
        self.num_waves = len(self.segments)

        def index(parts):
            return torch.from_numpy(np.concatenate(parts)).to(device)

        self.recv = [(src, int(plan.wave[rank, src]),
                      index([expand(r) * hkv + h for h, r in enumerate(plan.ranges[(rank, src)])]))
                     for src in plan.sources(rank)]
        self.send = [(dst, int(plan.wave[dst, rank]),
                      index([sh.local_index(rank, expand(r)) * hkv + h
                             for h, r in enumerate(plan.ranges[(dst, rank)])]))
                     for dst in range(sh.world_size) if (dst, rank) in plan.ranges]


_cache_lock = threading.Lock()
_plans = OrderedDict()  # (pattern key, sharding) -> CommPlan
_rank_plans = OrderedDict()  # (pattern key, sharding, rank, device) -> RankPlan
_CACHE_SIZE = 32


def _cached(cache, key, build):
    with _cache_lock:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
    value = build()
    with _cache_lock:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


def rank_plan(pattern, sharding, rank, device):
    """The (cached) RankPlan of `rank` for pattern over sharding."""
    key = pattern_key(pattern)
    plan = _cached(_plans, (key, sharding), lambda: plan_context_parallel(pattern, sharding))
    return _cached(_rank_plans, (key, sharding, rank, str(device)), lambda: RankPlan(plan, rank, device))


def _flat(x):
    """[B, S, Hkv, D] contiguous -> [B, S * Hkv, D] (a view)."""
    return x.view(x.shape[0], -1, x.shape[-1])


def _p2p(group, sends, recvs):
    """Post a batch of point-to-point messages; sends/recvs are (group rank, tensor). Returns the works.
    Every rank posts the same waves in the same order, so each batch pairs with its peers' batches."""
    def peer(r):
        return r if group is None else dist.get_global_rank(group, r)

    ops = [dist.P2POp(dist.isend, t, peer(r), group) for r, t in sends]
    ops += [dist.P2POp(dist.irecv, t, peer(r), group) for r, t in recvs]
    return dist.batch_isend_irecv(ops) if ops else []


def _key_buffers(rp, k, v, received):
    """The [B, E, Hkv, D] K and V buffers: local segments and the messages of `received` ({src: [2, B, n, D]})
    placed at their absolute positions; the rest is BUFFER_FILL."""
    b, _, hkv, d = k.shape
    kbuf = k.new_full((b, rp.buffer_len, hkv, d), BUFFER_FILL)
    vbuf = v.new_full((b, rp.buffer_len, hkv, d), BUFFER_FILL)
    for s, e, off in rp.segments:
        kbuf[:, s:e] = k[:, off:off + e - s]
        vbuf[:, s:e] = v[:, off:off + e - s]
    for src, _, idx in rp.recv:
        if src in received:
            _place(kbuf, vbuf, idx, received[src])
    return kbuf, vbuf


def _place(kbuf, vbuf, idx, message):
    _flat(kbuf).index_copy_(1, idx, message[0])
    _flat(vbuf).index_copy_(1, idx, message[1])


def _forward(rp, group, q, k, v, key, scale, deterministic):
    k, v = k.contiguous(), v.contiguous()
    b, _, _, d = k.shape
    received = {src: k.new_empty((2, b, idx.numel(), d)) for src, _, idx in rp.recv}
    works = []
    for w in range(rp.num_waves):
        sends = [(dst, torch.stack([_flat(k).index_select(1, idx), _flat(v).index_select(1, idx)]))
                 for dst, ww, idx in rp.send if ww == w]
        works.append(_p2p(group, sends, [(src, received[src]) for src, ww, _ in rp.recv if ww == w]))
    kbuf, vbuf = _key_buffers(rp, k, v, {})  # while the messages travel
    outs, lses = [], []
    for w, (s, e, off) in enumerate(rp.segments):
        for work in works[w]:
            work.wait()
        for src, ww, idx in rp.recv:
            if ww == w:
                _place(kbuf, vbuf, idx, received[src])
        o, lse = torch.ops.s2attn.attention_forward(q[:, off:off + e - s], kbuf[:, :e], vbuf[:, :e], key, scale,
                                                    None, None, s, deterministic)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, 1), torch.cat(lses, 2), received


def _backward(rp, group, dout, dlse, q, k, v, out, lse, received, key, scale, deterministic, comm_dtype):
    k, v = k.contiguous(), v.contiguous()
    kbuf, vbuf = _key_buffers(rp, k, v, received)
    b, _, hkv, d = k.shape
    dkbuf = torch.zeros((b, rp.buffer_len, hkv, d), dtype=torch.float32, device=k.device)
    dvbuf = torch.zeros_like(dkbuf)
    dq = torch.empty_like(q)
    if dout is None:
        dout = torch.zeros_like(out)
    works, incoming = [], []
    for w in reversed(range(rp.num_waves)):
        s, e, off = rp.segments[w]
        rows = slice(off, off + e - s)
        q_s, lse_s = q[:, rows], lse[:, :, rows].contiguous()
        args = (key, scale, None, None, s, deterministic)
        dq_s, dk_s, dv_s = torch.ops.s2attn.attention_backward(dout[:, rows], q_s, kbuf[:, :e], vbuf[:, :e],
                                                               out[:, rows], lse_s, *args)
        dkbuf[:, :e] += dk_s
        dvbuf[:, :e] += dv_s
        if dlse is not None:
            dq_x, dk_x = _ops.lse_backward(dlse[:, :, rows], q_s, kbuf[:, :e], lse_s, *args)
            dq_s = dq_s + dq_x.to(dq_s.dtype)
            dkbuf[:, :e] += dk_x
        dq[:, rows] = dq_s
        # no earlier segment reads the keys of wave w: their gradients are complete, send them home
        sends = [(src, torch.stack([_flat(dkbuf).index_select(1, idx), _flat(dvbuf).index_select(1, idx)])
                  .to(comm_dtype)) for src, ww, idx in rp.recv if ww == w]
        recvs = [(dst, idx, k.new_empty((2, b, idx.numel(), d), dtype=comm_dtype))
                 for dst, ww, idx in rp.send if ww == w]
        incoming += [(idx, t) for _, idx, t in recvs]
        works += _p2p(group, sends, [(dst, t) for dst, _, t in recvs])
    dk = torch.cat([dkbuf[:, s:e] for s, e, _ in rp.segments], 1)
    dv = torch.cat([dvbuf[:, s:e] for s, e, _ in rp.segments], 1)
    for work in works:
        work.wait()
    for idx, t in incoming:  # message order is fixed, so the sums are deterministic
        _flat(dk).index_add_(1, idx, t[0].float())
        _flat(dv).index_add_(1, idx, t[1].float())
    return dq, dk.to(k.dtype), dv.to(v.dtype)


class ContextParallelAttention(torch.autograd.Function):
    """(q, k, v local shards in bshd) -> (out, lse) local shards; differentiable in q, k, v and through lse."""

    @staticmethod
    def forward(ctx, q, k, v, rp, group, key, scale, deterministic, reduce_dtype):
        out, lse, received = _forward(rp, group, q, k, v, key, scale, deterministic)
        srcs = sorted(received)
        ctx.save_for_backward(q, k, v, out, lse, *[received[s] for s in srcs])
        ctx.srcs, ctx.rp, ctx.group, ctx.key, ctx.scale = srcs, rp, group, key, scale
        ctx.deterministic, ctx.reduce_dtype = deterministic, reduce_dtype
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, *msgs = ctx.saved_tensors
        received = dict(zip(ctx.srcs, msgs))
        dq, dk, dv = _backward(ctx.rp, ctx.group, dout, dlse, q, k, v, out, lse, received, ctx.key, ctx.scale,
                               ctx.deterministic, ctx.reduce_dtype or k.dtype)
        return dq, dk, dv, None, None, None, None, None, None


def _group_rank(group, sharding):
    if not (dist.is_available() and dist.is_initialized()):
        raise invalid("group", "an initialised torch.distributed process group (init_process_group first)")
    world = dist.get_world_size(group)
    if world != sharding.world_size:
        raise invalid("sharding", f"world_size equal to the process group's size {world}, got "
                                  f"{sharding.world_size}")
    return dist.get_rank(group)


def context_parallel_attention(q, k, v, pattern, sharding, *, group=None, softmax_scale=None, layout="bshd",
                               return_lse=False, deterministic=False, reduce_dtype=None):
    """S2 attention of a sequence sharded over a process group: local shards in, the local output shard out.

    q [B, n, H, D], k/v [B, n, Hkv, D] (layout 'bshd'; 'bhsd' and 'sbhd' as in s2attn.torch.attention) hold
    this rank's tokens as `sharding` (an s2attn.distributed.Sharding of the full sequence over the group)
    assigns them. Returns out (in the given layout) and, with return_lse, lse float32 [B, H, n]. Equal to the
    single-process `s2attn.torch.attention` of the full sequence, sharded. Causal patterns only.
    reduce_dtype: dtype in which dK/dV travel back to their owners (default k's dtype; sums are float32).
    Every rank of the group must call this collectively, with the same pattern and sharding.
    """
    if layout == "thd":
        raise UnsupportedError("context parallelism over packed varlen ('thd') sequences is not supported; "
                               "shard each sequence in 'bshd', 'bhsd' or 'sbhd'")
    check_pattern(pattern)
    if not isinstance(sharding, Sharding):
        raise invalid("sharding", f"an s2attn.distributed.Sharding, got {type(sharding).__name__}")
    qb, kb, vb = to_bshd(q, layout, "q"), to_bshd(k, layout, "k"), to_bshd(v, layout, "v")
    rank = _group_rank(group, sharding)
    n = sharding.local_len(rank)
    for name, x, heads in (("q", qb, pattern.num_heads), ("k", kb, pattern.num_kv_heads),
                           ("v", vb, pattern.num_kv_heads)):
        if x.shape[1] != n or x.shape[2] != heads or x.shape[0] != qb.shape[0] or x.shape[3] != qb.shape[3]:
            raise invalid(name, f"rank {rank}'s shard [B, {n}, {heads}, D] (logical bshd; pattern heads "
                                f"{pattern.num_heads}, KV heads {pattern.num_kv_heads}), got {list(x.shape)}")
    rp = rank_plan(pattern, sharding, rank, qb.device)
    scale = float(softmax_scale) if softmax_scale is not None else _ops.default_scale(qb.shape[-1])
    out, lse = ContextParallelAttention.apply(qb, kb, vb, rp, group, pattern_key(pattern), scale,
                                              bool(deterministic), reduce_dtype)
    out = from_bshd(out, layout)
    return (out, lse) if return_lse else out

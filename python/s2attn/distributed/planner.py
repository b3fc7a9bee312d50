"""The communication plan of sparse-aware context parallelism: which keys each rank receives from each other
rank, per KV head, and what that costs next to a dense ring.

A pure function of (pattern, sharding): no process group, no tensors. For every rank `dst` and KV head `h`,
the keys dst must receive are the tokens of the key blocks that some query of dst sees (for some q head of
h's group) and that another rank holds. Key blocks come from the library's own column enumerator
(`s2attn.needed_key_blocks`, the definition every kernel follows), so sinks, range rules, dense heads,
per-q-head phases and block-mask patterns are all covered. Causal patterns only: a segment [s, e) of dst's
queries sees keys before s (all of them, for the blocks it sees) and its own tokens; a key block that
straddles s (an unaligned shard boundary) contributes only its tokens before s.

Messages are per (src, dst) pair; their *wave* is the index of dst's first segment that reads any of them,
so that dst can compute its first segment while later waves are still in flight (zig-zag: a rank's early
chunk needs only the earlier ranks).
"""
from dataclasses import dataclass

import numpy as np

from .. import _s2attn
from .._errors import UnsupportedError, invalid
from ..paged import needed_key_blocks
from .sharding import Sharding


def _ranges(a):
    return np.asarray(a, dtype=np.int64).reshape(-1, 2)


def _merge(r):
    """Union of token ranges [n, 2] as sorted, disjoint, non-adjacent ranges."""
    r = _ranges(r)
    r = r[r[:, 0] < r[:, 1]]
    if len(r) <= 1:
        return r
    r = r[np.argsort(r[:, 0], kind="stable")]
    ends = np.maximum.accumulate(r[:, 1])
    starts_new = np.concatenate([[True], r[1:, 0] > ends[:-1]])  # a gap before this range
    first = np.flatnonzero(starts_new)
    last = np.concatenate([first[1:], [len(r)]]) - 1
    return np.stack([r[first, 0], ends[last]], 1)


def _clip(r, lo, hi):
    """The parts of ranges r inside [lo, hi)."""
    c = np.stack([np.maximum(r[:, 0], lo), np.minimum(r[:, 1], hi)], 1) if len(r) else _ranges([])
    return c[c[:, 0] < c[:, 1]]


def expand(r):
    """The tokens (int64, ascending for sorted ranges) of ranges r."""
    r = _ranges(r)
    lengths = r[:, 1] - r[:, 0]
    if len(r) == 0:
        return np.zeros(0, np.int64)
    starts = np.repeat(r[:, 0] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(lengths.sum(), dtype=np.int64)


def _count(r):
    return int((r[:, 1] - r[:, 0]).sum()) if len(r) else 0


def check_pattern(pattern):
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")
    if not pattern.causal:
        raise UnsupportedError("context parallelism supports causal patterns only (a bidirectional pattern's "
                               "queries read keys of later ranks; not planned yet)")


@dataclass(frozen=True, eq=False)
class CommPlan:
    """Who sends which keys to whom. `ranges[(dst, src)]` is a tuple over KV heads of int64 [n, 2] token
    ranges (absolute, sorted, disjoint); pairs without a message are absent. `wave[dst, src]` is the index
    of dst's first segment that reads the message (-1: no message)."""

    sharding: Sharding
    block_size: int
    num_heads: int
    num_kv_heads: int
    ranges: dict
    wave: np.ndarray

    @property
    def num_waves(self):
        return len(self.sharding.segments(0))

    def sources(self, dst):
        """Ranks that send to dst, ascending."""
        return [s for s in range(self.sharding.world_size) if (dst, s) in self.ranges]

    def tokens(self, dst, src, kv_head=None):
        """Absolute tokens dst receives from src for one KV head (None: any KV head), ascending."""
        heads = self.ranges.get((dst, src))
        if heads is None:
            return np.zeros(0, np.int64)
        if kv_head is not None:
            return expand(heads[kv_head])
        return expand(_merge(np.concatenate(heads)))

    def received_blocks(self, dst, kv_head):
        """Absolute key blocks of which dst receives at least one token for `kv_head`, ascending."""
        toks = [self.tokens(dst, s, kv_head) for s in self.sources(dst)]
        toks = np.concatenate(toks) if toks else np.zeros(0, np.int64)
        return np.unique(toks // self.block_size)

    def summary(self, head_dim, itemsize=2, batch=1):
        """Bytes received for K and V (forward), per rank and in total, next to the dense baselines.

        bytes_per_kv_head    this plan: each KV head receives its own key blocks
        bytes_union_heads    the coarser plan: a token's K/V of every KV head is sent when any head needs it
        bytes_dense_ring     ring attention: every rank receives every other rank's K/V ((P-1)/P of the sequence)
        bytes_dense_causal   the least a dense causal attention needs: every earlier token held elsewhere
        The backward returns dK/dV of exactly the received keys (the same count; `itemsize` of the gradient
        dtype), with no second K/V exchange (the received blocks are saved). A dense ring's backward moves
        K/V once more and dK/dV around the ring: twice its forward bytes.
        """
        s, p, hkv = self.sharding, self.sharding.world_size, self.num_kv_heads
        unit = 2 * int(head_dim) * int(itemsize) * int(batch)  # K and V of one token of one head
        per_head, union, ring, causal, messages = [], [], [], [], []
        for dst in range(p):
            srcs = self.sources(dst)
            per_head.append(sum(_count(r) for src in srcs for r in self.ranges[(dst, src)]) * unit)
            union.append(sum(len(self.tokens(dst, src)) for src in srcs) * hkv * unit)
            ring.append((s.seqlen - s.local_len(dst)) * hkv * unit)
            causal.append((s.segments(dst)[-1][1] - s.local_len(dst)) * hkv * unit)
            messages.append(len(srcs))
        total = {name: int(sum(v)) for name, v in
                 (("per_kv_head", per_head), ("union_heads", union), ("dense_ring", ring),
                  ("dense_causal", causal))}
        return {
            "seqlen": int(s.seqlen), "world_size": p, "sharding": s.kind, "block_size": self.block_size,
            "num_heads": self.num_heads, "num_kv_heads": hkv, "head_dim": int(head_dim),
            "itemsize": int(itemsize), "batch": int(batch),
            "bytes_per_kv_head": total["per_kv_head"], "bytes_union_heads": total["union_heads"],
            "bytes_dense_ring": total["dense_ring"], "bytes_dense_causal": total["dense_causal"],
            "ratio_vs_dense_ring": total["per_kv_head"] / max(total["dense_ring"], 1),
            "ratio_union_vs_dense_ring": total["union_heads"] / max(total["dense_ring"], 1),
            "ratio_vs_dense_causal": total["per_kv_head"] / max(total["dense_causal"], 1),
            "max_rank_bytes_per_kv_head": int(max(per_head)), "max_rank_bytes_dense_ring": int(max(ring)),
            "rank_bytes_per_kv_head": [int(b) for b in per_head], "messages_per_rank": messages,
        }


def plan_context_parallel(pattern, sharding):
    """The communication plan of `pattern` (causal) over `sharding`. Pure and deterministic."""
    check_pattern(pattern)
    if not isinstance(sharding, Sharding):
        raise invalid("sharding", f"an s2attn.distributed.Sharding, got {type(sharding).__name__}")
    p, bs, hkv = sharding.world_size, pattern.block_size, pattern.num_kv_heads
    bounds, owner = sharding.chunk_bounds(), sharding.chunk_owner()
    ranges, wave = {}, np.full((p, p), -1, dtype=np.int64)
    for dst in range(p):
        # needed[w][h]: the key ranges before segment w that its queries read for KV head h
        needed = []
        for s, e in sharding.segments(dst):
            row = []
            for h in range(hkv):
                blocks = needed_key_blocks(pattern, h, s, e).astype(np.int64)
                row.append(np.stack([blocks * bs, np.minimum((blocks + 1) * bs, s)], 1))
            needed.append(row)
        got = {}  # src -> per head list of ranges
        for c in range(sharding.num_chunks):
            src = int(owner[c])
            if src == dst:
                continue
            for w, row in enumerate(needed):
                for h, r in enumerate(row):
                    part = _clip(r, bounds[c], bounds[c + 1])
                    if len(part):
                        got.setdefault(src, [[] for _ in range(hkv)])[h].append(part)
                        wave[dst, src] = w if wave[dst, src] < 0 else min(wave[dst, src], w)
        for src, heads in got.items():
            ranges[(dst, src)] = tuple(_merge(np.concatenate(x)) if x else _ranges([]) for x in heads)
    return CommPlan(sharding, bs, pattern.num_heads, hkv, ranges, wave)

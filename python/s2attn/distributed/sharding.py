"""How a sequence is split over the ranks of a context-parallel group.

A sharding cuts the `seqlen` tokens into chunks of near-equal length (sizes differ by at most one token, the
longer chunks first) and gives each rank a tuple of chunks, its *segments*, concatenated in order to form its
local shard:
  contiguous   P chunks; rank r holds chunk r.
  zigzag       2P chunks; rank r holds chunks r and 2P-1-r (the load-balanced causal split of Megatron-style
               context parallelism: every rank gets one early and one late chunk).
No divisibility is required: chunk boundaries need not fall on pattern blocks (a block may then be shared by
two ranks; the planner moves token ranges, not whole blocks). Every chunk must hold at least one token.
"""
from dataclasses import dataclass

import numpy as np

from .._errors import invalid

KINDS = ("contiguous", "zigzag")


def _is_torch(x):
    return type(x).__module__.startswith("torch")


@dataclass(frozen=True)
class Sharding:
    """The split of a sequence of `seqlen` tokens over `world_size` ranks ('contiguous' or 'zigzag')."""

    seqlen: int
    world_size: int
    kind: str = "contiguous"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise invalid("sharding", f"kind one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.world_size, (int, np.integer)) or self.world_size < 1:
            raise invalid("world_size", f"an integer >= 1, got {self.world_size!r}")
        if not isinstance(self.seqlen, (int, np.integer)) or self.seqlen < self.num_chunks:
            raise invalid("seqlen", f"an integer >= {self.num_chunks} (one token per chunk of the {self.kind} "
                                    f"sharding over {self.world_size} ranks), got {self.seqlen!r}")

    @property
    def num_chunks(self):
        return self.world_size * (2 if self.kind == "zigzag" else 1)

    def chunk_bounds(self):
        """int64 [num_chunks + 1]: chunk c holds tokens [bounds[c], bounds[c + 1])."""
        base, extra = divmod(int(self.seqlen), self.num_chunks)
        sizes = np.full(self.num_chunks, base, dtype=np.int64)
        sizes[:extra] += 1
        return np.concatenate([[0], np.cumsum(sizes)])

    def chunk_owner(self):
        """int64 [num_chunks]: the rank holding each chunk."""
        p = self.world_size
        if self.kind == "contiguous":
            return np.arange(p, dtype=np.int64)
        return np.concatenate([np.arange(p), np.arange(p)[::-1]]).astype(np.int64)

    def _check_rank(self, rank):
        if not 0 <= int(rank) < self.world_size:
            raise invalid("rank", f"in [0, {self.world_size}), got {rank}")

    def segments(self, rank):
        """The token ranges ((start, end), ...) rank `rank` holds, ascending; its local shard is their
        concatenation in this order."""
        self._check_rank(rank)
        b = self.chunk_bounds()
        chunks = [rank] if self.kind == "contiguous" else [rank, 2 * self.world_size - 1 - rank]
        return tuple((int(b[c]), int(b[c + 1])) for c in chunks)

    def local_len(self, rank):
        return sum(e - s for s, e in self.segments(rank))

    def local_index(self, rank, tokens):
        """Positions in rank's local shard of absolute token indices it holds (int64 array)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        out = np.full(tokens.shape, -1, dtype=np.int64)
        offset = 0
        for s, e in self.segments(rank):
            inside = (tokens >= s) & (tokens < e)
            out[inside] = tokens[inside] - s + offset
            offset += e - s
        if (out < 0).any():
            raise invalid("tokens", f"tokens held by rank {rank}")
        return out

    def shard(self, x, rank, dim=1):
        """Rank `rank`'s local shard of the full-sequence array `x` (numpy or torch) along `dim`."""
        if x.shape[dim] != self.seqlen:
            raise invalid("x", f"{self.seqlen} tokens along dim {dim}, got shape {list(x.shape)}")
        parts = [_narrow(x, dim, s, e) for s, e in self.segments(rank)]
        return _concat(parts, dim)

    def unshard(self, shards, dim=1):
        """The full-sequence array from every rank's local shard (a sequence of world_size arrays)."""
        if len(shards) != self.world_size:
            raise invalid("shards", f"{self.world_size} local shards, got {len(shards)}")
        pieces = []  # (start, array) for every segment of every rank
        for rank, x in enumerate(shards):
            if x.shape[dim] != self.local_len(rank):
                raise invalid("shards", f"rank {rank}'s shard of {self.local_len(rank)} tokens along dim {dim}, "
                                        f"got shape {list(x.shape)}")
            offset = 0
            for s, e in self.segments(rank):
                pieces.append((s, _narrow(x, dim, offset, offset + e - s)))
                offset += e - s
        return _concat([p for _, p in sorted(pieces, key=lambda t: t[0])], dim)


def _narrow(x, dim, start, end):
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end)
    return x[tuple(index)]


def _concat(parts, dim):
    if len(parts) == 1:
        return parts[0]
    if _is_torch(parts[0]):
        import torch

        return torch.cat(parts, dim)
    return np.concatenate(parts, dim)

"""A vLLM-style attention entry point over s2attn's paged KV cache: a metadata object built once per step by
the engine's scheduler and a layer whose `forward(query, key, value, kv_cache, attn_metadata)` writes the new
tokens' keys/values into their cache slots and runs S2 attention of the step's queries over the cache.

The cache is vLLM's: `kv_cache` [2, num_pages, page_size, Hkv, D] (k pages then v pages), a block table per
sequence, slots `page * page_size + offset`. Or head-paged, where each KV head has its own pages so that an
engine keeps only the key blocks each head still needs (`s2attn.needed_key_blocks`; free the rest and mark
their table entries -1, they are never read): `kv_cache` [2, num_pages, page_size, 1, D], block table
[B, Hkv, max_pages] and slots per (token, KV head), `slot_mapping` [T, Hkv]. Prefill, chunked prefill and decode sequences mix in one packed
batch (`query_start_loc` = cu_seqlens of the queries). Both steps are torch.library custom ops (fake
implementations included), so torch.compile traces them.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import paged as _paged
from .. import patterns as _patterns
from .._errors import invalid
from ._registry import pattern_key, pattern_of


@dataclass
class S2PagedMetadata:
    """Per-step metadata (one object shared by every layer of the step)."""

    block_table: Tensor      # int32 [B, max_pages] (head-paged: [B, Hkv, max_pages])
    seq_lens: Tensor         # int32 [B]: cached tokens per sequence after this step (its new tokens included)
    query_start_loc: Tensor  # int32 [B + 1]: cu_seqlens of the step's packed queries
    slot_mapping: Tensor     # int64 [T] (head-paged: [T, Hkv]): cache slot of each new token (per KV head);
                             # negative = not written (padding, or a block the head will never read)
    num_splits: Optional[int] = None      # split-KV count (None: chosen from shapes)
    workspace: Optional[Tensor] = None    # uint8, paged_workspace_size bytes, for CUDA-graph capture


@torch.library.custom_op("s2attn::write_kv_cache", mutates_args=("kv_cache",))
def write_kv_cache(key: Tensor, value: Tensor, kv_cache: Tensor, slot_mapping: Tensor) -> None:
    """kv_cache[0/1].view(-1, Hkv, D)[slot] = key/value for every token with slot >= 0; head-paged
    (slot_mapping [T, Hkv], kv_cache [2, pages, page, 1, D]): kv_cache[0/1].view(-1, D)[slot[t, h]] =
    key/value[t, h] for every slot >= 0."""
    slots = slot_mapping.to(torch.int64)
    Hkv, D = kv_cache.shape[-2], kv_cache.shape[-1]
    if slots.dim() == 2:  # head-paged: one slot per (token, KV head)
        if Hkv != 1 or tuple(slots.shape) != tuple(key.shape[:2]):
            raise invalid("slot_mapping", "[T, Hkv] slots matching key [T, Hkv, D] with a head-paged kv_cache "
                          f"[2, pages, page, 1, D]; got slots {list(slots.shape)}, key {list(key.shape)}, "
                          f"kv_cache {list(kv_cache.shape)}")
        slots, key, value = slots.reshape(-1), key.reshape(-1, 1, D), value.reshape(-1, 1, D)
    if bool((slots < 0).any()):  # not written (a host sync: pass no negative slots under graph capture)
        keep = slots >= 0
        key, value, slots = key[keep], value[keep], slots[keep]
    kv_cache[0].view(-1, Hkv, D).index_copy_(0, slots, key.to(kv_cache.dtype))
    kv_cache[1].view(-1, Hkv, D).index_copy_(0, slots, value.to(kv_cache.dtype))


@write_kv_cache.register_fake
def _write_kv_cache_fake(key, value, kv_cache, slot_mapping):
    return None


@torch.library.custom_op("s2attn::paged_attention", mutates_args=())
def paged_attention_op(query: Tensor, kv_cache: Tensor, block_table: Tensor, seq_lens: Tensor,
                       query_start_loc: Tensor, pattern: int, softmax_scale: float, num_splits: int,
                       workspace: Optional[Tensor]) -> Tensor:
    return _paged.paged_attention(query, kv_cache[0], kv_cache[1], block_table, seq_lens, pattern_of(pattern),
                                  softmax_scale=softmax_scale, cu_seqlens_q=query_start_loc, workspace=workspace,
                                  num_splits=None if num_splits <= 0 else num_splits)


@paged_attention_op.register_fake
def _paged_attention_fake(query, kv_cache, block_table, seq_lens, query_start_loc, pattern, softmax_scale,
                          num_splits, workspace):
    return torch.empty_like(query)


class S2PagedAttention(torch.nn.Module):
    """The attention of one layer in a vLLM-style engine.

    pattern: an s2attn Pattern for this layer's heads, or None to build the local-stride one from
    block_size / local_blocks / vert_stride (+ num_dense_heads, head_sliding_offset), as dkernel does.
    """

    def __init__(self, num_heads, head_size, scale=None, num_kv_heads=None, *, pattern=None, block_size=64,
                 local_blocks=16, vert_stride=8, num_dense_heads=0, head_sliding_offset=0):
        super().__init__()
        self.num_heads, self.head_size = int(num_heads), int(head_size)
        self.num_kv_heads = int(num_kv_heads) if num_kv_heads is not None else self.num_heads
        self.scale = float(scale) if scale is not None else self.head_size ** -0.5
        if pattern is None:
            pattern = _patterns.local_stride(self.num_heads, block_size, local_blocks, vert_stride,
                                             num_dense_heads=num_dense_heads, num_kv_heads=self.num_kv_heads,
                                             head_sliding_offset=head_sliding_offset)
        self.pattern = pattern
        self.pattern_key = pattern_key(pattern)  # registered outside any compiled region

    def forward(self, query, key, value, kv_cache, attn_metadata: S2PagedMetadata, output=None):
        """query [T, H, D], key/value [T, Hkv, D] (the step's new tokens), kv_cache [2, pages, page, Hkv, D]
        (head-paged: [2, pages, page, 1, D] with a [B, Hkv, max_pages] block table and [T, Hkv] slots).
        Returns [T, H, D] (written into `output` when given)."""
        if kv_cache.dim() != 5 or kv_cache.shape[0] != 2:
            raise invalid("kv_cache", f"shape [2, num_pages, page_size, Hkv, D], got {list(kv_cache.shape)}")
        m = attn_metadata
        if key is not None:
            torch.ops.s2attn.write_kv_cache(key, value, kv_cache, m.slot_mapping)
        out = torch.ops.s2attn.paged_attention(query, kv_cache, m.block_table, m.seq_lens, m.query_start_loc,
                                               self.pattern_key, self.scale, m.num_splits or 0, m.workspace)
        if output is not None:
            output.copy_(out)
            return output
        return out

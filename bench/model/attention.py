"""Per-layer attention backends of the model: the same two calls for every backend.

    prefill(q, k, v)              q [B, S, H, D], k/v [B, S, Hkv, D] (bshd) -> out [B, S, H, D]: causal
                                  attention of the chunk over itself (positions 0 .. S-1)
    decode(q, k, v, cache, slot)  the step's new tokens: writes k/v into the layer's cache (slot `slot` of
                                  `cache`) and attends q over the whole cache -> [B, q_len, H, D]

Backends: S2Attention (s2attn: st.attention for prefill, s2attn.paged_attention over a head-paged cache that
holds only the key blocks each KV head still needs), DenseSDPA (torch SDPA with one backend: flash =
FlashAttention-2, cudnn, efficient, math; decode over a contiguous cache), MaskedReference (the S2 pattern
as a dense boolean mask in SDPA's math backend: the reference of the tests) and NoAttention (returns q: the
model without attention, for the non-attention time).
"""
import contextlib

import torch
import torch.nn.functional as F

import s2attn
import s2attn.torch as st

from .config import bad


def sdpa_backend(name):
    """The torch.nn.attention.SDPBackend of a backend name ('auto': None, SDPA's own choice)."""
    from torch.nn.attention import SDPBackend

    table = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH, "auto": None}
    if name not in table:
        raise bad("backend", f"one of {sorted(table)}, got {name!r}")
    return table[name]


def sdpa(q, k, v, backend, **kw):
    """SDPA on bshd views (SDPA wants bhsd: transposed views, no copies), output back as bshd."""
    be = sdpa_backend(backend)
    gqa = q.shape[2] != k.shape[2]
    ctx = contextlib.nullcontext() if be is None else _sdpa_kernel(be)
    with ctx:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             enable_gqa=gqa, **kw)
    return out.transpose(1, 2)


def _sdpa_kernel(be):
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(be)


class S2Attention:
    """An S2 layer through s2attn."""

    kind = "s2"

    def __init__(self, pattern, softmax_scale):
        self.pattern = pattern
        self.scale = float(softmax_scale)
        self.name = "s2attn"

    def prefill(self, q, k, v):
        return st.attention(q, k, v, self.pattern, softmax_scale=self.scale)

    def decode(self, q, k, v, cache, slot):
        cache.write(slot, k, v)
        return cache.attend(slot, q, self.pattern, self.scale)


class DenseSDPA:
    """A dense causal layer through torch SDPA with one backend."""

    kind = "dense"

    def __init__(self, backend, softmax_scale):
        sdpa_backend(backend)  # validates the name
        self.backend = backend
        self.scale = float(softmax_scale)

    @property
    def name(self):
        return f"sdpa_{self.backend}"

    def prefill(self, q, k, v):
        return sdpa(q, k, v, self.backend, is_causal=True, scale=self.scale)

    def decode(self, q, k, v, cache, slot):
        if q.shape[1] != 1:
            raise bad("q", f"one token per sequence in a dense decode step, got q_len {q.shape[1]}")
        cache.write(slot, k, v)
        kc, vc = cache.keys_values(slot)  # [B, n, Hkv, D] views of the cache, n = tokens cached
        return sdpa(q, kc, vc, self.backend, scale=self.scale)  # the last query sees every cached key


def pattern_mask(pattern, q_positions, k_len):
    """bool [H, len(q_positions), k_len]: what each head's query at each position sees of keys 0..k_len-1
    (the pattern's block mask at token level, causal cut included)."""
    bs = pattern.block_size
    qb = q_positions // bs
    first, nq, nk = int(qb.min()), int(qb.max() - qb.min()) + 1, -(-k_len // bs)
    blocks = torch.from_numpy(pattern.to_block_mask(nq, nk, first).astype(bool))  # [H, nq, nk]
    keys = torch.arange(k_len)
    mask = blocks[:, qb - first][:, :, keys // bs]
    return mask & (keys[None, :] <= q_positions[:, None])[None] if pattern.causal else mask


class MaskedReference:
    """The S2 (or dense) pattern as a dense boolean mask in SDPA's math backend: the masked model the
    tests compare s2attn against. Decode keeps a contiguous cache of every token."""

    kind = "reference"

    def __init__(self, pattern, softmax_scale):
        self.pattern = pattern
        self.scale = float(softmax_scale)
        self.name = "masked_reference"

    def _attend(self, q, k, v, q_positions):
        mask = pattern_mask(self.pattern, q_positions.cpu(), k.shape[1]).to(q.device)  # [H, Sq, Sk]
        g = q.shape[2] // k.shape[2]
        k, v = k.repeat_interleave(g, 2), v.repeat_interleave(g, 2)
        return sdpa(q, k, v, "math", attn_mask=mask[None], scale=self.scale)

    def prefill(self, q, k, v):
        return self._attend(q, k, v, torch.arange(q.shape[1]))

    def decode(self, q, k, v, cache, slot):
        cache.write(slot, k, v)
        kc, vc = cache.keys_values(slot)
        return self._attend(q, kc, vc, cache.start + torch.arange(q.shape[1]))


class NoAttention:
    """No attention: the layer's output is q (the rest of the model runs unchanged)."""

    kind = "none"
    name = "none"

    def prefill(self, q, k, v):
        return q

    def decode(self, q, k, v, cache, slot):
        return q


def build_layer_attention(config, shape, sparse, reference=False):
    """One attention object per layer for `config` (an AttentionConfig). Layers of one kind share one
    object (and S2 layers one pattern). reference=True: every S2 and dense layer as MaskedReference."""
    scale = shape.head_dim ** -0.5
    made = {}

    def make(kind):
        if kind in made:
            return made[kind]
        if kind == "none":
            obj = NoAttention()
        elif kind == "s2":
            p = sparse.pattern(shape, config.vert_stride)
            obj = MaskedReference(p, scale) if reference else S2Attention(p, scale)
        else:
            obj = (MaskedReference(s2attn.dense(shape.heads, sparse.block_size, num_kv_heads=shape.kv_heads),
                                   scale) if reference else DenseSDPA(config.dense_backend, scale))
        made[kind] = obj
        return obj

    return [make(k) for k in config.kinds(shape.layers)]

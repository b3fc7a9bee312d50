"""A Llama-shaped decoder (RMSNorm, RoPE, SwiGLU MLP, grouped-query attention as an option) with random
weights built in place on the device, seeded, and a per-layer attention backend (bench/model/attention.py).

    model = Llama(model_shape("llama7b"), device="cuda", dtype=torch.bfloat16, seed=0)
    model.set_attention(build_layer_attention(parse_config("s2:8"), model.shape, SparseParams()))
    logits = model(tokens)                          # prefill, [B, vocab] of the last position
    cache = ModelCache.empty(model.attention, ...)  # or ModelCache.for_step(...) (random K/V)
    cache.set_positions(start, n); logits = model(tokens, cache=cache)   # prefill (start 0) or decode

Only the weights persist: activations live for one layer (inference_mode frees them as the next layer
runs), the MLP runs in token chunks (`mlp_chunk`) so that a 256k-token prefill needs no 11008-wide
activation of the whole sequence, and only the last position's logits are computed unless all_logits.
"""
import math

import torch
import torch.nn.functional as F

from .config import bad


def rope_tables(positions, head_dim, theta, dtype):
    """cos, sin [n, head_dim / 2] of the rotary embedding at `positions` (angles in float32)."""
    inv = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.to(torch.float32)[:, None] * inv[None]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x [B, n, heads, D] rotated by the tables [n, D/2] (halves convention: (x1, x2) -> (x1 c - x2 s,
    x2 c + x1 s)), written straight into a new contiguous tensor: four elementwise passes and no temporaries
    (at 256k tokens a [n, heads, D] temporary is 2 GiB)."""
    c, s = cos[None, :, None], sin[None, :, None]
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, c, out=o1)
    o1.addcmul_(x2, s, value=-1)
    torch.mul(x2, c, out=o2)
    o2.addcmul_(x1, s)
    return out


class Llama(torch.nn.Module):
    """The decoder. Weights ~ N(0, 0.02) (output projections scaled by 1/sqrt(2 * layers)), norms 1."""

    def __init__(self, shape, *, device, dtype, seed=0, mlp_chunk=32768):
        super().__init__()
        self.shape, self.dtype, self.mlp_chunk = shape, dtype, int(mlp_chunk)
        if self.mlp_chunk < 1:
            raise bad("mlp_chunk", f"a positive integer, got {mlp_chunk!r}")
        device = torch.device(device)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        s, D = shape, shape.head_dim
        out_std = 0.02 / math.sqrt(2 * s.layers)

        def w(*dims, std=0.02):
            t = torch.empty(dims, device=device, dtype=dtype)
            return torch.nn.Parameter(t.normal_(0.0, std, generator=gen), requires_grad=False)

        def ones(n):
            return torch.nn.Parameter(torch.ones(n, device=device, dtype=dtype), requires_grad=False)

        self.embed = w(s.vocab, s.hidden)
        self.layers = torch.nn.ModuleList()
        for _ in range(s.layers):
            layer = torch.nn.Module()
            layer.attn_norm, layer.mlp_norm = ones(s.hidden), ones(s.hidden)
            layer.wq, layer.wk, layer.wv = w(s.heads * D, s.hidden), w(s.kv_heads * D, s.hidden), w(s.kv_heads * D, s.hidden)
            layer.wo = w(s.hidden, s.heads * D, std=out_std)
            layer.w_gate, layer.w_up = w(s.mlp, s.hidden), w(s.mlp, s.hidden)
            layer.w_down = w(s.hidden, s.mlp, std=out_std)
            self.layers.append(layer)
        self.final_norm = ones(s.hidden)
        self.lm_head = w(s.vocab, s.hidden)
        self.attention = [None] * s.layers

    def set_attention(self, attentions):
        """One attention object per layer (bench/model/attention.py)."""
        if len(attentions) != self.shape.layers:
            raise bad("attentions", f"{self.shape.layers} objects (one per layer), got {len(attentions)}")
        self.attention = list(attentions)

    def _norm(self, x, weight):
        return F.rms_norm(x, (x.shape[-1],), weight, self.shape.norm_eps)

    def _mlp(self, layer, x):
        """x += SwiGLU(norm(x)), token chunk by token chunk (in place)."""
        for lo in range(0, x.shape[1], self.mlp_chunk):
            xs = x[:, lo:lo + self.mlp_chunk]
            h = self._norm(xs, layer.mlp_norm)
            g = F.silu(F.linear(h, layer.w_gate), inplace=True)
            g.mul_(F.linear(h, layer.w_up))
            del h
            xs += F.linear(g, layer.w_down)

    def _attention_block(self, i, x, cos, sin, cache):
        """x += wo(attention(rope(q), rope(k), v)) of layer i."""
        s, layer = self.shape, self.layers[i]
        B, n = x.shape[:2]
        h = self._norm(x, layer.attn_norm)
        q = apply_rope(F.linear(h, layer.wq).view(B, n, s.heads, s.head_dim), cos, sin)
        k = apply_rope(F.linear(h, layer.wk).view(B, n, s.kv_heads, s.head_dim), cos, sin)
        v = F.linear(h, layer.wv).view(B, n, s.kv_heads, s.head_dim)
        del h
        attn = self.attention[i]
        if attn is None:
            raise bad("attention", "set_attention() before running the model")
        if cache is None:
            o = attn.prefill(q, k, v)
        elif cache.start == 0 and attn.kind != "none":  # prefill: attention over the chunk, keys cached too
            c, slot = cache.slot(i)
            c.write(slot, k, v)
            o = attn.prefill(q, k, v)
        else:
            o = attn.decode(q, k, v, *cache.slot(i))
        del q, k, v
        x += F.linear(o.reshape(B, n, s.heads * s.head_dim), layer.wo)

    def forward(self, tokens, cache=None, layers=None, all_logits=False):
        """tokens int64 [B, n]. Without a cache: prefill of positions 0 .. n-1. With a cache (after
        cache.set_positions(start, n)): positions start .. start + n - 1, the keys/values written into it;
        start 0 is a prefill, start > 0 attends over the cache (decode). layers: run only the first `layers`
        decoder layers (warm-up). Returns logits [B, vocab] of the last position ([B, n, vocab] if
        all_logits)."""
        if tokens.dim() != 2:
            raise bad("tokens", f"int64 [batch, n], got shape {list(tokens.shape)}")
        n = tokens.shape[1]
        start = 0
        if cache is not None:
            if cache.count != n:
                raise bad("cache", f"set_positions(start, {n}) for {n} tokens, got count {cache.count}")
            start = cache.start
        pos = torch.arange(start, start + n, device=tokens.device)
        cos, sin = rope_tables(pos, self.shape.head_dim, self.shape.rope_theta, self.dtype)
        x = F.embedding(tokens, self.embed)
        for i in range(self.shape.layers if layers is None else min(int(layers), self.shape.layers)):
            self._attention_block(i, x, cos, sin, cache)
            self._mlp(self.layers[i], x)
        x = x if all_logits else x[:, -1]
        return F.linear(self._norm(x, self.final_norm), self.lm_head)

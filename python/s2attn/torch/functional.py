"""The functional torch API: `attention(q, k, v, pattern, ...)` with autograd, any of the usual layouts.

Layouts (no copies: the kernels take strides, so other layouts are views of the logical [B, S, H, D]):
  "bshd"  [batch, seq, heads, dim]          (FlashAttention, dkernel seq_dim=1)
  "bhsd"  [batch, heads, seq, dim]          (SDPA, dkernel seq_dim=2)
  "sbhd"  [seq, batch, heads, dim]          (Megatron)
  "thd"   [total_tokens, heads, dim]        (packed varlen, with cu_seqlens_q / cu_seqlens_k)
The output comes back in the input's layout (and memory order); lse is float32 [B, H, Sq] ([H, T] for thd).
"""
import torch

from .._errors import invalid
from . import ops as _ops  # registers the custom ops
from ._registry import pattern_key

LAYOUTS = ("bshd", "bhsd", "sbhd", "thd")


def to_bshd(x, layout, name):
    """The logical [B, S, H, D] (or [T, H, D]) view of `x` stored in `layout`."""
    if layout not in LAYOUTS:
        raise invalid("layout", f"one of {LAYOUTS}, got {layout!r}")
    want = 3 if layout == "thd" else 4
    if x.dim() != want:
        raise invalid(name, f"rank {want} for layout '{layout}', got shape {list(x.shape)}")
    if layout == "bhsd":
        return x.transpose(1, 2)
    if layout == "sbhd":
        return x.transpose(0, 1)
    return x


def from_bshd(x, layout):
    """Inverse of to_bshd (a view)."""
    if layout == "bhsd":
        return x.transpose(1, 2)
    if layout == "sbhd":
        return x.transpose(0, 1)
    return x


def attention(q, k, v, pattern, *, softmax_scale=None, cu_seqlens_q=None, cu_seqlens_k=None, q_offset=None,
              layout="bshd", return_lse=False, deterministic=False):
    """S2 attention on torch tensors, differentiable in q, k, v (and through the returned lse).

    Causal queries are bottom-right aligned with the keys (q_offset defaults to Sk - Sq). A query row that sees
    no key returns 0 and lse -inf. deterministic: bitwise-repeatable gradients on the GPU.
    """
    if layout == "thd" and (cu_seqlens_q is None or cu_seqlens_k is None):
        raise invalid("cu_seqlens_q", "cu_seqlens_q and cu_seqlens_k for the packed 'thd' layout")
    if layout != "thd" and (cu_seqlens_q is not None or cu_seqlens_k is not None):
        raise invalid("layout", f"'thd' when cu_seqlens are given, got {layout!r}")
    qb, kb, vb = to_bshd(q, layout, "q"), to_bshd(k, layout, "k"), to_bshd(v, layout, "v")
    scale = float(softmax_scale) if softmax_scale is not None else _ops.default_scale(q.shape[-1])
    out, lse = torch.ops.s2attn.attention_forward(
        qb, kb, vb, pattern_key(pattern), scale, cu_seqlens_q, cu_seqlens_k,
        -1 if q_offset is None else int(q_offset), bool(deterministic))
    out = from_bshd(out, layout)
    return (out, lse) if return_lse else out

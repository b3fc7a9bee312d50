"""s2attn as PyTorch operators: `torch.library` custom ops (so torch.compile(fullgraph=True) traces through
them), fake implementations for shape propagation, and autograd.

Ops (namespace `s2attn`):
  attention_forward(q, k, v, pattern, softmax_scale, cu_seqlens_q, cu_seqlens_k, q_offset, deterministic)
      -> (out, lse)
  attention_backward(dout, q, k, v, out, lse, pattern, softmax_scale, cu_seqlens_q, cu_seqlens_k, q_offset,
      deterministic) -> (dq, dk, dv)
q/k/v are logical [B, S, H, D] (any strides, last dim contiguous) or varlen [T, H, D]; `pattern` is the integer
key of a registered Pattern (see _registry); q_offset -1 means the default (Sk - Sq, bottom-right aligned).
The op launches on torch's current CUDA stream. Saved for backward: q, k, v, out, lse (and cu_seqlens).
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import ops as _ops
from ._registry import pattern_of


def _lse_shape(q: Tensor, varlen: bool):
    return (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])


def _q_offset(q_offset: int):
    return None if q_offset < 0 else int(q_offset)


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


@torch.library.custom_op("s2attn::attention_forward", mutates_args=())
def attention_forward(q: Tensor, k: Tensor, v: Tensor, pattern: int, softmax_scale: float,
                      cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor], q_offset: int,
                      deterministic: bool) -> Tuple[Tensor, Tensor]:
    out = torch.empty_like(q)  # q's memory layout: a bhsd or sbhd view gets a same-layout output
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q is not None), dtype=torch.float32)
    _ops.attention(q, k, v, pattern_of(pattern), softmax_scale=softmax_scale, cu_seqlens_q=cu_seqlens_q,
                   cu_seqlens_k=cu_seqlens_k, q_offset=_q_offset(q_offset), out=out, lse=lse)
    return out, lse


@attention_forward.register_fake
def _attention_forward_fake(q, k, v, pattern, softmax_scale, cu_seqlens_q, cu_seqlens_k, q_offset,
                            deterministic):
    return torch.empty_like(q), q.new_empty(_lse_shape(q, cu_seqlens_q is not None), dtype=torch.float32)


@torch.library.custom_op("s2attn::attention_backward", mutates_args=())
def attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, pattern: int,
                       softmax_scale: float, cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                       q_offset: int, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _ops.attention_backward(_last_dim_contiguous(dout), q, k, v, out, lse, pattern_of(pattern),
                            softmax_scale=softmax_scale, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                            q_offset=_q_offset(q_offset), deterministic=deterministic, dq=dq, dk=dk, dv=dv)
    return dq, dk, dv


@attention_backward.register_fake
def _attention_backward_fake(dout, q, k, v, out, lse, pattern, softmax_scale, cu_seqlens_q, cu_seqlens_k,
                             q_offset, deterministic):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, pattern, softmax_scale, cu_seqlens_q, cu_seqlens_k, q_offset, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
    ctx.pattern, ctx.softmax_scale, ctx.q_offset, ctx.deterministic = pattern, softmax_scale, q_offset, deterministic
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
    args = (ctx.pattern, ctx.softmax_scale, cu_q, cu_k, ctx.q_offset, ctx.deterministic)
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = torch.ops.s2attn.attention_backward(dout, q, k, v, out, lse, *args)
    if dlse is not None:
        dq_extra, dk_extra = lse_backward(dlse, q, k, lse, *args)
        dq = dq + dq_extra.to(dq.dtype)
        dk = dk + dk_extra.to(dk.dtype)
    return dq, dk, dv, None, None, None, None, None, None


def lse_backward(dlse, q, k, lse, pattern, softmax_scale, cu_q, cu_k, q_offset, deterministic):
    """The float32 terms (dq, dk) that a gradient `dlse` of the returned lse adds to the attention's gradients.

    lse_i = log sum_j exp(s_ij) adds dS_ij += dlse_i * P_ij, i.e. dq_i += scale * dlse_i * (P k)_i and
    dk_j += scale * sum_i P_ij dlse_i q_i: an attention with k as values, and the dv of a backward whose output
    gradient is dlse_i * q_i. Exact; paid only when the LSE itself receives a gradient.
    """
    args = (pattern, softmax_scale, cu_q, cu_k, q_offset, deterministic)
    w = dlse.transpose(0, 1) if cu_q is not None else dlse.transpose(1, 2)  # -> q's [.., S, H] order
    pk, _ = torch.ops.s2attn.attention_forward(q, k, k, pattern, softmax_scale, cu_q, cu_k, q_offset,
                                               deterministic)
    dq = softmax_scale * w.unsqueeze(-1) * pk.float()
    wq = (w.unsqueeze(-1) * q.float()).to(q.dtype)
    _, _, dk = torch.ops.s2attn.attention_backward(wq, q, k, k, torch.zeros_like(q), lse, *args)
    return dq, softmax_scale * dk.float()


torch.library.register_autograd("s2attn::attention_forward", _backward, setup_context=_setup_context)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)

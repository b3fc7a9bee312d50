"""Merging attention computed over disjoint key ranges (context parallelism, chunked prefill, split-KV)."""
import torch

from .._errors import invalid


def _lse_dims(lse, out):
    """The two dims to swap so that lse is arranged like out[..., 0] (s2attn's [B, H, S] against a [B, S, H, D]
    output, [H, T] against [T, H, D]), or None when it already is."""
    if lse.shape == out.shape[:-1]:
        return None
    if lse.dim() == 3 and out.dim() == 4 and lse.transpose(1, 2).shape == out.shape[:-1]:
        return (1, 2)
    if lse.dim() == 2 and out.dim() == 3 and lse.transpose(0, 1).shape == out.shape[:-1]:
        return (0, 1)
    raise invalid("lse", f"a shape matching out {list(out.shape)} without its last dim, got {list(lse.shape)}")


def combine_attn_partitions(*x, hdim=1, return_lse=False):
    """Combine (output, lse) pairs computed over disjoint key ranges into the attention over their union.

    dkernel-compatible: `combine_attn_partitions((o1, lse1), (o2, lse2), ...)`. Partitions where a row saw no
    key (lse -inf) get weight 0; a row no partition saw returns 0 (and lse -inf). Differentiable.
    `hdim` is accepted for compatibility; the lse layout is inferred from the output's shape.
    """
    if len(x) < 1 or any(len(p) != 2 for p in x):
        raise invalid("x", "one or more (output, lse) pairs")
    outs = [p[0] for p in x]
    swap = _lse_dims(x[0][1], outs[0])
    lses = [(p[1] if swap is None else p[1].transpose(*swap)).float() for p in x]
    lse = torch.stack(lses, 0)
    m = lse.amax(0)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lse - m_safe)  # exp(-inf) = 0: partitions that saw nothing weigh nothing
    total = w.sum(0)
    weights = w / torch.where(total > 0, total, torch.ones_like(total))
    out = (torch.stack([o.float() for o in outs], 0) * weights.unsqueeze(-1)).sum(0).to(outs[0].dtype)
    if not return_lse:
        return out
    combined = torch.where(total > 0, m_safe + torch.log(total), torch.full_like(m, float("-inf")))
    return out, (combined if swap is None else combined.transpose(*swap))

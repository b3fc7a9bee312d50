"""nn.Modules with the constructor and forward arguments of the paper's Triton library (dkernel), so that a
dkernel user can switch by changing the import.

`block_m` / `block_n` and other kernel tuning keywords are accepted and ignored (s2attn picks its own tiles).
Layouts: seq_dim None or 1 -> [B, S, H, D]; 2 -> [B, H, S, D]; 0 -> [S, B, H, D] (Megatron, an s2attn
extension); 3-D inputs are packed varlen [T, H, D] with cu_seqlen_q / cu_seqlen_k.
The lse returned with return_lse=True is float32 [B, H, Sq] ([H, T] when packed).
"""
import numpy as np
import torch

from .. import patterns as _patterns
from .._errors import invalid
from ._registry import pattern_key
from .functional import attention

_SEQ_DIM_LAYOUT = {None: "bshd", 1: "bshd", 2: "bhsd", 0: "sbhd"}


def _split_packed(q, k, v, split_qkv):
    """dkernel's packing: qkv packed in q (k = v = None) or kv packed in k (v = None)."""
    if k is None and v is None:
        if split_qkv is not None:
            return split_qkv(q)
        if q.shape[-2] % 3:
            raise invalid("q", f"packed qkv with a head count divisible by 3 (or pass split_qkv), got {q.shape[-2]}")
        return q.chunk(3, dim=-2)
    if v is None:
        if split_qkv is not None:
            k, v = split_qkv(k)
        else:
            if k.shape[-2] % 2:
                raise invalid("k", f"packed kv with an even head count (or pass split_qkv), got {k.shape[-2]}")
            k, v = k.chunk(2, dim=-2)
        return q, k, v
    if k is None:
        raise invalid("k", "a tensor when v is given")
    return q, k, v


class _S2AttentionBase(torch.nn.Module):
    """Shared forward: layouts, packing, varlen, left/right padding at inference."""

    def __init__(self, causal, seq_dim, deterministic):
        super().__init__()
        if seq_dim not in _SEQ_DIM_LAYOUT:
            raise invalid("seq_dim", f"None, 0, 1 or 2, got {seq_dim!r}")
        self.causal = bool(causal)
        self.seq_dim = seq_dim
        self.deterministic = bool(deterministic)

    def pattern_for(self, num_heads, num_kv_heads):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, q, k=None, v=None, sm_scale=None, *, cu_seqlen_k=None, cu_seqlen_q=None,
                left_paddings=None, seqlens=None, return_lse=False, split_qkv=None):
        q, k, v = _split_packed(q, k, v, split_qkv)
        packed = q.dim() == 3
        layout = "thd" if packed else _SEQ_DIM_LAYOUT[self.seq_dim]
        heads_dim = 1 if packed else (1 if layout == "bhsd" else 2)
        pattern = self.pattern_for(q.shape[heads_dim], k.shape[heads_dim])
        if packed:
            if cu_seqlen_q is None and cu_seqlen_k is None:
                raise invalid("cu_seqlen_q", "cu_seqlen_q / cu_seqlen_k for packed [T, H, D] inputs")
            cu_q = cu_seqlen_q if cu_seqlen_q is not None else cu_seqlen_k
            cu_k = cu_seqlen_k if cu_seqlen_k is not None else cu_seqlen_q
            return attention(q, k, v, pattern, softmax_scale=sm_scale, cu_seqlens_q=cu_q.to(torch.int32),
                             cu_seqlens_k=cu_k.to(torch.int32), layout="thd", return_lse=return_lse,
                             deterministic=self.deterministic)
        if left_paddings is not None or seqlens is not None:
            return self._padded_forward(q, k, v, pattern, sm_scale, layout, left_paddings, seqlens, return_lse)
        return attention(q, k, v, pattern, softmax_scale=sm_scale, layout=layout, return_lse=return_lse,
                         deterministic=self.deterministic)

    def _padded_forward(self, q, k, v, pattern, sm_scale, layout, left_paddings, seqlens, return_lse):
        """Inference with left padding (tokens [pad_b, S) are real) or right padding (tokens [0, len_b)):
        each sequence is run on its real tokens (views, no copies); padded rows return 0 and lse -inf."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            raise invalid("left_paddings", "inference only (no gradients) with left_paddings / seqlens, as dkernel")
        qb, kb, vb = (x if layout == "bshd" else (x.transpose(1, 2) if layout == "bhsd" else x.transpose(0, 1))
                      for x in (q, k, v))
        B, Sq, H = qb.shape[0], qb.shape[1], qb.shape[2]
        Sk = kb.shape[1]
        if Sq != Sk:
            raise invalid("left_paddings", f"q and k of one length with padding, got {Sq} and {Sk}")
        out = torch.zeros_like(qb)
        lse = torch.full((B, H, Sq), float("-inf"), dtype=torch.float32, device=q.device)
        pads = left_paddings.tolist() if left_paddings is not None else [0] * B
        lens = seqlens.tolist() if seqlens is not None else [Sq - p for p in pads]
        for b in range(B):
            lo, hi = int(pads[b]), int(pads[b]) + int(lens[b])
            if not 0 <= lo <= hi <= Sq:
                raise invalid("seqlens", f"real tokens within [0, {Sq}), got [{lo}, {hi}) for sequence {b}")
            if hi == lo:
                continue
            o, l = attention(qb[b:b + 1, lo:hi], kb[b:b + 1, lo:hi], vb[b:b + 1, lo:hi], pattern,
                             softmax_scale=sm_scale, return_lse=True)
            out[b:b + 1, lo:hi] = o
            lse[b:b + 1, :, lo:hi] = l
        out = out if layout == "bshd" else (out.transpose(1, 2) if layout == "bhsd" else out.transpose(0, 1))
        return (out, lse) if return_lse else out


class SparseAttention(_S2AttentionBase):
    """Block-sparse attention from a block mask, dkernel's `SparseAttention(block_size, sparse_pattern, ...)`.

    sparse_pattern: bool/uint8 [nq_blocks, nk_blocks] or per head [heads, nq_blocks, nk_blocks] (heads = 1,
    the number of KV heads or of q heads). The pattern for the heads of the inputs is built on the first call;
    under torch.compile pass `num_heads` (and `num_kv_heads`) here, or call once eagerly, so it exists already.
    """

    def __init__(self, block_size, sparse_pattern, *, causal=True, seq_dim=None, block_m=None, block_n=None,
                 deterministic=False, num_heads=None, num_kv_heads=None, **kwargs):
        super().__init__(causal, seq_dim, deterministic)
        if int(block_size) < 16 or int(block_size) & (int(block_size) - 1):
            raise invalid("block_size", f"a power of 2 >= 16, got {block_size}")
        mask = sparse_pattern.detach().to("cpu") if isinstance(sparse_pattern, torch.Tensor) else sparse_pattern
        mask = np.asarray(mask)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.ndim != 3:
            raise invalid("sparse_pattern", f"shape [rows, cols] or [heads, rows, cols], got {list(mask.shape)}")
        self.block_size = int(block_size)
        self.sparse_pattern = np.ascontiguousarray(mask != 0)
        self.max_seqlen = max(mask.shape[1:]) * self.block_size
        self._patterns = {}
        if num_heads is not None:
            self.pattern_for(int(num_heads), int(num_kv_heads if num_kv_heads is not None else num_heads))

    def pattern_for(self, num_heads, num_kv_heads):
        key = (int(num_heads), int(num_kv_heads))
        if key not in self._patterns:
            self._patterns[key] = _patterns.block_mask_pattern(self.sparse_pattern, key[0], self.block_size,
                                                               self.causal, key[1])
            pattern_key(self._patterns[key])  # registered outside any compiled region
        return self._patterns[key]


class LocalStrideSparseAttention(_S2AttentionBase):
    """dkernel's `LocalStrideSparseAttention`: local window + vertical stride, per-head phases, dense heads,
    GQA, and `active_head_range` (tensor-parallel head slices: the slice's pattern is the slice of the full
    one; head boundaries must fall on KV-group boundaries)."""

    def __init__(self, num_heads, max_seq_len, block_size, local_blocks, vert_stride, *, homo_head=False,
                 num_dense_heads=0, num_kv_heads=None, active_head_range=None, head_sliding_offset=0,
                 block_m=None, block_n=None, causal=True, seq_dim=None, deterministic=False, **kwargs):
        super().__init__(causal, seq_dim, deterministic)
        if int(vert_stride) < 1:
            raise invalid("vert_stride", f">= 1 (1 is dense attention), got {vert_stride}")
        self.num_heads, self.max_seq_len, self.block_size = int(num_heads), int(max_seq_len), int(block_size)
        self.local_blocks, self.vert_stride = int(local_blocks), int(vert_stride)
        self.homo_head, self.num_dense_heads = bool(homo_head), int(num_dense_heads)
        self.num_kv_heads = int(num_kv_heads) if num_kv_heads is not None else None
        self.head_sliding_offset = int(head_sliding_offset)
        self.active_head_range = tuple(active_head_range) if active_head_range is not None else None
        self.pattern = self._build_pattern()
        pattern_key(self.pattern)  # registered now, outside any compiled region

    def _build_pattern(self):
        H = self.num_heads
        Hkv = self.num_kv_heads if self.num_kv_heads is not None else H
        if H % Hkv:
            raise invalid("num_kv_heads", f"a divisor of num_heads {H}, got {Hkv}")
        step = max(1, self.vert_stride // H)  # dkernel: the vertical phase moves by V // num_heads per head
        h0, h1 = self.active_head_range if self.active_head_range is not None else (0, H)
        if not 0 <= h0 < h1 <= H:
            raise invalid("active_head_range", f"(start, end) with 0 <= start < end <= {H}, got {(h0, h1)}")
        group = H // Hkv  # pattern heads are KV heads (one pattern per group) unless num_kv_heads is None
        if h0 % group or h1 % group:
            raise invalid("active_head_range", f"bounds on KV-group boundaries (multiples of {group}), got {(h0, h1)}")
        p0, p1, P = h0 // group, h1 // group, Hkv
        dense_in_slice = max(0, p1 - max(p0, P - self.num_dense_heads))
        return _patterns.local_stride(
            h1 - h0, self.block_size, self.local_blocks, self.vert_stride, causal=self.causal,
            homo_head=self.homo_head, head_sliding_step=None if self.homo_head else step,
            head_sliding_offset=self.head_sliding_offset + (0 if self.homo_head else p0 * step),
            num_dense_heads=dense_in_slice, num_kv_heads=(h1 - h0) // group)

    def pattern_for(self, num_heads, num_kv_heads):
        expect = self.active_head_range[1] - self.active_head_range[0] if self.active_head_range else self.num_heads
        if num_heads != expect:
            raise invalid("q", f"{expect} heads (num_heads / active_head_range), got {num_heads}")
        return self.pattern

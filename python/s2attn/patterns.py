"""Pattern constructors (mirroring the C++ ones)."""
import numpy as np

from . import _s2attn
from ._errors import invalid

Pattern = _s2attn.Pattern

_VERT = {"absolute": _s2attn.VertPosition.absolute, "relative": _s2attn.VertPosition.relative}


def local_stride(num_heads, block_size=64, local_blocks=4, vert_stride=4, *, causal=True, homo_head=False,
                 head_sliding_step=None, head_sliding_offset=0, num_dense_heads=0, num_kv_heads=None,
                 per_q_head=False, local_right=None, vert_position=None):
    """The local + vertical-stride pattern of S2-Attention (dkernel's LocalStrideSparseAttention).

    Head h (its KV head unless per_q_head) sees, below the diagonal, its last `local_blocks` blocks and the
    key blocks j with (j + h * head_sliding_step + head_sliding_offset) % vert_stride == 0.
    """
    if vert_position is not None and vert_position not in _VERT:
        raise invalid("vert_position", f"'absolute' or 'relative', got {vert_position!r}")
    return _s2attn.local_stride(
        int(num_heads), int(block_size), int(local_blocks), int(vert_stride), bool(causal), bool(homo_head),
        head_sliding_step, int(head_sliding_offset), int(num_dense_heads), num_kv_heads, bool(per_q_head),
        local_right, None if vert_position is None else _VERT[vert_position])


def dense(num_heads, block_size=64, causal=True, num_kv_heads=None):
    """Every key block visible (causal: at or below the diagonal)."""
    return _s2attn.dense(int(num_heads), int(block_size), bool(causal), num_kv_heads)


def block_mask_pattern(mask, num_heads, block_size=64, causal=True, num_kv_heads=None):
    """An arbitrary per-head block mask [heads, rows, cols] (or [rows, cols]); heads is 1, num_kv_heads or
    num_heads. Rows and columns are absolute block indices."""
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise invalid("mask", f"shape [heads, rows, cols] or [rows, cols], got {list(m.shape)}")
    if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.integer):
        raise invalid("mask", f"a bool or integer array, got {m.dtype}")
    m = np.ascontiguousarray(m != 0, dtype=np.uint8)
    return _s2attn.block_mask_pattern(m, int(num_heads), int(block_size), bool(causal), num_kv_heads)

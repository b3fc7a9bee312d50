"""s2attn for PyTorch: differentiable ops (torch.library custom ops, so torch.compile(fullgraph=True) has no
graph break), dkernel-compatible modules, layouts bshd / bhsd / sbhd / thd without copies, and the LSE merge
of partitions. The current CUDA stream is used for CUDA tensors.

    from s2attn.torch import attention, LocalStrideSparseAttention, SparseAttention, combine_attn_partitions
"""
from .functional import attention, LAYOUTS
from .modules import SparseAttention, LocalStrideSparseAttention
from .combine import combine_attn_partitions
from ._registry import pattern_key, release_pattern

__all__ = ["attention", "LAYOUTS", "SparseAttention", "LocalStrideSparseAttention", "combine_attn_partitions",
           "pattern_key", "release_pattern"]

"""s2attn: S2-Attention (sparsely-sharded block-sparse attention) kernels.

Patterns: `local_stride`, `dense`, `block_mask_pattern` (and `Pattern.with_*` rules).
Ops: `attention`, `attention_backward`. Inputs: numpy arrays (bf16 via ml_dtypes) or torch tensors.
"""
from ._errors import S2AttnError, InvalidArgumentError, DTypeError, UnsupportedError, DeviceError
from .patterns import Pattern, local_stride, dense, block_mask_pattern
from .ops import attention, attention_backward, backward_workspace_size
from .paged import (paged_attention, paged_workspace_size, paged_num_splits, combine_partitions,  # noqa: F401
                    needed_key_blocks, kv_cache_footprint)
from ._s2attn import backend_available

__version__ = "0.1.0"

__all__ = [
    "S2AttnError", "InvalidArgumentError", "DTypeError", "UnsupportedError", "DeviceError",
    "Pattern", "local_stride", "dense", "block_mask_pattern",
    "attention", "attention_backward", "backward_workspace_size", "backend_available",
]

"""Sparse-aware context parallelism: S2 attention over a sequence sharded across a process group.

Planning needs no torch (`Sharding`, `plan_context_parallel`, `CommPlan`); the attention itself runs on
torch.distributed (NCCL on GPUs, gloo on CPU) and is imported on first use:

    from s2attn.distributed import Sharding, context_parallel_attention
    sharding = Sharding(seqlen, world_size, "zigzag")
    out = context_parallel_attention(q_local, k_local, v_local, pattern, sharding)

See docs/context_parallel.md.
"""
from .sharding import KINDS, Sharding
from .planner import CommPlan, plan_context_parallel

_TORCH_NAMES = ("context_parallel_attention", "ContextParallelAttention")

__all__ = ["KINDS", "Sharding", "CommPlan", "plan_context_parallel", *_TORCH_NAMES]


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import attention

        return getattr(attention, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

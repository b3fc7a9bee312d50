"""Framework-agnostic array handling: what the native module accepts, and output allocation.

numpy arrays and torch tensors reach the native module through DLPack. numpy has no DLPack bfloat16,
so `ml_dtypes.bfloat16` arrays travel as uint16 views of the same memory.
"""
import numpy as np

from ._errors import invalid, DTypeError


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _bf16_numpy_dtype():
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes is a dependency
        return None
    return np.dtype(ml_dtypes.bfloat16)


_torch_to_dlpack = None


def _torch_capsule(x):
    """A DLPack capsule of the plain torch tensor x (torch.utils.dlpack.to_dlpack, ~0.5 us), which the binding
    imports as it is. Handed the tensor, the binding calls x.__dlpack__(): ~4 us of Python per tensor, which
    was most of an eager paged-decode call's host time (~45 us for its 6 tensors)."""
    global _torch_to_dlpack
    if _torch_to_dlpack is None:
        import torch.utils.dlpack

        _torch_to_dlpack = torch.utils.dlpack.to_dlpack
    return _torch_to_dlpack(x)


def native(x, name):
    """The object to hand to the native module for argument `name` (no copy)."""
    if x is None:
        return None
    if _is_torch(x):
        if x.requires_grad:
            x = x.detach()
        t = type(x)
        if t.__name__ == "Tensor" and t.__module__ == "torch":  # subclasses keep their own __dlpack__
            return _torch_capsule(x)
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            raise invalid(name, "dtype float32, float16 or bfloat16, got uint16", DTypeError)
        bf16 = _bf16_numpy_dtype()
        if bf16 is not None and x.dtype == bf16:
            return x.view(np.uint16)
        return x
    if hasattr(x, "__dlpack__"):
        return x
    raise invalid(name, f"a numpy array, a torch tensor or a DLPack array, got {type(x).__name__}")


def empty_like_shape(ref, shape, dtype=None):
    """An uninitialised array of `shape` in ref's framework and device; dtype defaults to ref's."""
    if _is_torch(ref):
        import torch

        return torch.empty(shape, dtype=ref.dtype if dtype is None else getattr(torch, dtype), device=ref.device)
    if isinstance(ref, np.ndarray):
        return np.empty(shape, dtype=ref.dtype if dtype is None else np.dtype(dtype))
    raise invalid("q", "a numpy array or a torch tensor when outputs are not given (pass out=, lse=)")


def shape_of(x):
    return tuple(int(s) for s in x.shape)


def stream_of(x):
    """The CUDA stream to launch on: torch's current stream for CUDA tensors, else 0."""
    if _is_torch(x) and x.is_cuda:
        import torch

        return torch.cuda.current_stream(x.device).cuda_stream
    return 0

"""Attention forward and backward on numpy arrays, torch tensors or any DLPack array."""
from . import _s2attn
from ._arrays import native, empty_like_shape, shape_of, stream_of
from ._errors import invalid


def _lse_shape(q, cu_seqlens_q):
    s = shape_of(q)
    if cu_seqlens_q is not None:
        if len(s) != 3:
            raise invalid("q", f"rank 3 [total_q, heads, head_dim] with cu_seqlens, got {list(s)}")
        return (s[1], s[0])
    if len(s) != 4:
        raise invalid("q", f"rank 4 [batch, seqlen_q, heads, head_dim], got {list(s)}")
    return (s[0], s[2], s[1])


def attention(q, k, v, pattern, *, softmax_scale=None, cu_seqlens_q=None, cu_seqlens_k=None, q_offset=None,
              return_lse=False, out=None, lse=None, num_threads=0, backend="auto"):
    """S2 attention: softmax(scale * q k^T + pattern mask) v.

    q [B, Sq, H, D], k/v [B, Sk, Hkv, D] (any strides, last dim contiguous), or varlen [T, H, D] with
    cu_seqlens_q/k int32 [B+1]. Returns out (and lse float32 [B, H, Sq] / [H, Tq] when return_lse).
    Rows that see no key return 0 and lse -inf. backend: "auto" (the tensors' device and the GPU decide),
    "cpu", "cuda_sm80" (portable CUDA path) or "cuda_sm90" (Hopper path; an error where it has no kernel).
    """
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")
    if out is None:
        out = empty_like_shape(q, shape_of(q))
    if lse is None and return_lse:
        lse = empty_like_shape(q, _lse_shape(q, cu_seqlens_q), "float32")
    _s2attn.forward(pattern, native(q, "q"), native(k, "k"), native(v, "v"), native(out, "out"),
                    native(lse, "lse"), softmax_scale, native(cu_seqlens_q, "cu_seqlens_q"),
                    native(cu_seqlens_k, "cu_seqlens_k"), q_offset, int(num_threads), stream_of(q),
                    str(backend))
    return (out, lse) if return_lse else out


def attention_backward(dout, q, k, v, out, lse, pattern, *, softmax_scale=None, cu_seqlens_q=None,
                       cu_seqlens_k=None, q_offset=None, deterministic=False, dq=None, dk=None, dv=None,
                       num_threads=0, backend="auto", workspace=None):
    """Gradients (dq, dk, dv) of `attention` given dout, the forward's out and lse.

    workspace (CUDA only, optional): a uint8 device buffer of at least `backward_workspace_size(...)` bytes
    (contiguous, 16-byte aligned); without one the CUDA backward allocates its scratch on the stream.
    deterministic: bitwise-repeatable gradients (on CUDA, dQ without atomics). Without it the Hopper
        backward adds dQ with reductions from its KV kernel at head dim 128 (fused dQ; S2ATTN_SM90_FUSED_DQ=0
        turns it off) and is bitwise repeatable otherwise;
        the portable one uses atomics for some patterns.
    """
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")
    if lse is None:
        raise invalid("lse", "the log-sum-exp the forward returned (attention(..., return_lse=True))")
    dq = empty_like_shape(q, shape_of(q)) if dq is None else dq
    dk = empty_like_shape(k, shape_of(k)) if dk is None else dk
    dv = empty_like_shape(v, shape_of(v)) if dv is None else dv
    _s2attn.backward(pattern, native(q, "q"), native(k, "k"), native(v, "v"), native(out, "out"),
                     native(lse, "lse"), native(dout, "dout"), native(dq, "dq"), native(dk, "dk"),
                     native(dv, "dv"), softmax_scale, native(cu_seqlens_q, "cu_seqlens_q"),
                     native(cu_seqlens_k, "cu_seqlens_k"), q_offset, bool(deterministic), int(num_threads),
                     stream_of(q), str(backend), native(workspace, "workspace"))
    return dq, dk, dv


def backward_workspace_size(q, k, v, pattern, *, cu_seqlens_q=None, cu_seqlens_k=None, q_offset=None,
                            deterministic=False, backend="auto"):
    """Bytes of device scratch `attention_backward` needs for these operands (0 for CPU arrays)."""
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")
    return int(_s2attn.backward_workspace_size(pattern, native(q, "q"), native(k, "k"), native(v, "v"),
                                               native(cu_seqlens_q, "cu_seqlens_q"),
                                               native(cu_seqlens_k, "cu_seqlens_k"), q_offset, bool(deterministic),
                                               str(backend)))

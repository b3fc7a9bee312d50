"""Inference on a paged KV cache (vLLM layout): decode, speculative decode, chunked prefill; the LSE combine
of partial outputs; KV-cache efficiency queries. See docs/inference.md."""
import numpy as np

from . import _s2attn
from ._arrays import empty_like_shape, native, shape_of, stream_of
from ._errors import invalid


def _check_pattern(pattern):
    if not isinstance(pattern, _s2attn.Pattern):
        raise invalid("pattern", f"an s2attn Pattern, got {type(pattern).__name__}")


def _lse_shape(q, cu_seqlens_q):
    s = shape_of(q)
    if cu_seqlens_q is not None:
        if len(s) != 3:
            raise invalid("q", f"rank 3 [total_q, heads, head_dim] with cu_seqlens_q, got {list(s)}")
        return (s[1], s[0])
    if len(s) != 4:
        raise invalid("q", f"rank 4 [batch, q_len, heads, head_dim], got {list(s)}")
    return (s[0], s[2], s[1])


def _splits(num_splits):
    if num_splits is None:
        return 0
    if int(num_splits) < 1:
        raise invalid("num_splits", f">= 1 (or None: automatic), got {num_splits}")
    return int(num_splits)


def _plan(q, k_pages, v_pages, block_table, context_lens, pattern, cu_seqlens_q, num_splits, backend):
    _check_pattern(pattern)
    return _s2attn.paged_plan(pattern, native(q, "q"), native(k_pages, "k_pages"), native(v_pages, "v_pages"),
                              native(block_table, "block_table"), native(context_lens, "context_lens"),
                              native(cu_seqlens_q, "cu_seqlens_q"), _splits(num_splits), str(backend))


def paged_workspace_size(q, k_pages, v_pages, block_table, context_lens, pattern, *, cu_seqlens_q=None,
                         num_splits=None, backend="auto"):
    """Bytes of workspace `paged_attention` needs for these arguments (0: none). Reads shapes only, so it can
    size a buffer before a CUDA-graph capture."""
    return int(_plan(q, k_pages, v_pages, block_table, context_lens, pattern, cu_seqlens_q, num_splits,
                     backend)[1])


def paged_num_splits(q, k_pages, v_pages, block_table, context_lens, pattern, *, cu_seqlens_q=None,
                     num_splits=None, backend="auto"):
    """The split-KV count `paged_attention` uses (1 on the CPU)."""
    return int(_plan(q, k_pages, v_pages, block_table, context_lens, pattern, cu_seqlens_q, num_splits,
                     backend)[0])


def paged_attention(q, k_pages, v_pages, block_table, context_lens, pattern, *, softmax_scale=None,
                    cu_seqlens_q=None, return_lse=False, out=None, lse=None, workspace=None, num_splits=None,
                    num_threads=0, backend="auto"):
    """S2 attention of q against a paged KV cache.

    k_pages/v_pages [num_pages, page_size, Hkv, D]; block_table int32 [B, max_pages] (or head-paged
    [B, Hkv, max_pages] with pages [num_pages, page_size, 1, D]); context_lens int32 [B] (the new tokens
    included). q [B, q_len, H, D] or varlen [T, H, D] with cu_seqlens_q int32 [B+1]; query row r of sequence
    b sits at position context_lens[b] - q_len_b + r. Returns out (and lse float32 [B, H, q_len] / [H, T]).

    CUDA: with split-KV the op needs `workspace` (paged_workspace_size bytes, any dtype); when not given it is
    allocated here, which a CUDA-graph capture does not allow: pass it (and out, lse) when capturing.
    """
    _check_pattern(pattern)
    if out is None:
        out = empty_like_shape(q, shape_of(q))
    if lse is None and return_lse:
        lse = empty_like_shape(q, _lse_shape(q, cu_seqlens_q), "float32")
    if workspace is None:
        need = paged_workspace_size(q, k_pages, v_pages, block_table, context_lens, pattern,
                                    cu_seqlens_q=cu_seqlens_q, num_splits=num_splits, backend=backend)
        if need > 0:
            workspace = empty_like_shape(q, (need,), "uint8")
    _s2attn.paged_attention(pattern, native(q, "q"), native(k_pages, "k_pages"), native(v_pages, "v_pages"),
                            native(block_table, "block_table"), native(context_lens, "context_lens"),
                            native(out, "out"), native(lse, "lse"), softmax_scale,
                            native(cu_seqlens_q, "cu_seqlens_q"), native(workspace, "workspace"),
                            _splits(num_splits), int(num_threads), stream_of(q), str(backend))
    return (out, lse) if return_lse else out


def combine_partitions(outs, lses, *, out=None, lse=None, num_threads=0):
    """Merge attention outputs over disjoint key ranges of the same queries.

    outs: a sequence (or a stacked array) of P outputs [B, S, H, D] / [T, H, D]; lses: their float32 LSEs
    [B, H, S] / [H, T]. Returns (out, lse): lse = log(sum exp(lse_p)), out = sum exp(lse_p - lse) out_p.
    Rows whose partitions all have lse -inf get 0 and -inf.
    """
    outs = list(outs)
    lses = list(lses)
    if not outs:
        raise invalid("outs", "at least one partition")
    if out is None:
        out = empty_like_shape(outs[0], shape_of(outs[0]))
    if lse is None:
        lse = empty_like_shape(outs[0], shape_of(lses[0]) if lses else (), "float32")
    _s2attn.combine_partitions([native(o, "outs") for o in outs], [native(x, "lses") for x in lses],
                               native(out, "out"), native(lse, "lse"), int(num_threads), stream_of(outs[0]))
    return out, lse


def needed_key_blocks(pattern, kv_head, context_len, max_context_len=None):
    """Key blocks (ascending, int32) of a sequence with context_len cached tokens that KV head kv_head still
    needs for the queries to come (positions context_len .. max_context_len - 1; None: unbounded)."""
    _check_pattern(pattern)
    blocks = _s2attn.needed_key_blocks(pattern, int(kv_head), int(context_len), int(max_context_len or 0))
    return np.asarray(blocks, dtype=np.int32)


def _dtype_name(dtype):
    """'bfloat16' from a string, a torch dtype (torch.bfloat16) or a numpy / ml_dtypes dtype."""
    if isinstance(dtype, str):
        return dtype
    name = str(dtype).split(".")[-1]
    if name in ("bfloat16", "float16", "float32", "float64"):
        return name
    return np.dtype(dtype).name


def kv_cache_footprint(pattern, context_len, page_size, head_dim=128, dtype="bfloat16", max_context_len=None):
    """What a cache of one sequence keeps when it drops the key blocks no future query needs (DESIGN 1.3).

    Returns a dict: dense_pages / dense_bytes (the full cache), vllm_pages / vllm_bytes (vLLM layout: a page
    is kept when any KV head needs one of its tokens), pages_per_kv_head, head_paged_pages /
    head_paged_bytes (one page per KV head). Bytes count K and V."""
    _check_pattern(pattern)
    return _s2attn.kv_cache_footprint(pattern, int(context_len), int(page_size), int(head_dim),
                                      _dtype_name(dtype), int(max_context_len or 0))

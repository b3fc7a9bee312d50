"""Independent numpy reference for the s2attn tests.

Everything here is transcribed from the written definition (shared DESIGN.md section 1 and
docs/python_api.md), not from the C++ code, and it never imports s2attn:

    ph         = h // (num_heads // num_kv_heads)       (h itself when per_q_head)
    step       = head_sliding_step or max(1, V // num_heads)     (QUERY head count)
    phase      = (0 if homo_head else ph * step) + head_sliding_offset
    local      = i - j < L_left and j - i < L_right     (causal: L_right = 1)
    vertical   = absolute: (j + phase) % V == 0
                 relative: d % V == 0, d = max(i - j - L_left + 1, 0) + max(j - i - L_right + 1, 0)
    rules      = j < sink | i < dense_prefix | range rules | ph in dense heads
    attends    = (local | vertical | rules) and (not causal or j <= i)

A block-mask pattern is mask[mask_head(h), i, j] AND causality. The element mask of an attention call:
query row r sits at absolute position q_offset + r (q_offset defaults to Sk - Sq), key t at t; the
element is visible iff its block is visible and (not causal or t <= position).

The attention reference is a float64 dense masked softmax; rows that see no key give output 0 and
lse -inf. The gradients are the float64 analytic gradients of that reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

F64 = np.float64


# ---------------------------------------------------------------------------------------------------------
# Patterns


@dataclass
class RangeRule:
    begin: int
    end: int
    stride: int = 1
    relative: bool = False


@dataclass
class RefPattern:
    """A pattern as the docs define it. kind: 'local_stride', 'dense' or 'mask'."""

    num_heads: int
    block_size: int = 64
    causal: bool = True
    num_kv_heads: Optional[int] = None
    kind: str = "local_stride"
    # local-stride parameters
    local_blocks: int = 1
    local_right: Optional[int] = None
    vert_stride: int = 0  # 0: no vertical rule
    homo_head: bool = False
    head_sliding_step: Optional[int] = None
    head_sliding_offset: int = 0
    num_dense_heads: int = 0
    per_q_head: bool = False
    vert_position: Optional[str] = None
    # per-context-range rules
    sink: int = 0
    dense_prefix: int = 0
    ranges: list = field(default_factory=list)
    dense_heads: list = field(default_factory=list)
    # block mask [heads, rows, cols] (a 2-D mask is one shared head)
    mask: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.ndim == 2:
                m = m[None]
            self.mask = m != 0

    # derived values -------------------------------------------------------------------------------------
    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def num_pattern_heads(self) -> int:
        return self.num_heads if self.per_q_head else self.num_kv_heads

    @property
    def L(self) -> int:
        return self.local_blocks

    @property
    def R(self) -> int:
        if self.causal:
            return 1
        return self.local_blocks if self.local_right is None else self.local_right

    @property
    def step(self) -> int:
        if self.head_sliding_step is not None:
            return self.head_sliding_step
        return max(1, self.vert_stride // self.num_heads) if self.vert_stride > 0 else 1

    @property
    def vpos(self) -> str:
        if self.vert_position is not None:
            return self.vert_position
        return "absolute" if self.causal else "relative"

    def pattern_head(self, h):
        return h if self.per_q_head else h // self.group

    def dense_head_set(self) -> set:
        n = self.num_pattern_heads
        s = set(range(n - self.num_dense_heads, n))
        s.update(int(x) for x in self.dense_heads)
        return s

    def phase(self, ph):
        base = 0 if self.homo_head else ph * self.step
        return base + self.head_sliding_offset

    def mask_head(self, h):
        mh = self.mask.shape[0]
        if mh == 1:
            return 0
        if mh == self.num_heads:
            return h
        assert mh == self.num_kv_heads
        return h // self.group

    # scalar transcription ---------------------------------------------------------------------------------
    def attends(self, h: int, i: int, j: int) -> bool:
        """Plain-Python transcription, one triple at a time."""
        if self.causal and j > i:
            return False
        if self.kind == "dense":
            return True
        if self.kind == "mask":
            m = self.mask
            if i < 0 or j < 0 or i >= m.shape[1] or j >= m.shape[2]:
                return False
            return bool(m[self.mask_head(h), i, j])
        ph = self.pattern_head(h)
        if ph in self.dense_head_set():
            return True
        if i < self.dense_prefix or j < self.sink:
            return True
        if i - j < self.L and j - i < self.R:
            return True
        phase = self.phase(ph)
        if self.vert_stride > 0:
            if self.vpos == "relative":
                d = max(i - j - self.L + 1, 0) + max(j - i - self.R + 1, 0)
                if d % self.vert_stride == 0:
                    return True
            elif (j + phase) % self.vert_stride == 0:  # Python % is the non-negative residue
                return True
        for r in self.ranges:
            c = i - j if r.relative else j
            if r.begin <= c < r.end and (j + phase) % r.stride == 0:
                return True
        return False

    # vectorised transcription -------------------------------------------------------------------------------
    def block_mask(self, nq: int, nk: Optional[int] = None, q_first_block: int = 0) -> np.ndarray:
        """bool [num_heads, nq, nk]: rows are absolute query blocks q_first_block + [0, nq)."""
        if nk is None:
            nk = nq
        H = self.num_heads
        h = np.arange(H)[:, None, None]
        i = (q_first_block + np.arange(nq))[None, :, None]
        j = np.arange(nk)[None, None, :]
        shape = (H, nq, nk)
        if self.kind == "dense":
            vis = np.ones(shape, bool)
        elif self.kind == "mask":
            m = self.mask
            vis = np.zeros(shape, bool)
            for hh in range(H):
                rows = q_first_block + np.arange(nq)
                ok_r = (rows >= 0) & (rows < m.shape[1])
                cols = np.arange(nk)
                ok_c = cols < m.shape[2]
                sub = np.zeros((nq, nk), bool)
                sub[np.ix_(ok_r, ok_c)] = m[self.mask_head(hh)][np.ix_(rows[ok_r], cols[ok_c])]
                vis[hh] = sub
        else:
            ph = h if self.per_q_head else h // self.group
            phase = (0 if self.homo_head else ph * self.step) + self.head_sliding_offset
            vis = (i - j < self.L) & (j - i < self.R)
            if self.vert_stride > 0:
                if self.vpos == "relative":
                    d = np.maximum(i - j - self.L + 1, 0) + np.maximum(j - i - self.R + 1, 0)
                    vis = vis | (d % self.vert_stride == 0)
                else:
                    vis = vis | (np.mod(j + phase, self.vert_stride) == 0)
            vis = vis | (j < self.sink) | (i < self.dense_prefix)
            for r in self.ranges:
                c = (i - j) if r.relative else j
                vis = vis | ((c >= r.begin) & (c < r.end) & (np.mod(j + phase, r.stride) == 0))
            dense = np.zeros(self.num_pattern_heads, bool)
            for x in self.dense_head_set():
                dense[x] = True
            vis = vis | dense[ph]
            vis = np.broadcast_to(vis, shape).copy()
        if self.causal:
            vis &= np.broadcast_to(j <= i, shape)
        vis &= np.broadcast_to(i >= 0, shape)
        return vis

    def density(self, seqlen_q: int, seqlen_k: Optional[int] = None) -> float:
        """Visible (head, q block, k block) triples over the block grid of seqlen_q queries that end where the
        seqlen_k keys end, divided by the dense pattern's count (causal: the lower triangle)."""
        if seqlen_k is None:
            seqlen_k = seqlen_q
        bs = self.block_size
        first = (seqlen_k - seqlen_q) // bs
        last = (seqlen_k - 1) // bs
        nk = -(-seqlen_k // bs)
        bm = self.block_mask(last - first + 1, nk, first)
        i = np.arange(first, last + 1)[:, None]
        j = np.arange(nk)[None, :]
        dense = np.ones_like(bm[0]) if not self.causal else (j <= i)
        return bm.sum() / (self.num_heads * dense.sum())


def element_mask(pat: RefPattern, seqlen_q: int, seqlen_k: int, q_offset: Optional[int] = None) -> np.ndarray:
    """bool [H, Sq, Sk]: the token-level visibility of an attention call."""
    if q_offset is None:
        q_offset = seqlen_k - seqlen_q
    bs = pat.block_size
    pos = q_offset + np.arange(seqlen_q)
    t = np.arange(seqlen_k)
    qb = np.floor_divide(pos, bs)
    kb = t // bs
    lo = int(qb.min()) if seqlen_q else 0
    hi = int(qb.max()) + 1 if seqlen_q else 0
    lo_c = max(lo, 0)
    nk = int(kb.max()) + 1 if seqlen_k else 0
    H = pat.num_heads
    m = np.zeros((H, seqlen_q, seqlen_k), bool)
    if hi <= lo_c or nk == 0:
        return m
    bm = pat.block_mask(hi - lo_c, nk, lo_c)  # rows lo_c .. hi-1
    rows_ok = qb >= 0
    rsel = np.where(rows_ok, qb - lo_c, 0)
    m = bm[:, rsel][:, :, kb]  # [H, Sq, Sk]
    m &= rows_ok[None, :, None]
    if pat.causal:
        m &= (t[None, :] <= pos[:, None])[None]
    return m


# ---------------------------------------------------------------------------------------------------------
# Attention reference (float64)


def _f64(x):
    return np.asarray(x).astype(F64)


def attention_ref(q, k, v, mask, scale=None):
    """q [B, Sq, H, D], k/v [B, Sk, Hkv, D], mask bool [H, Sq, Sk] or [B, H, Sq, Sk].

    Returns (out [B, Sq, H, D], lse [B, H, Sq], probs [B, H, Sq, Sk]) in float64."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    B, Sq, H, D = q.shape
    Hkv = k.shape[2]
    g = H // Hkv
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    kk = np.repeat(k, g, axis=2)  # q head h uses kv head h // g
    vv = np.repeat(v, g, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, kk) * scale
    mask = np.broadcast_to(mask, s.shape)
    s = np.where(mask, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    mx_safe = np.where(np.isfinite(mx), mx, 0.0)
    p = np.where(mask, np.exp(s - mx_safe), 0.0)
    l = p.sum(axis=-1, keepdims=True)
    empty = l == 0
    p = p / np.where(empty, 1.0, l)
    out = np.einsum("bhqk,bkhd->bqhd", p, vv)
    with np.errstate(divide="ignore"):
        lse = np.where(empty, -np.inf, np.log(np.where(empty, 1.0, l)) + mx_safe)[..., 0]
    return out, lse, p


def attention_grad_ref(q, k, v, dout, mask, scale=None):
    """Analytic float64 gradients of sum(attention_ref(q, k, v) * dout): (dq, dk, dv)."""
    q64, k64, v64, do = _f64(q), _f64(k), _f64(v), _f64(dout)
    B, Sq, H, D = q64.shape
    Sk, Hkv = k64.shape[1], k64.shape[2]
    g = H // Hkv
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    out, _, p = attention_ref(q64, k64, v64, mask, scale)
    kk = np.repeat(k64, g, axis=2)
    vv = np.repeat(v64, g, axis=2)
    dv_full = np.einsum("bhqk,bqhd->bkhd", p, do)
    dp = np.einsum("bqhd,bkhd->bhqk", do, vv)
    delta = np.einsum("bqhd,bqhd->bhq", do, out)[..., None]
    ds = p * (dp - delta)
    dq = scale * np.einsum("bhqk,bkhd->bqhd", ds, kk)
    dk_full = scale * np.einsum("bhqk,bqhd->bkhd", ds, q64)
    dk = dk_full.reshape(B, Sk, Hkv, g, D).sum(axis=3)
    dv = dv_full.reshape(B, Sk, Hkv, g, D).sum(axis=3)
    return dq, dk, dv


def varlen_ref(q, k, v, cu_q, cu_k, pat: RefPattern, scale=None, dout=None, q_offset=None):
    """Varlen reference: q [Tq, H, D], k/v [Tk, Hkv, D]. Returns (out [Tq,H,D], lse [H,Tq]) and, with dout,
    also (dq, dk, dv)."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    Tq, H, D = q.shape
    out = np.zeros_like(q)
    lse = np.full((H, Tq), -np.inf)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        sq, sk = q1 - q0, k1 - k0
        if sq == 0:
            continue
        m = element_mask(pat, sq, sk, q_offset)
        o, l, _ = attention_ref(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], m, scale)
        out[q0:q1] = o[0]
        lse[:, q0:q1] = l[0]
        if dout is not None:
            a, bb, c = attention_grad_ref(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1],
                                          _f64(dout)[None, q0:q1], m, scale)
            dq[q0:q1] = a[0]
            dk[k0:k1] = bb[0]
            dv[k0:k1] = c[0]
    if dout is None:
        return out, lse
    return out, lse, (dq, dk, dv)


# ---------------------------------------------------------------------------------------------------------
# Comparison helpers


def rel_err(x, ref) -> float:
    """||x - ref|| / ||ref|| over the finite entries of ref (entries where ref is +-inf must match exactly)."""
    x = _f64(x)
    ref = _f64(ref)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    fin = np.isfinite(ref)
    if not np.array_equal(x[~fin], ref[~fin]):
        return float("inf")
    d = np.linalg.norm(x[fin] - ref[fin])
    n = np.linalg.norm(ref[fin])
    if n == 0:
        return float(d)
    return float(d / n)

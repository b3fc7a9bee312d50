"""Paged-KV test inputs shared by the CPU and GPU paged tests: random caches (shuffled pages, partial last
pages, pages nobody reads marked -1), the float64 reference per sequence, and the case list."""
from __future__ import annotations

import math

import numpy as np

import cases
from helpers import pattern_spec, randn
from reference import attention_ref, element_mask

# (name, context lens, q lens (int or list), page size, H, Hkv, D, dtype, pattern kind, block size, extras)
PAGED_CASES = [
    ("decode_mixed_ctx", [1, 100, 257, 64], 1, 16, 4, 2, 32, "f32", "ls", 16, {}),
    ("decode_page64_bs16", [300, 5, 129], 1, 64, 4, 1, 64, "f32", "ls", 16, {}),
    ("decode_page24_bs16", [333, 48, 17], 1, 24, 4, 2, 32, "f32", "ls_het", 16, {}),
    ("decode_page16_bs64", [700, 64, 65], 1, 16, 8, 2, 32, "f32", "ls", 64, {}),
    ("decode_page256_bs32", [600, 256, 1], 1, 256, 2, 2, 32, "f32", "rules", 32, {}),
    ("decode_per_q_head", [410, 90], 1, 32, 8, 2, 32, "f32", "ls_pq", 16, {}),
    ("decode_dense", [150, 33], 1, 16, 4, 2, 32, "f32", "dense", 16, {}),
    ("decode_mask", [200, 77, 1], 1, 16, 4, 2, 32, "f32", "maskkv", 16, {}),
    ("decode_bf16", [513, 70], 1, 16, 8, 2, 128, "bf16", "ls", 64, {}),
    ("decode_groups_of_3", [290, 70, 1], 1, 16, 9, 3, 32, "f32", "ls", 16, {}),  # G = 3, Hkv = 3
    ("decode_f16", [260, 31], 1, 64, 4, 4, 64, "f16", "ls_het", 32, {}),
    ("spec_decode_q4", [97, 300, 4, 2], 4, 16, 4, 2, 32, "f32", "ls", 16, {}),
    ("spec_decode_rules_bf16", [222, 50], 3, 48, 4, 2, 64, "bf16", "rules", 16, {}),
    ("chunked_prefill", [300, 180], 64, 16, 4, 2, 32, "f32", "ls", 16, {}),
    ("chunked_prefill_page40", [260], 100, 40, 4, 1, 64, "f32", "rules", 32, {}),
    ("varlen_q", [120, 45, 3, 400], [1, 7, 3, 40], 16, 4, 2, 32, "f32", "ls", 16, {"varlen": True}),
    ("varlen_q_empty_seq", [50, 60, 70], [5, 0, 9], 32, 4, 2, 32, "f32", "ls_het", 16, {"varlen": True}),
    ("head_paged", [333, 20, 129], 1, 16, 4, 2, 32, "f32", "ls", 16, {"head_paged": True}),
    ("head_paged_prefill", [250, 97], 20, 32, 8, 4, 32, "f32", "rules", 16, {"head_paged": True}),
]


def case_id(c):
    return c[0]


class PagedCase:
    """Inputs of one paged case. Attributes: spec, pattern (library), ref (RefPattern), q, k_pages, v_pages,
    block_table, context_lens, cu_seqlens_q (or None), seq_k / seq_v (per sequence [1, ctx, Hkv, D])."""

    def __init__(self, rng, c, drop_unneeded=False):
        name, ctx, qlens, ps, H, Hkv, D, dtype, kind, bs, extra = c
        self.name, self.dtype, self.H, self.Hkv, self.D, self.page_size = name, dtype, H, Hkv, D, ps
        self.varlen = extra.get("varlen", False)
        self.head_paged = extra.get("head_paged", False)
        B = len(ctx)
        self.ctx = np.asarray(ctx, np.int32)
        self.qlens = list(qlens) if isinstance(qlens, list) else [qlens] * B
        max_ctx = int(self.ctx.max())
        self.spec = pattern_spec(rng, kind, H, Hkv, bs, True, max_ctx - 1, max_ctx)
        self.pattern = cases.lib_from_spec(self.spec)
        self.ref = cases.ref_from_spec(self.spec)
        # contiguous keys per sequence, then scattered into shuffled pages
        self.seq_k = [randn(rng, (1, int(n), Hkv, D), dtype) for n in ctx]
        self.seq_v = [randn(rng, (1, int(n), Hkv, D), dtype) for n in ctx]
        max_pages = max(1, math.ceil(max_ctx / ps)) + int(rng.integers(0, 3))
        heads_per_page = 1 if self.head_paged else Hkv
        tables = Hkv if self.head_paged else 1  # block tables per sequence
        need_pages = sum(math.ceil(int(n) / ps) for n in ctx) * tables
        num_pages = need_pages + int(rng.integers(1, 5))
        perm = rng.permutation(num_pages).astype(np.int32)
        kp = np.zeros((num_pages, ps, heads_per_page, D), np.float32)
        vp = np.zeros_like(kp)
        # poison the pages: a wrong page read shows up
        kp[:] = 1e3
        vp[:] = np.nan
        table = np.full((B, tables, max_pages), -1, np.int32)
        nxt = 0
        for b in range(B):
            n = int(ctx[b])
            for t in range(tables):
                for p in range(math.ceil(n / ps)):
                    e = int(perm[nxt])
                    nxt += 1
                    table[b, t, p] = e
                    lo, hi = p * ps, min(n, (p + 1) * ps)
                    heads = slice(t, t + 1) if self.head_paged else slice(None)
                    kp[e, : hi - lo] = self.seq_k[b][0, lo:hi, heads].astype(np.float32)
                    vp[e, : hi - lo] = self.seq_v[b][0, lo:hi, heads].astype(np.float32)
        # partial last pages: their tails stay poisoned (keys past the context must never be read)
        if drop_unneeded:
            self._drop_unneeded(table)
        self.k_pages = kp.astype(np.dtype(self.seq_k[0].dtype))
        self.v_pages = vp.astype(np.dtype(self.seq_k[0].dtype))
        self.block_table = table if self.head_paged else np.ascontiguousarray(table[:, 0])
        self.context_lens = self.ctx
        if self.varlen:
            self.cu_seqlens_q = np.concatenate([[0], np.cumsum(self.qlens)]).astype(np.int32)
            self.q = randn(rng, (int(self.cu_seqlens_q[-1]), H, D), dtype)
        else:
            self.cu_seqlens_q = None
            self.q = randn(rng, (B, self.qlens[0], H, D), dtype)

    def _drop_unneeded(self, table):
        """Marks -1 every page that no KV head (head-paged: that KV head) can read for these queries: the
        key blocks needed from the first query's position on (needed_key_blocks) decide."""
        import s2attn

        ps, bs = self.page_size, self.spec["block_size"]
        for b, n in enumerate(self.ctx):
            n = int(n)
            first = max(0, n - self.qlens[b])
            keep = np.zeros((table.shape[1], table.shape[2]), bool)
            for hk in range(self.Hkv):
                row = hk if self.head_paged else 0
                # blocks of the first `first` tokens still needed, plus the queries' own blocks
                own = range(first // bs, -(-n // bs))
                for j in set(s2attn.needed_key_blocks(self.pattern, hk, first).tolist()) | set(own):
                    lo, hi = j * bs, min(n, (j + 1) * bs)
                    keep[row, lo // ps:(hi - 1) // ps + 1] = True
            table[b][~keep] = -1

    def q_of(self, b):
        """Sequence b's queries [1, q_len, H, D]."""
        if self.varlen:
            lo, hi = int(self.cu_seqlens_q[b]), int(self.cu_seqlens_q[b + 1])
            return self.q[None, lo:hi]
        return self.q[b:b + 1]

    def reference(self, scale=None):
        """float64 (out, lse) in the layout of q."""
        outs, lses = [], []
        for b in range(len(self.ctx)):
            qb = self.q_of(b)
            sq, n = qb.shape[1], int(self.ctx[b])
            m = element_mask(self.ref, sq, n, n - sq)
            o, l, _ = attention_ref(qb, self.seq_k[b], self.seq_v[b], m, scale)
            outs.append(o)
            lses.append(l)
        if self.varlen:
            return (np.concatenate([o[0] for o in outs], 0), np.concatenate([l[0] for l in lses], 1))
        return np.concatenate(outs, 0), np.concatenate(lses, 0)

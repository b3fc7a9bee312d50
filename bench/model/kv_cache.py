"""KV caches of the model's decode, one object per attention kind holding the layers of that kind.

ContiguousKVCache: [layers, B, capacity, Hkv, D] K and V, for the dense SDPA layers (and the masked
reference): SDPA reads the first `n` tokens as a view, no gather.

PagedKVCache: s2attn's paged layouts (include/s2attn/paged.h, docs/inference.md), page tables shared by its
layers (one pattern), pages in a pool per layer:
  layout "head": pages [num_pages, page_size, 1, D], table int32 [B, Hkv, max_pages]: each KV head has its
                 own page list, so a page holds one head's tokens and only the pages a head still needs are
                 kept (DESIGN 1.3). Entries of dropped pages are -1 and are never read.
  layout "vllm": pages [num_pages, page_size, Hkv, D], table int32 [B, max_pages]: a page is kept while any
                 KV head needs one of its tokens (for the S2 pattern nearly every page: nothing is saved).
Which pages are kept comes from s2attn.needed_key_blocks(pattern, kv_head, context_len): the key blocks a
query at a position >= context_len can still see. Pages are allocated on the host (a free list) when a
token lands in a page that has none, and freed by `evict`.

Both share the step protocol: `set_positions(start, count)` (host side: allocates, computes the write slots
on the device), then per layer `write(slot, k, v)` for tokens start .. start + count - 1 and the attention
over the first start + count tokens. Everything a step does on the device is static between
`set_positions` calls, so one decode step can be captured in a CUDA graph and replayed.
"""
import numpy as np
import torch

import s2attn

from .config import bad


class ContiguousKVCache:
    """K/V of `layers` layers, [B, capacity, Hkv, D] each (bshd: SDPA reads them as bhsd views)."""

    kind = "contiguous"

    def __init__(self, layers, batch, capacity, kv_heads, head_dim, dtype, device):
        shape = (layers, batch, capacity, kv_heads, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.capacity, self.start, self.count = capacity, 0, 0

    @staticmethod
    def bytes_per_sequence(layers, context, kv_heads, head_dim, elem_bytes):
        return 2 * layers * context * kv_heads * head_dim * elem_bytes

    @property
    def nbytes(self):
        return self.k.nbytes + self.v.nbytes

    def fill_random(self, generator=None):
        self.k.normal_(generator=generator)
        self.v.normal_(generator=generator)

    def set_positions(self, start, count):
        if start + count > self.capacity:
            raise bad("start", f"tokens up to {start + count} within the capacity {self.capacity}")
        self.start, self.count = int(start), int(count)

    def write(self, slot, k, v):
        """k/v [B, count, Hkv, D] of positions start .. start + count - 1."""
        self.k[slot, :, self.start:self.start + self.count] = k
        self.v[slot, :, self.start:self.start + self.count] = v

    def keys_values(self, slot):
        n = self.start + self.count
        return self.k[slot, :, :n], self.v[slot, :, :n]

    def evict(self):
        """Nothing to drop: a dense cache keeps every token."""


class PagePlan:
    """Which pages of each page table a paged cache keeps (tables: one per KV head, or one for all)."""

    def __init__(self, pattern, page_size, layout="head"):
        if layout not in ("head", "vllm"):
            raise bad("layout", f"'head' or 'vllm', got {layout!r}")
        self.pattern, self.page_size, self.layout = pattern, int(page_size), layout
        self.tables = pattern.num_kv_heads if layout == "head" else 1
        self._blocks = {}

    def blocks(self, table, context_len):
        """Key blocks among the first context_len tokens that table `table` keeps (a query at a position
        >= context_len may still see them); cached per (table, context_len)."""
        key = (table, context_len)
        if key not in self._blocks:
            heads = [table] if self.layout == "head" else range(self.pattern.num_kv_heads)  # vLLM: the union
            kept = set()
            for hk in heads:
                kept.update(s2attn.needed_key_blocks(self.pattern, hk, context_len).tolist())
            self._blocks[key] = kept
        return self._blocks[key]

    def pages(self, table, context_len):
        """Pages (ascending) holding a token of a block that `table` keeps at context_len tokens."""
        bs, ps = self.pattern.block_size, self.page_size
        pages = set()
        for j in self.blocks(table, context_len):
            lo, hi = j * bs, min(context_len, (j + 1) * bs)
            pages.update(range(lo // ps, (hi - 1) // ps + 1))
        return sorted(pages)

    def pages_for_step(self, context):
        """Pages per sequence in the state of a decode step at position context - 1: the pages kept with
        context - 1 tokens cached, plus the page the new token goes to."""
        last = (context - 1) // self.page_size
        return sum(len(set(self.pages(t, context - 1)) | {last}) for t in range(self.tables))


class PagedKVCache:
    """Paged K/V of `layers` layers sharing one pattern and one page table (see the module docstring)."""

    kind = "paged"

    def __init__(self, plan, layers, batch, num_pages, max_tokens, head_dim, dtype, device, num_splits=None):
        self.plan, self.pattern, self.layout = plan, plan.pattern, plan.layout
        self.batch, self.page_size, self.num_splits = int(batch), plan.page_size, num_splits
        self.kv_heads = plan.pattern.num_kv_heads
        per_page = 1 if self.layout == "head" else self.kv_heads
        self.max_pages = -(-int(max_tokens) // self.page_size)
        shape = (layers, int(num_pages), self.page_size, per_page, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.host_table = np.full((self.batch, plan.tables, self.max_pages), -1, dtype=np.int32)
        self.block_table = torch.empty(self.host_table.shape, dtype=torch.int32, device=device)
        self.free = list(range(int(num_pages) - 1, -1, -1))  # pages are taken from the end
        self.start, self.count, self.context = 0, 0, 0
        self.slots = self.context_lens = None
        self._workspace = {}

    @staticmethod
    def page_bytes(plan, head_dim, elem_bytes):
        """Bytes of one page, K and V, in one layer."""
        per_page = 1 if plan.layout == "head" else plan.pattern.num_kv_heads
        return 2 * plan.page_size * per_page * head_dim * elem_bytes

    @classmethod
    def for_step(cls, plan, layers, batch, context, head_dim, dtype, device, generator=None, num_splits=None):
        """A cache in the state of a decode step at position context - 1, holding exactly the pages that
        state needs, filled with random K/V (pages shuffled, as in a serving engine's pool)."""
        num_pages = batch * plan.pages_for_step(context)
        cache = cls(plan, layers, batch, num_pages, context, head_dim, dtype, device, num_splits=num_splits)
        cache.free = np.random.default_rng(0).permutation(num_pages).tolist()
        cache._allocate(0, context - 1, kept_at=context - 1)
        cache._allocate(context - 1, 1)
        cache._sync_table()
        cache.k.normal_(generator=generator)
        cache.v.normal_(generator=generator)
        cache.context = context - 1
        return cache

    # ---- page allocation ----------------------------------------------------------------------------------
    def _allocate(self, start, count, kept_at=None):
        """Pages for tokens start .. start + count - 1 of every (sequence, table) that has none; with
        kept_at, only the pages kept at that context."""
        if count <= 0:
            return
        ps = self.page_size
        lo, hi = start // ps, (start + count - 1) // ps
        if hi >= self.max_pages:
            raise bad("start", f"tokens within the cache's {self.max_pages * ps} (max_tokens)")
        for t in range(self.plan.tables):
            want = np.arange(lo, hi + 1) if kept_at is None else \
                np.array([p for p in self.plan.pages(t, kept_at) if lo <= p <= hi], dtype=np.int64)
            entries = self.host_table[:, t, want]  # [B, len(want)] (a copy)
            missing = entries < 0
            n = int(missing.sum())
            if n > len(self.free):
                raise bad("num_pages", f"a pool with {n - len(self.free)} more free pages")
            if n:
                entries[missing] = self.free[-n:]
                del self.free[-n:]
                self.host_table[:, t, want] = entries

    def _sync_table(self):
        self.block_table.copy_(torch.from_numpy(self.host_table))

    def evict(self):
        """Drop the pages no query from position `context` on needs (context = tokens cached)."""
        for t in range(self.plan.tables):
            drop = self.host_table[:, t] >= 0  # [B, max_pages]
            drop[:, self.plan.pages(t, self.context)] = False
            self.free.extend(self.host_table[:, t][drop].tolist())
            self.host_table[:, t][drop] = -1
        self._sync_table()

    def pages_in_use(self):
        return int((self.host_table >= 0).sum())

    @property
    def nbytes(self):
        return self.k.nbytes + self.v.nbytes

    # ---- the step protocol --------------------------------------------------------------------------------
    def set_positions(self, start, count):
        self._allocate(start, count)
        self._sync_table()
        self.start, self.count, self.context = int(start), int(count), int(start + count)
        dev = self.k.device
        pos = torch.arange(start, start + count, device=dev, dtype=torch.int64)
        page = self.block_table[:, :, pos // self.page_size].long()  # [B, tables, count]
        self.slots = page * self.page_size + pos % self.page_size
        self.context_lens = torch.full((self.batch,), self.context, dtype=torch.int32, device=dev)

    def write(self, slot, k, v):
        """k/v [B, count, Hkv, D] of positions start .. start + count - 1 into their pages."""
        D = k.shape[-1]
        if self.layout == "head":  # slots [B, Hkv, count]: one page row per (token, head)
            rows = self.slots.flatten()
            self.k[slot].view(-1, D)[rows] = k.transpose(1, 2).reshape(-1, D)
            self.v[slot].view(-1, D)[rows] = v.transpose(1, 2).reshape(-1, D)
        else:  # slots [B, 1, count]: one page row per token, every head
            rows = self.slots[:, 0].flatten()
            self.k[slot].view(-1, self.kv_heads, D)[rows] = k.reshape(-1, self.kv_heads, D)
            self.v[slot].view(-1, self.kv_heads, D)[rows] = v.reshape(-1, self.kv_heads, D)

    def splits_used(self):
        """The split-KV counts of the attention calls so far (one per query shape)."""
        return sorted({s for s, _ in self._workspace.values()})

    def attend(self, slot, q, pattern, scale):
        """s2attn.paged_attention of q [B, count, H, D] over the cache, with a split count and a workspace
        fixed on the first call of a shape (later calls allocate nothing but the output: capturable)."""
        kp, vp = self.k[slot], self.v[slot]
        bt = self.block_table if self.layout == "head" else self.block_table[:, 0]
        key = tuple(q.shape)
        if key not in self._workspace:
            lens = self.context_lens
            splits = s2attn.paged_num_splits(q, kp, vp, bt, lens, pattern, num_splits=self.num_splits)
            size = s2attn.paged_workspace_size(q, kp, vp, bt, lens, pattern, num_splits=splits)
            self._workspace[key] = (splits, torch.empty(max(size, 1), dtype=torch.uint8, device=q.device))
        splits, ws = self._workspace[key]
        return s2attn.paged_attention(q, kp, vp, bt, self.context_lens, pattern, softmax_scale=scale,
                                      workspace=ws, num_splits=splits)


class ModelCache:
    """The caches of a whole model: S2 layers share one head-paged cache (one pattern, one page table),
    dense and reference layers share one contiguous cache, layers without attention have none.
    `slot(i)` is what layer i's attention gets: (cache, index of the layer inside it)."""

    def __init__(self, attentions, make_paged, make_contiguous):
        groups = {}
        for i, a in enumerate(attentions):
            if a.kind != "none":
                groups.setdefault("paged" if a.kind == "s2" else "contiguous", []).append(i)
        s2 = {id(attentions[i]) for i in groups.get("paged", [])}
        if len(s2) > 1:
            raise bad("attentions", "one S2 attention object (one pattern) shared by the S2 layers")
        self.caches, self._slot = [], [(None, 0)] * len(attentions)
        for kind, layers in groups.items():
            c = make_paged(attentions[layers[0]].pattern, len(layers)) if kind == "paged" else \
                make_contiguous(len(layers))
            self.caches.append(c)
            for n, i in enumerate(layers):
                self._slot[i] = (c, n)
        self.start, self.count = 0, 0

    @classmethod
    def empty(cls, attentions, shape, batch, max_tokens, page_size, dtype, device, layout="head"):
        """Empty caches for up to max_tokens tokens per sequence; the paged pool holds every page (enough
        for a prefill that writes everything before `evict` drops what is not needed)."""
        def paged(pattern, n):
            plan = PagePlan(pattern, page_size, layout)
            pages = batch * plan.tables * -(-max_tokens // page_size)
            return PagedKVCache(plan, n, batch, pages, max_tokens, shape.head_dim, dtype, device)

        def contiguous(n):
            return ContiguousKVCache(n, batch, max_tokens, shape.kv_heads, shape.head_dim, dtype, device)

        return cls(attentions, paged, contiguous)

    @classmethod
    def for_step(cls, attentions, shape, batch, context, page_size, dtype, device, generator=None,
                 num_splits=None):
        """Caches in the state of a decode step at position context - 1 (context tokens after the step's
        write), filled with random K/V; the paged cache holds only the pages its KV heads still need
        (num_splits: the paged attention's split-KV count, None for the library's choice)."""
        def paged(pattern, n):
            return PagedKVCache.for_step(PagePlan(pattern, page_size), n, batch, context, shape.head_dim, dtype,
                                         device, generator=generator, num_splits=num_splits)

        def contiguous(n):
            c = ContiguousKVCache(n, batch, context, shape.kv_heads, shape.head_dim, dtype, device)
            c.fill_random(generator)
            return c

        cache = cls(attentions, paged, contiguous)
        cache.set_positions(context - 1, 1)
        return cache

    @staticmethod
    def bytes_per_sequence(attentions, shape, context, page_size, elem_bytes):
        """Bytes of K/V per sequence that `for_step` allocates, computed without allocating:
        {'total', 'paged', 'contiguous', 'paged_layers', 'contiguous_layers'}."""
        kinds = [a.kind for a in attentions]
        dense = sum(k in ("dense", "reference") for k in kinds)
        s2 = [a for a in attentions if a.kind == "s2"]
        out = dict(contiguous_layers=dense, paged_layers=len(s2), paged=0,
                   contiguous=ContiguousKVCache.bytes_per_sequence(dense, context, shape.kv_heads, shape.head_dim,
                                                                   elem_bytes))
        if s2:
            plan = PagePlan(s2[0].pattern, page_size)
            out["paged"] = len(s2) * plan.pages_for_step(context) * PagedKVCache.page_bytes(plan, shape.head_dim,
                                                                                          elem_bytes)
        out["total"] = out["paged"] + out["contiguous"]
        return out

    def slot(self, i):
        return self._slot[i]

    def set_positions(self, start, count):
        for c in self.caches:
            c.set_positions(start, count)
        self.start, self.count = int(start), int(count)

    def evict(self):
        for c in self.caches:
            c.evict()

    @property
    def nbytes(self):
        return sum(c.nbytes for c in self.caches)

"""s2attn.distributed: the sharding, the communication planner against the pattern's own block mask (no
processes), and context-parallel attention over 2 and 4 CPU processes (gloo) against the single-process result:
outputs, lse and gradients, both shardings, lengths that are not multiples of world * block, GQA, per-head
offsets, dense heads, per-q-head phases, sinks, block-mask patterns, a loss through the lse, layouts. The key
buffer's unread slots are NaN in the workers, proving that the kernels never read them."""
import datetime
import os
import tempfile

import numpy as np
import pytest

import s2attn
from s2attn import InvalidArgumentError, UnsupportedError
from s2attn.distributed import Sharding, plan_context_parallel


# ---------------------------------------------------------------------------------------------------------
# Sharding

@pytest.mark.parametrize("kind", ["contiguous", "zigzag"])
@pytest.mark.parametrize("world,seqlen", [(1, 5), (2, 64), (3, 173), (4, 128), (4, 8)])
def test_sharding_partitions_the_sequence(kind, world, seqlen):
    sh = Sharding(seqlen, world, kind)
    owner = np.full(seqlen, -1)
    for r in range(world):
        for s, e in sh.segments(r):
            assert (owner[s:e] == -1).all()
            owner[s:e] = r
    assert (owner >= 0).all()
    sizes = np.diff(sh.chunk_bounds())
    assert sizes.max() - sizes.min() <= 1
    x = np.arange(seqlen * 2).reshape(2, seqlen)
    shards = [sh.shard(x, r) for r in range(world)]
    assert np.array_equal(sh.unshard(shards), x)
    for r in range(world):
        assert np.array_equal(shards[r][0], sh.shard(np.arange(seqlen)[None], r)[0])
        assert np.array_equal(sh.local_index(r, shards[r][0]), np.arange(sh.local_len(r)))
    if kind == "zigzag" and world > 1:
        assert sh.segments(0) == ((0, sh.chunk_bounds()[1]), (sh.chunk_bounds()[-2], seqlen))


@pytest.mark.parametrize("args,argument", [((10, 2, "ring"), "sharding"), ((10, 0), "world_size"),
                                           ((3, 2, "zigzag"), "seqlen"), ((1, 2), "seqlen")])
def test_sharding_errors(args, argument):
    with pytest.raises(InvalidArgumentError) as e:
        Sharding(*args)
    assert e.value.argument == argument


# ---------------------------------------------------------------------------------------------------------
# Planner

def _patterns():
    rng = np.random.default_rng(7)
    mask = rng.random((2, 12, 12)) < 0.3
    return {
        "offsets": s2attn.local_stride(4, 16, local_blocks=2, vert_stride=3, head_sliding_step=2,
                                       head_sliding_offset=1),
        "gqa_dense_head": s2attn.local_stride(4, 16, local_blocks=3, vert_stride=4, num_kv_heads=2,
                                              num_dense_heads=1),
        "per_q_head_sink": s2attn.local_stride(4, 16, local_blocks=1, vert_stride=4, num_kv_heads=2,
                                               per_q_head=True).with_sink(1),
        "range_prefix": s2attn.local_stride(2, 32, local_blocks=2, vert_stride=5)
                              .with_range(2, 4, stride=1).with_dense_prefix(1),
        "homo": s2attn.local_stride(2, 16, local_blocks=2, vert_stride=2, homo_head=True),
        "dense": s2attn.dense(4, 16, num_kv_heads=2),
        "mask": s2attn.block_mask_pattern(mask, 4, 16, num_kv_heads=2),
    }


PATTERNS = _patterns()


def needed_tokens(pattern, sh, dst, segments=None):
    """Oracle: per KV head, the tokens held by other ranks that dst's queries (those of `segments`, default
    all) see, token-level from the pattern's to_block_mask and causality; and the owner of every token."""
    bs, S = pattern.block_size, sh.seqlen
    nb = -(-S // bs)
    m = np.asarray(pattern.to_block_mask(nb, nb)).astype(bool)  # [H, nb, nb]
    qpos = np.concatenate([np.arange(s, e) for s, e in (segments or sh.segments(dst))])
    keys = np.arange(S)
    seen = m[:, qpos // bs][:, :, keys // bs] & (keys[None, None] <= qpos[None, :, None])  # [H, q, t]
    owner = np.repeat(sh.chunk_owner(), np.diff(sh.chunk_bounds()))
    group = pattern.num_heads // pattern.num_kv_heads
    return [np.flatnonzero(seen[h * group:(h + 1) * group].any((0, 1)) & (owner != dst))
            for h in range(pattern.num_kv_heads)], owner


@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("kind", ["contiguous", "zigzag"])
@pytest.mark.parametrize("world,seqlen", [(2, 128), (3, 173), (4, 192), (4, 77)])
def test_plan_receives_exactly_what_the_pattern_reads(name, kind, world, seqlen):
    pattern = PATTERNS[name]
    sh = Sharding(seqlen, world, kind)
    plan = plan_context_parallel(pattern, sh)
    assert plan_context_parallel(pattern, sh).ranges.keys() == plan.ranges.keys()  # deterministic
    for dst in range(world):
        want, owner = needed_tokens(pattern, sh, dst)
        for h in range(pattern.num_kv_heads):
            got = [plan.tokens(dst, src, h) for src in range(world)]
            for src in range(world):
                assert np.array_equal(got[src], want[h][owner[want[h]] == src]), (dst, src, h)
            # block view: the blocks received == the blocks the rank's queries see from other ranks
            assert np.array_equal(plan.received_blocks(dst, h), np.unique(want[h] // pattern.block_size))
        # the wave of a message is the first local segment that reads it
        per_segment = [needed_tokens(pattern, sh, dst, [seg])[0] for seg in sh.segments(dst)]
        for src in range(world):
            readers = [w for w, heads in enumerate(per_segment) if any((owner[t] == src).any() for t in heads)]
            assert plan.wave[dst, src] == (readers[0] if readers else -1), (dst, src)


def test_plan_bytes_against_dense_ring():
    """The per-KV-head plan moves about 1/(2V) of a dense ring (causal: half of what a ring moves is the
    future) plus the local-window halo; the union over heads moves far more when heads shard the context; a
    dense pattern moves exactly what dense causal attention needs."""
    L, V, bs, S, P = 16, 8, 64, 1 << 16, 4
    p = s2attn.local_stride(8, bs, local_blocks=L, vert_stride=V)
    s = plan_context_parallel(p, Sharding(S, P)).summary(head_dim=128, itemsize=2)
    halo = (P - 1) * (L - 1) * bs / ((P - 1) * S)
    assert abs(s["ratio_vs_dense_ring"] - (1 / (2 * V) + halo)) < 0.01, s
    assert s["bytes_union_heads"] == s["bytes_dense_causal"]  # 8 heads x phases cover every block
    assert s["bytes_dense_ring"] == (P - 1) * S * 8 * 2 * 128 * 2
    zz = plan_context_parallel(p, Sharding(S, P, "zigzag")).summary(head_dim=128, itemsize=2)
    # zig-zag balances compute, not traffic: more in total (every rank reads a late chunk's past), the same
    # busiest rank, and still ~1/V of what dense causal attention would need
    assert zz["ratio_vs_dense_causal"] < 1 / V + 0.05
    assert zz["max_rank_bytes_per_kv_head"] <= s["max_rank_bytes_per_kv_head"]
    d = plan_context_parallel(s2attn.dense(8, bs), Sharding(S, P, "zigzag")).summary(head_dim=128)
    assert d["bytes_per_kv_head"] == d["bytes_dense_causal"]


def test_plan_errors():
    with pytest.raises(UnsupportedError):
        plan_context_parallel(s2attn.local_stride(2, 16, causal=False), Sharding(64, 2))
    with pytest.raises(InvalidArgumentError) as e:
        plan_context_parallel(s2attn.dense(2, 16), (64, 2))
    assert e.value.argument == "sharding"
    with pytest.raises(InvalidArgumentError) as e:
        plan_context_parallel("local_stride", Sharding(64, 2))
    assert e.value.argument == "pattern"


# ---------------------------------------------------------------------------------------------------------
# Context-parallel attention over gloo processes

try:  # the planner tests above need no torch
    import torch
except ImportError:  # pragma: no cover - CI installs torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# (pattern name, seqlen, layout, loss through lse); every case runs with both shardings
CASES = [("offsets", 128, "bshd", False), ("gqa_dense_head", 173, "bshd", True),
         ("per_q_head_sink", 150, "bhsd", False), ("range_prefix", 200, "sbhd", False),
         ("dense", 99, "bshd", False), ("mask", 160, "bshd", True)]


def _to_layout(x, layout):
    return {"bshd": x, "bhsd": x.transpose(1, 2), "sbhd": x.transpose(0, 1)}[layout]


def _run_case(rank, world, name, seqlen, layout, with_lse, kind):
    import s2attn.torch as st
    from s2attn.distributed import context_parallel_attention

    pattern = PATTERNS[name]
    H, Hkv, D, B = pattern.num_heads, pattern.num_kv_heads, 16, 2
    g = torch.Generator().manual_seed(seqlen)
    q, do = (torch.randn(B, seqlen, H, D, generator=g) for _ in range(2))
    k, v = (torch.randn(B, seqlen, Hkv, D, generator=g) for _ in range(2))
    dl = torch.randn(B, H, seqlen, generator=g)
    full = [x.clone().requires_grad_() for x in (q, k, v)]
    ref, ref_lse = st.attention(*full, pattern, return_lse=True)
    loss = (ref * do).sum()
    (loss + (ref_lse * dl).sum() if with_lse else loss).backward()

    sh = Sharding(seqlen, world, kind)
    local = [sh.shard(x, rank).clone().requires_grad_() for x in (q, k, v)]
    out, lse = context_parallel_attention(*[_to_layout(x, layout) for x in local], pattern, sh,
                                          layout=layout, return_lse=True)
    out = _to_layout(out, layout)  # back to bshd (the transposes are their own inverses)
    loss = (out * sh.shard(do, rank)).sum()
    (loss + (lse * sh.shard(dl, rank, dim=2)).sum() if with_lse else loss).backward()
    errors = []
    pairs = [("out", out, sh.shard(ref, rank)), ("lse", lse, sh.shard(ref_lse, rank, dim=2))]
    pairs += [(f"d{n}", x.grad, sh.shard(r.grad, rank)) for n, x, r in zip("qkv", local, full)]
    for n, got, want in pairs:
        got, want = got.detach(), want.detach()
        if not (torch.equal(torch.isfinite(got), torch.isfinite(want)) and
                torch.allclose(got.nan_to_num(), want.nan_to_num(), rtol=1e-5, atol=2e-5)):
            errors.append(f"{name} {kind} S={seqlen} rank {rank}/{world}: {n} differs by "
                          f"{(got - want).abs().nan_to_num(float('inf')).max().item():.3g}")
    return errors


def _check_errors(rank, world):
    """Typed errors, raised before any message is posted (so the other ranks do not wait)."""
    from s2attn.distributed import context_parallel_attention

    p = PATTERNS["offsets"]
    sh = Sharding(64, world)
    x = torch.zeros(1, sh.local_len(rank), 4, 16)
    with pytest.raises(InvalidArgumentError) as e:
        context_parallel_attention(x, x, x, p, Sharding(64, world + 1))
    assert e.value.argument == "sharding"
    with pytest.raises(InvalidArgumentError) as e:
        context_parallel_attention(x[:, 1:], x[:, 1:], x[:, 1:], p, sh)
    assert e.value.argument == "q"
    with pytest.raises(UnsupportedError):
        context_parallel_attention(x, x, x, s2attn.local_stride(4, 16, causal=False), sh)
    with pytest.raises(UnsupportedError):
        context_parallel_attention(x[0], x[0], x[0], p, sh, layout="thd")


def _worker(rank, world, init_file):
    import torch.distributed as dist
    import s2attn.distributed.attention as cp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    cp.BUFFER_FILL = float("nan")  # slots of the key buffer that no query should read
    try:
        _check_errors(rank, world)
        errors = [err for case in CASES for kind in ("contiguous", "zigzag")
                  for err in _run_case(rank, world, *case, kind)]
        assert not errors, "\n".join(errors)
    finally:
        dist.destroy_process_group()


@needs_torch
@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_matches_single_process(world, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("S2ATTN_NUM_THREADS", "1")  # 4 workers on a 2-core machine
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init")), nprocs=world, join=True)


@needs_torch
def test_context_parallel_needs_a_process_group():
    from s2attn.distributed import context_parallel_attention

    x = torch.zeros(1, 32, 4, 16)
    with pytest.raises(InvalidArgumentError) as e:
        context_parallel_attention(x, x, x, PATTERNS["offsets"], Sharding(64, 2))
    assert e.value.argument == "group"

"""The dense baseline of bench/context_parallel.py: ring attention (causal) built from PyTorch's flash SDPA
kernels, for the same shardings (contiguous or zig-zag, s2attn.distributed.Sharding) and layout (bshd local
shards) as s2attn's context parallelism.

Forward: P steps; at step t a rank holds the K/V shard of rank (rank - t) mod P and sends it on while it
computes (the next shard is prefetched). Every (query segment, key segment) pair is full attention when the
keys come first, causal on the diagonal segment, skipped when the keys are in the future. Partials are merged
by LSE (s2attn.torch.combine_attn_partitions, float32). Backward: K/V travel the ring again and each shard's
dK/dV accumulator travels with it, ending at its owner (P - 1 K/V hops and P dK/dV hops per rank).

Kernels: aten::_scaled_dot_product_flash_attention (CUDA; what SDPA's flash backend runs) and its CPU twin
_scaled_dot_product_flash_attention_for_cpu, both of which return the LSE a ring needs (the public SDPA
does not). GQA: K/V heads are repeated to the query heads for the kernel (ring traffic stays at Hkv heads).
"""
import torch
import torch.distributed as dist

from s2attn.torch import combine_attn_partitions


def _flash_forward(q, k, v, causal, scale):
    """(out, lse) of q [B, H, Sq, D] against k/v [B, H, Sk, D]; lse float32 [B, H, Sq]."""
    if q.is_cuda:
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
        return r[0], r[1]
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)


def _flash_backward(dout, q, k, v, out, lse, causal, scale):
    # the kernels take strided q/k/v/out views but read lse as a dense [B, H, Sq] block: a slice of a longer
    # row (zig-zag segments) must be copied (measured on the H200: gradients off by 100x without it)
    lse = lse.contiguous()
    if q.is_cuda:
        no_rng = torch.zeros(2, dtype=torch.int64, device=q.device)  # dropout 0: the philox state is unused
        # cum_seq_q / cum_seq_k: None (undefined, as the dense forward returns them); a defined empty tensor
        # selects the varlen path ("batch size must be positive", measured on the H100)
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse, None, None, q.shape[2], k.shape[2], 0.0, causal, no_rng, no_rng, scale=scale)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(dout, q, k, v, out, lse, 0.0, causal,
                                                                              scale=scale)


def _pairs(sharding, rank, src):
    """(local segment index, query rows, key rows, causal) of every computed (local segment, src segment)
    pair: rows are slices of the local shard and of src's shard."""
    out, qoff = [], 0
    for i, (qs, qe) in enumerate(sharding.segments(rank)):
        koff = 0
        for ks, ke in sharding.segments(src):
            if ke <= qs or (ks, ke) == (qs, qe):
                out.append((i, slice(qoff, qoff + qe - qs), slice(koff, koff + ke - ks), (ks, ke) == (qs, qe)))
            koff += ke - ks
        qoff += qe - qs
    return out


def _peer(group, r):
    return r if group is None else dist.get_global_rank(group, r)


def _shift(group, rank, world, tensors):
    """Send `tensors` to the next rank and receive the previous rank's (same shapes): returns (works, incoming).
    Shards of different lengths (sequence not divisible) are padded to the longest shard."""
    incoming = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t, _peer(group, (rank + 1) % world), group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, t, _peer(group, (rank - 1) % world), group) for t in incoming]
    return dist.batch_isend_irecv(ops), incoming


def _padded(x, n):
    """x [B, H, s, D] padded with zeros to n rows (ring messages have one shape)."""
    return x if x.shape[2] == n else torch.cat([x, x.new_zeros(x.shape[:2] + (n - x.shape[2], x.shape[3]))], 2)


class DenseRingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sharding, group, scale):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        rep = q.shape[2] // k.shape[2]
        n = max(sharding.local_len(r) for r in range(world))
        qh = q.transpose(1, 2).contiguous()  # [B, H, n_local, D]
        kv = [_padded(x.transpose(1, 2).contiguous(), n) for x in (k, v)]
        acc = [None] * len(sharding.segments(rank))  # per local segment: (out float32, lse)
        cur = kv
        for t in range(world):
            works, nxt = _shift(group, rank, world, cur) if t < world - 1 else ([], None)
            src = (rank - t) % world
            kk, vv = (x.repeat_interleave(rep, 1) for x in cur)
            for seg, qr, kr, causal in _pairs(sharding, rank, src):
                o, lse = _flash_forward(qh[:, :, qr], kk[:, :, kr], vv[:, :, kr], causal, scale)
                part = (o.float(), lse)
                acc[seg] = part if acc[seg] is None else combine_attn_partitions(acc[seg], part, return_lse=True)
            for w in works:
                w.wait()
            cur = nxt
        out = torch.cat([a[0] for a in acc], 2).to(q.dtype)
        lse = torch.cat([a[1] for a in acc], 2)
        ctx.save_for_backward(qh, k, v, out, lse)
        ctx.sharding, ctx.group, ctx.scale = sharding, group, scale
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, dout):
        qh, k, v, out, lse = ctx.saved_tensors
        sharding, group, scale = ctx.sharding, ctx.group, ctx.scale
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        rep = qh.shape[1] // k.shape[2]
        n = max(sharding.local_len(r) for r in range(world))
        do = dout.transpose(1, 2).contiguous()
        dq = torch.zeros_like(qh, dtype=torch.float32)
        cur = [_padded(x.transpose(1, 2).contiguous(), n) for x in (k, v)]
        dkv = [torch.zeros_like(cur[0]), torch.zeros_like(cur[1])]  # the held shard's dK/dV, in flight
        for t in range(world):
            works, nxt = _shift(group, rank, world, cur) if t < world - 1 else ([], None)
            src = (rank - t) % world
            kk, vv = (x.repeat_interleave(rep, 1) for x in cur)
            grads = [torch.zeros_like(kk, dtype=torch.float32), torch.zeros_like(vv, dtype=torch.float32)]
            for _, qr, kr, causal in _pairs(sharding, rank, src):
                g = _flash_backward(do[:, :, qr], qh[:, :, qr], kk[:, :, kr], vv[:, :, kr], out[:, :, qr],
                                    lse[:, :, qr], causal, scale)
                dq[:, :, qr] += g[0]
                grads[0][:, :, kr] += g[1]
                grads[1][:, :, kr] += g[2]
            if t > 0:  # this shard's accumulator from the rank that held it before
                for w in grad_works:
                    w.wait()
                dkv = grad_in
            dkv = [(a.float() + g.unflatten(1, (-1, rep)).sum(2)).to(a.dtype) for a, g in zip(dkv, grads)]
            # to the next holder (the owner, after the last step)
            grad_works, grad_in = _shift(group, rank, world, dkv) if world > 1 else ([], dkv)
            for w in works:
                w.wait()
            cur = nxt
        for w in grad_works:
            w.wait()
        nl = qh.shape[2]
        dk, dv = (g[:, :, :nl].transpose(1, 2) for g in grad_in)
        return dq.to(qh.dtype).transpose(1, 2), dk, dv, None, None, None


def dense_ring_attention(q, k, v, sharding, group=None, softmax_scale=None):
    """Causal dense attention of local shards q [B, n, H, D], k/v [B, n, Hkv, D] over the ring (bshd)."""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    return DenseRingAttention.apply(q, k, v, sharding, group, scale)

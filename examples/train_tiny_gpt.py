"""Train a tiny GPT on synthetic data twice, with s2attn's S2 attention and with dense causal attention (PyTorch
SDPA), from the same initial weights and batches, and compare the loss curves.

The data: an order-2 Markov chain over 16 symbols whose every 32nd token copies the token 32 positions back
(the copy needs attention within the local window; the chain needs the last two tokens). Both models should
reach the same loss; the sparse one sees a fraction of the keys (heads shard the far context).

    .venv/bin/python examples/train_tiny_gpt.py [--steps 300] [--device cpu|cuda] [--out examples/results]

Writes tiny_gpt_loss.json (both curves, settings, timing) and, where matplotlib is installed, tiny_gpt_loss.png.
"""
import argparse
import json
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

import s2attn
import s2attn.torch as st


class MarkovCopyData:
    def __init__(self, vocab=16, copy_every=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        # sparse, peaked order-2 transitions: each (a, b) context prefers a handful of next symbols
        logits = torch.randn(vocab, vocab, vocab, generator=g) * 4.0
        self.probs = torch.softmax(logits, dim=-1)
        self.vocab, self.copy_every = vocab, copy_every

    def batch(self, B, S, g):
        x = torch.empty(B, S + 1, dtype=torch.long)
        x[:, :2] = torch.randint(0, self.vocab, (B, 2), generator=g)
        for t in range(2, S + 1):
            if t % self.copy_every == 0 and t >= self.copy_every:
                x[:, t] = x[:, t - self.copy_every]
            else:
                x[:, t] = torch.multinomial(self.probs[x[:, t - 2], x[:, t - 1]], 1, generator=g)[:, 0]
        return x[:, :-1], x[:, 1:]


class Block(torch.nn.Module):
    def __init__(self, dim, heads, attn):
        super().__init__()
        self.heads, self.hd, self.attn = heads, dim // heads, attn
        self.n1, self.n2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x):
        B, S, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, S, 3, self.heads, self.hd).unbind(2)  # [B, S, H, hd] views
        x = x + self.proj(self.attn(q, k, v).reshape(B, S, D))
        return x + self.mlp(self.n2(x))


class TinyGPT(torch.nn.Module):
    def __init__(self, vocab, dim, heads, layers, seqlen, attn):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, dim), torch.nn.Parameter(torch.randn(seqlen, dim) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(dim, heads, attn) for _ in range(layers))
        self.norm, self.head = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, vocab)

    def forward(self, idx):
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def dense_attention(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)


def train(model, data, args, seed):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    g = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.time()
    for step in range(args.steps):
        x, y = data.batch(args.batch, args.seqlen, g)
        x, y = x.to(args.device), y.to(args.device)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == args.steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.4f}  ({time.time() - t0:.0f} s)", flush=True)
    return losses, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--local", type=int, default=4)
    ap.add_argument("--vert", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="examples/results")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    data = MarkovCopyData()
    pattern = s2attn.local_stride(num_heads=args.heads, block_size=args.block, local_blocks=args.local,
                                  vert_stride=args.vert)
    density = pattern.density(args.seqlen)
    print(f"[tiny-gpt] S={args.seqlen} heads={args.heads} block {args.block} local {args.local} "
          f"vert {args.vert}: density {density:.3f}; device {args.device}", flush=True)
    runs = {}
    for name, attn in (("s2attn", lambda q, k, v: st.attention(q, k, v, pattern)), ("dense_sdpa", dense_attention)):
        torch.manual_seed(1234)  # same initial weights and the same batches for both
        model = TinyGPT(data.vocab, args.dim, args.heads, args.layers, args.seqlen, attn).to(args.device)
        print(f"[tiny-gpt] training with {name}", flush=True)
        losses, secs = train(model, data, args, seed=99)
        runs[name] = {"loss": losses, "seconds": secs}

    tail = max(1, args.steps // 10)
    final = {k: sum(v["loss"][-tail:]) / tail for k, v in runs.items()}
    print(f"[tiny-gpt] mean loss of the last {tail} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    os.makedirs(args.out, exist_ok=True)
    result = {
        "meta": {"command": "examples/train_tiny_gpt.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
                 "s2attn": s2attn.__version__, "machine": platform.machine(), "density": density},
        "final_mean_loss": final, "runs": runs,
    }
    with open(os.path.join(args.out, "tiny_gpt_loss.json"), "w") as f:
        json.dump(result, f)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[tiny-gpt] matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in runs.items():
        ax.plot(r["loss"], label=f"{name} (last-{tail} mean {final[name]:.3f})", alpha=0.85)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"tiny GPT, S={args.seqlen}: S2 attention (density {density:.2f}) vs dense")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "tiny_gpt_loss.png"), dpi=110)
    print(f"[tiny-gpt] wrote {args.out}/tiny_gpt_loss.json and .png")


if __name__ == "__main__":
    main()

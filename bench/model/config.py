"""Model shapes and per-layer attention configurations of the model-level benchmark.

A configuration says what every decoder layer's attention runs; on the command line it is one word:

    dense:flash          every layer dense causal, SDPA's flash backend (FlashAttention-2: the paper's baseline)
    dense:cudnn          every layer dense causal, SDPA's cuDNN backend (the fastest dense kernel on an H100)
    dense                every layer dense; decode picks the fastest SDPA backend measured in the same run
    s2:V                 every layer S2 through s2attn: local window + vertical stride V, per-head offsets
                         (dkernel's head sliding: head h's vertical blocks are shifted by h * max(1, V // H))
    hybrid:K:V[:BACKEND] layer i dense when i % K == 0 (SDPA BACKEND, cudnn by default), the others S2 with V
    none                 no attention at all (the layer returns q): the time of everything except attention
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import s2attn
from s2attn import InvalidArgumentError

DENSE_BACKENDS = ("flash", "cudnn", "efficient", "math", "auto")


def bad(argument, expectation):
    """The typed error of a bad benchmark argument (s2attn's InvalidArgumentError, `.argument` set)."""
    return InvalidArgumentError(f"invalid argument '{argument}': {expectation}", argument)


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention when kv_heads < heads."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        for f in ("layers", "hidden", "heads", "kv_heads", "mlp", "vocab"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise bad(f, f"a positive integer, got {getattr(self, f)!r}")
        if self.hidden % self.heads:
            raise bad("hidden", f"a multiple of heads ({self.heads}), got {self.hidden}")
        if self.heads % self.kv_heads:
            raise bad("kv_heads", f"a divisor of heads ({self.heads}), got {self.kv_heads}")
        if self.head_dim % 2:
            raise bad("hidden", f"hidden / heads even (RoPE rotates pairs), got head_dim {self.head_dim}")

    @property
    def head_dim(self):
        return self.hidden // self.heads

    def params(self):
        """Parameter count (embedding and LM head included)."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        per_layer = attn + 3 * self.hidden * self.mlp + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


SHAPES = {
    # Llama-7B (Llama-2 7B): 32 layers, hidden 4096, 32 heads of 128, SwiGLU MLP 11008, vocab 32000
    "llama7b": ModelShape("llama7b", 32, 4096, 32, 32, 11008, 32000),
    # the same with 8 KV heads (grouped-query attention, 4 q heads per KV head)
    "llama7b-gqa8": ModelShape("llama7b-gqa8", 32, 4096, 32, 8, 11008, 32000),
    # a small model for CPU dry runs and tests
    "tiny": ModelShape("tiny", 2, 256, 4, 2, 688, 512),
}


def model_shape(name, layers=None):
    """A preset shape by name, with the layer count overridden when `layers` is given."""
    if name not in SHAPES:
        raise bad("model", f"one of {sorted(SHAPES)}, got {name!r}")
    shape = SHAPES[name]
    return dataclasses.replace(shape, layers=int(layers)) if layers is not None else shape


@dataclass(frozen=True)
class SparseParams:
    """The S2 pattern's fixed parameters (DESIGN.md section 4: block 64, local 16 blocks) and the decode
    cache's page size."""

    block_size: int = 64
    local_blocks: int = 16
    page_size: int = 64

    def __post_init__(self):
        if self.block_size not in (16, 32, 64, 128):
            raise bad("block_size", f"16, 32, 64 or 128, got {self.block_size!r}")
        for f in ("local_blocks", "page_size"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise bad(f, f"a positive integer, got {getattr(self, f)!r}")

    def pattern(self, shape, vert_stride):
        """The local-stride pattern of one S2 layer (per KV head under GQA, as dkernel)."""
        return s2attn.local_stride(shape.heads, self.block_size, self.local_blocks, vert_stride,
                                   num_kv_heads=shape.kv_heads)


@dataclass(frozen=True)
class AttentionConfig:
    """What each layer's attention runs (see the module docstring for the names)."""

    name: str
    vert_stride: Optional[int] = None   # S2 layers' stride; None: no S2 layer
    dense_every: Optional[int] = None   # hybrid period K (layer i dense when i % K == 0)
    dense_backend: Optional[str] = None  # SDPA backend of the dense layers; None: no dense layer
    none: bool = False                   # no attention (non-attention time)

    def layer_kind(self, i):
        """'none', 'dense' or 's2' for layer i."""
        if self.none:
            return "none"
        if self.vert_stride is None:
            return "dense"
        if self.dense_every is not None and i % self.dense_every == 0:
            return "dense"
        return "s2"

    def kinds(self, layers):
        return [self.layer_kind(i) for i in range(layers)]

    @property
    def label(self):
        names = {"flash": "SDPA flash = FA2", "cudnn": "SDPA cuDNN", "auto": "fastest SDPA",
                 "efficient": "SDPA mem-efficient", "math": "SDPA math"}
        if self.none:
            return "no attention"
        if self.vert_stride is None:
            return f"dense, {names[self.dense_backend]}"
        if self.dense_every is None:
            return f"S2 V={self.vert_stride}"
        return f"hybrid: dense every {self.dense_every} ({names[self.dense_backend]}), S2 V={self.vert_stride}"


def _int(text, argument, lo=1):
    try:
        v = int(text)
    except ValueError:
        raise bad(argument, f"an integer, got {text!r}") from None
    if v < lo:
        raise bad(argument, f"an integer >= {lo}, got {v}")
    return v


def _backend(text):
    if text not in DENSE_BACKENDS:
        raise bad("config", f"a dense backend among {DENSE_BACKENDS}, got {text!r}")
    return text


def parse_config(text):
    """'dense:flash', 'dense:cudnn', 'dense', 's2:8', 'hybrid:4:8', 'hybrid:4:8:flash' or 'none'."""
    parts = str(text).strip().split(":")
    head, rest = parts[0], parts[1:]
    if head == "none" and not rest:
        return AttentionConfig("none", none=True)
    if head == "dense" and len(rest) <= 1:
        return AttentionConfig(text, dense_backend=_backend(rest[0] if rest else "auto"))
    if head == "s2" and len(rest) == 1:
        return AttentionConfig(text, vert_stride=_int(rest[0], "config"))
    if head == "hybrid" and len(rest) in (2, 3):
        return AttentionConfig(text, vert_stride=_int(rest[1], "config"), dense_every=_int(rest[0], "config"),
                               dense_backend=_backend(rest[2] if len(rest) == 3 else "cudnn"))
    raise bad("config", f"dense[:BACKEND], s2:V, hybrid:K:V[:BACKEND] or none, got {text!r}")


def parse_list(text, parse, argument):
    """A comma-separated list (no empty items) parsed item by item."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise bad(argument, f"a comma-separated list, got {text!r}")
    return [parse(t) for t in items]


def parse_size(text, argument="context"):
    """'32768', '32k' or '1m' -> tokens."""
    t = str(text).strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(t[-1:], 1)
    return _int(t[:-1] if mult > 1 else t, argument) * mult

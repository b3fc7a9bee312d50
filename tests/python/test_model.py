"""The model-level benchmark's model (bench/model/): with s2attn attention its logits equal those of the same
masked model run through a dense-mask reference (SDPA math), for dense, S2 and hybrid layer configurations,
in prefill and in decode through the paged caches — the head-paged S2 cache keeping only the key blocks each
KV head still needs, its dropped pages poisoned with NaN. Small fp32 configuration on the CPU; a bf16
variant on CUDA. Plus the driver's dry run end to end and the typed errors of bad arguments."""
import json
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")

import s2attn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))

from model.attention import build_layer_attention  # noqa: E402
from model.config import ModelShape, SparseParams, model_shape, parse_config  # noqa: E402
from model.kv_cache import ModelCache, PagePlan  # noqa: E402
from model.model import Llama  # noqa: E402

SHAPE = ModelShape("test", layers=2, hidden=256, heads=4, kv_heads=2, mlp=512, vocab=128)
SPARSE = SparseParams(block_size=16, local_blocks=2, page_size=8)
CONFIGS = ["dense:math", "s2:4", "hybrid:2:4:math"]
S, PREFIX = 300, 290  # prefill S tokens; decode: prefill PREFIX tokens, then one token at a time


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These shapes are tiny: torch's thread pool costs more than it saves (40x on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(x, ref):
    x, ref = x.double().cpu(), ref.double().cpu()
    return ((x - ref).norm() / ref.norm()).item()


def _model(device, dtype):
    return Llama(SHAPE, device=device, dtype=dtype, seed=1)


def _tokens(device, batch=2, n=S):
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, SHAPE.vocab, (batch, n), generator=g).to(device)


def _reference_logits(model, config, tokens):
    model.set_attention(build_layer_attention(config, SHAPE, SPARSE, reference=True))
    return model(tokens, all_logits=True)


def _poison_free_pages(cache):
    """NaN into every page of the paged caches that no table points at: a read of one shows in the logits."""
    for c in cache.caches:
        if c.kind == "paged" and c.free:
            free = torch.tensor(c.free, dtype=torch.long, device=c.k.device)
            c.k[:, free] = float("nan")
            c.v[:, free] = float("nan")


def _decode_logits(model, attentions, tokens, layout="head", check_pages=None):
    """Prefill PREFIX tokens into the caches, then decode the rest one token at a time (dropping the pages
    no later query needs after every step). Returns [B, S - PREFIX, vocab] logits of the decoded positions
    (each the logits of the token fed at that position)."""
    B = tokens.shape[0]
    model.set_attention(attentions)
    cache = ModelCache.empty(attentions, SHAPE, B, S, SPARSE.page_size, model.dtype, tokens.device, layout=layout)
    cache.set_positions(0, PREFIX)
    out = [model(tokens[:, :PREFIX], cache=cache)]
    for t in range(PREFIX, S - 1):
        cache.evict()
        _poison_free_pages(cache)
        if check_pages is not None:
            check_pages(cache, t)
        cache.set_positions(t, 1)
        out.append(model(tokens[:, t:t + 1], cache=cache))
    return torch.stack(out, 1)


def _check_head_paged_pages(cache, context):
    """The pages the head-paged cache keeps equal the library's footprint (head_paged_pages) per sequence."""
    for c in cache.caches:
        if c.kind == "paged" and c.layout == "head":
            f = s2attn.kv_cache_footprint(c.pattern, context, c.page_size, SHAPE.head_dim, "float32")
            assert c.pages_in_use() == c.batch * f["head_paged_pages"], (context, c.pages_in_use(), f)
            assert f["head_paged_pages"] < f["dense_pages"] * c.kv_heads  # something was dropped


def _prefill_and_decode(config, device, dtype):
    """(s2attn prefill logits, s2attn decode logits, masked-reference prefill logits) of one configuration."""
    cfg = parse_config(config)
    model = _model(device, dtype)
    tokens = _tokens(device)
    with torch.inference_mode():
        ref = _reference_logits(model, cfg, tokens)
        model.set_attention(build_layer_attention(cfg, SHAPE, SPARSE))
        got = model(tokens, all_logits=True)
        dec = _decode_logits(model, build_layer_attention(cfg, SHAPE, SPARSE), tokens,
                             check_pages=_check_head_paged_pages)
    return got, dec, ref


@pytest.mark.parametrize("config", CONFIGS)
def test_prefill_equals_masked_reference(config):
    got, _, ref = _prefill_and_decode(config, "cpu", torch.float32)
    assert rel_err(got, ref) < 1e-5
    assert rel_err(got[:, -1], ref[:, -1]) < 1e-5


def test_s2_differs_from_dense():
    """The S2 masked model is not the dense one (the comparison above would not see a pattern ignored)."""
    model = _model("cpu", torch.float32)
    tokens = _tokens("cpu")
    with torch.inference_mode():
        dense = _reference_logits(model, parse_config("dense:math"), tokens)
        s2 = _reference_logits(model, parse_config("s2:4"), tokens)
    assert rel_err(s2[:, -1], dense[:, -1]) > 1e-3


@pytest.mark.parametrize("config", CONFIGS)
def test_decode_through_paged_cache_equals_masked_reference(config):
    _, got, ref = _prefill_and_decode(config, "cpu", torch.float32)
    ref = ref[:, PREFIX - 1:S - 1]
    assert torch.isfinite(got).all()
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("config", CONFIGS)
def test_reference_decode_equals_reference_prefill(config):
    """The masked reference decodes through its contiguous cache to its own prefill logits."""
    cfg = parse_config(config)
    model = _model("cpu", torch.float32)
    tokens = _tokens("cpu")
    with torch.inference_mode():
        ref = _reference_logits(model, cfg, tokens)[:, PREFIX - 1:S - 1]
        dec = _decode_logits(model, build_layer_attention(cfg, SHAPE, SPARSE, reference=True), tokens)
    assert rel_err(dec, ref) < 1e-5


def test_decode_vllm_layout_equals_masked_reference():
    cfg = parse_config("s2:4")
    model = _model("cpu", torch.float32)
    tokens = _tokens("cpu")
    with torch.inference_mode():
        ref = _reference_logits(model, cfg, tokens)[:, PREFIX - 1:S - 1]
        got = _decode_logits(model, build_layer_attention(cfg, SHAPE, SPARSE), tokens, layout="vllm")
    assert rel_err(got, ref) < 1e-5


def test_step_cache_holds_only_needed_pages():
    """ModelCache.for_step (the benchmark's random-filled cache) allocates exactly the pages of the step
    state, and its byte count matches ModelCache.bytes_per_sequence and the library's footprint."""
    cfg = parse_config("hybrid:2:4:math")
    attentions = build_layer_attention(cfg, SHAPE, SPARSE)
    B, ctx = 3, 257
    cache = ModelCache.for_step(attentions, SHAPE, B, ctx, SPARSE.page_size, torch.float32, "cpu")
    per_seq = ModelCache.bytes_per_sequence(attentions, SHAPE, ctx, SPARSE.page_size, 4)
    assert cache.nbytes == B * per_seq["total"]
    paged = next(c for c in cache.caches if c.kind == "paged")
    assert paged.pages_in_use() == paged.k.shape[1]  # every pool page is in a table, none spare
    f = s2attn.kv_cache_footprint(paged.pattern, ctx - 1, SPARSE.page_size, SHAPE.head_dim, "float32")
    assert per_seq["paged"] >= f["head_paged_bytes"]
    assert per_seq["paged"] <= f["head_paged_bytes"] + SHAPE.kv_heads * 2 * SPARSE.page_size * SHAPE.head_dim * 4
    assert per_seq["paged"] < per_seq["contiguous"]  # S2 layer keeps less than the dense layer
    plan = PagePlan(paged.pattern, SPARSE.page_size)
    assert plan.pages_for_step(ctx) * B == paged.pages_in_use()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("config", ["dense:flash", "s2:4", "hybrid:2:4:flash"])
def test_gpu_bf16_prefill_and_decode(config):
    got, dec, ref = _prefill_and_decode(config, "cuda", torch.bfloat16)
    assert rel_err(got, ref) < 3e-2
    assert torch.isfinite(dec).all()
    assert rel_err(dec, ref[:, PREFIX - 1:S - 1]) < 3e-2


def test_driver_dry_run(tmp_path):
    """The driver end to end on the CPU (tiny model, one layer): prefill, decode, KV rows, JSON."""
    from model import run

    out = tmp_path / "r.json"
    rc = run.main(["--device", "cpu", "--layers", "1", "--contexts", "256", "--configs", "dense:flash,s2:8",
                   "--decode-contexts", "128", "--batches", "1", "--decode-configs", "dense,s2:8",
                   "--no-plots", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    assert {r["config"] for r in data["prefill"]} == {"none", "dense:flash", "s2:8"}
    s2 = next(r for r in data["prefill"] if r["config"] == "s2:8")
    assert s2["bound_ms"] > 0 and math.isfinite(s2["speedup_vs_sdpa_flash"])
    assert {(r["config"], r["status"]) for r in data["decode"]} == {("none", "ok"), ("dense", "ok"), ("s2:8", "ok")}
    kv = {r["config"]: r for r in data["kv_cache"]}
    assert kv["s2:8"]["kv_bytes_per_seq"] < kv["dense"]["kv_bytes_per_seq"]


@pytest.mark.parametrize("bad_call, argument", [
    (lambda: parse_config("s2:0"), "config"),
    (lambda: parse_config("sparse:8"), "config"),
    (lambda: parse_config("hybrid:4:8:nope"), "config"),
    (lambda: model_shape("gpt5"), "model"),
    (lambda: ModelShape("x", 2, 256, 4, 3, 512, 128), "kv_heads"),
    (lambda: SparseParams(block_size=48), "block_size"),
])
def test_bad_arguments_raise_typed_errors(bad_call, argument):
    with pytest.raises(s2attn.InvalidArgumentError) as e:
        bad_call()
    assert e.value.argument == argument

"""The result file of the model benchmark: meta, rows per section, errors and the acceptance checks of
issue 10 computed from the rows. Saved after every addition (a run cut short keeps what it measured)."""
import json
import math
import os
import time
import traceback

SECTIONS = ("models", "prefill", "kv_cache", "decode", "errors")
K128, K256 = 131072, 262144


class Report:
    def __init__(self, path, meta, log=print, deadline_s=None):
        self.path, self.log = path, log
        self.data = dict(meta=meta, **{s: [] for s in SECTIONS}, acceptance={})
        self.t0, self.deadline_s = time.time(), deadline_s
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.save()

    def add(self, section, rows):
        self.data[section].extend(rows)
        self.save()

    def error(self, phase, where, exc):
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.data["errors"].append(dict(phase=phase, **where, error=f"{type(exc).__name__}: {str(exc)[:500]}",
                                        traceback="".join(tb[-4:])[-1500:]))
        self.log(f"ERROR {phase} {where}: {type(exc).__name__}: {str(exc)[:300]}")
        self.save()

    def out_of_time(self, what):
        """True (and a 'skipped' error row) once the run's deadline has passed."""
        if self.deadline_s is None or time.time() - self.t0 < self.deadline_s:
            return False
        self.data["errors"].append(dict(phase="deadline", skipped=what,
                                        error=f"skipped: past the {self.deadline_s:.0f} s deadline"))
        self.save()
        return True

    def save(self):
        self.data["meta"]["elapsed_s"] = round(time.time() - self.t0, 1)
        try:
            self.data["acceptance"] = acceptance(self.data)
        except Exception as e:  # noqa: BLE001 - a summary bug must not lose the measurements
            self.data["acceptance"] = {"error": f"{type(e).__name__}: {e}"}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=_jsonable)
        os.replace(tmp, self.path)


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _check(value, target, ok):
    return dict(value=value, target=target, passed=None if value is None else bool(ok))


def acceptance(data):
    """Issue 10's acceptance, read off the rows (None where the run did not measure it)."""
    out = {}
    for r in data["prefill"]:
        if r["context"] == K128 and r["config"] == "s2:32":
            sp, ratio = r.get("speedup_vs_sdpa_flash"), r.get("model_vs_bound")
            out[f"{r['model']} prefill 128k S2 V=32 vs FA2 dense"] = _check(sp, ">= 4.5x", sp is not None and sp >= 4.5)
            out[f"{r['model']} prefill 128k S2 V=32 time / (non-attention + S2 attention)"] = _check(
                ratio, "<= 1.10", ratio is not None and ratio <= 1.10)
        if r["context"] == K256 and r["config"] != "none" and not r["config"].startswith("dense"):
            out.setdefault(f"{r['model']} prefill 256k speedups", {})[r["config"]] = dict(
                vs_fa2=r.get("speedup_vs_sdpa_flash"), vs_cudnn=r.get("speedup_vs_sdpa_cudnn"),
                model_vs_bound=r.get("model_vs_bound"))
    kv = {(r["model"], r["config"], r["context"]): r for r in data["kv_cache"]}
    steps = {(r["model"], r["config"], r["context"], r["batch"]): r for r in data["decode"] if r.get("status") == "ok"}
    for (model, config, ctx), s2 in kv.items():
        if ctx != K128 or config != "s2:8":
            continue
        dense = next((r for (m, c, x), r in kv.items() if m == model and x == ctx and c.split(":")[0] == "dense"),
                     None)
        if dense is None:
            continue
        db, sb = dense["max_batch"], s2["max_batch"]
        ratio = (sb / db) if db else (math.inf if sb else None)
        out[f"{model} decode 128k largest batch, S2 V=8 / dense"] = dict(
            _check(None if ratio is None else (ratio if math.isfinite(ratio) else "dense fits no sequence"),
                   ">= 4x", sb >= 1 and sb >= 4 * db),
            s2=sb, dense=db, kv_bytes_per_seq=dict(s2=s2["kv_bytes_per_seq"], dense=dense["kv_bytes_per_seq"]))
        pairs = []
        for (m, c, x, b), r in steps.items():
            d = steps.get((m, dense["config"], x, b))
            if m == model and c == "s2:8" and x == ctx and d is not None:
                pairs.append(dict(batch=b, s2_ms=r["ms_per_step"], dense_ms=d["ms_per_step"],
                                  lower=r["ms_per_step"] < d["ms_per_step"]))
        out[f"{model} decode 128k per-token latency at equal batch, S2 V=8 < dense"] = dict(
            passed=all(p["lower"] for p in pairs) if pairs else None, pairs=pairs)
    return out

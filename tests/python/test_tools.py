"""The GPU tools' CPU-side parts: tools/ab_compare.py's tables from synthetic tools/gpu-ab results (kernels and
decode calls), the benchmarks' clock sampling (bench/gpu_clock.py: clock, power, temperature, clock event
reasons) on canned nvidia-smi output and their clock-paired comparison (bench/gpu_forward.paired) on fake
timings, the KV kernel's schedule models (tools/kv_schedule_l2_model.py, tools/sm80_kv_grid_model.py), and the
GPU timeline analysis of tools/step_gaps.py on synthetic kernel intervals."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

import gpu_clock  # noqa: E402
import kv_schedule_l2_model as kv_model  # noqa: E402


def write_profile(folder, ms_kv, ms_dq):
    folder.mkdir(parents=True, exist_ok=True)
    rep = dict(shape=dict(D=128, S=8192, V=8, layout="bhsd"),
               passes={"backward": [dict(kernel="void ns::kv_kernel<T>(P)", ms_per_call=ms_kv),
                                    dict(kernel="void ns::dq_kernel<T>(P)", ms_per_call=ms_dq)]})
    (folder / "p_8192_8.json").write_text(json.dumps(rep))


def compare(ab_dir, legend=False):
    """The table's lines (legend=True: the '# column n: name' lines before it instead)."""
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "ab_compare.py"), str(ab_dir), "--kernels"],
                         capture_output=True, text=True, check=True)
    return [line for line in run.stdout.splitlines() if line.startswith("# column") == legend]


def test_ab_compare_one_round(tmp_path):
    write_profile(tmp_path / "base", 2.0, 1.0)
    write_profile(tmp_path / "x", 1.8, 1.0)
    lines = compare(tmp_path)
    assert lines[0].split()[-1] == "x"
    assert "backward" in lines[1] and "3.000" in lines[1] and "-6.7%" in lines[1]
    assert "kv_kernel" in lines[2] and "-10.0%" in lines[2]
    assert "dq_kernel" in lines[3] and "+0.0%" in lines[3]


def test_ab_compare_decode_calls_in_microseconds(tmp_path):
    # tools/decode_ab.py's files: pass "decode", the batch in the shape's layout; --us prints base in us
    for v, ms in (("base", 0.0412), ("lean", 0.0371)):
        folder = tmp_path / v
        folder.mkdir()
        rep = dict(shape=dict(D=128, S=131072, V=8, layout="B1", splits=33, page=16),
                   passes={"decode": [dict(kernel="paged_decode_call(graph)", ms_per_call=ms)]})
        (folder / "p_decode_b1_s131072_v8.json").write_text(json.dumps(rep))
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "ab_compare.py"), str(tmp_path), "--passes", "decode",
                          "--us"], capture_output=True, text=True, check=True)
    lines = [line for line in run.stdout.splitlines() if not line.startswith("# column")]
    assert "base us" in lines[0]
    assert lines[1].startswith("D128 S131072 V8 B1") and "41.200" in lines[1] and "-10.0%" in lines[1]


def test_ab_compare_names_each_column_in_full(tmp_path):
    # the header cuts names to 10 characters: two patches with a common prefix need the legend
    for v, ms in (("base", 2.0), ("probe-timing-bwd-a", 1.8), ("probe-timing-bwd-b", 2.2)):
        write_profile(tmp_path / v, ms, 1.0)
    assert compare(tmp_path, legend=True) == ["# column 1: probe-timing-bwd-a", "# column 2: probe-timing-bwd-b"]
    backward = compare(tmp_path)[1]
    assert backward.index("-6.7%") < backward.index("+6.7%")  # column 1 is a (2.8 ms), column 2 b (3.2)


def test_ab_compare_rounds_take_the_median_of_same_round_ratios(tmp_path):
    # the clock drifts between rounds (base 2.0 -> 2.4 ms); the variant is 10%, 5% and 20% faster in its own
    # rounds: median -10%, range [-20, -5], whatever the drift
    for r, (base, ratio) in enumerate([(2.0, 0.9), (2.4, 0.95), (2.2, 0.8)]):
        write_profile(tmp_path / "base" / f"r{r}", base, 1.0)
        write_profile(tmp_path / "x" / f"r{r}", base * ratio, 1.0)
    lines = compare(tmp_path)
    kv = next(line for line in lines if "kv_kernel" in line)
    assert "2.200" in kv  # base's median
    assert "-10.0% [-20.0,-5.0]" in kv


def test_ab_compare_puts_the_portable_kv_kernel_variants_on_one_row(tmp_path):
    # a patch may swap the portable backward's KV kernel for another (backward_kv_2x2_kernel_sm80 for
    # backward_kv_kernel_sm80): one row compares them; other kernels keep their own names
    for v, kv, ms in (("base", "backward_kv_kernel_sm80", 2.0), ("x", "backward_kv_2x2_kernel_sm80", 1.5)):
        (tmp_path / v).mkdir()
        rep = dict(shape=dict(D=128, S=8192, V=8),
                   passes={"backward_sm80": [dict(kernel=f"void s2attn::cuda::{kv}<T, false>(P)", ms_per_call=ms),
                                             dict(kernel="void s2attn::cuda::backward_kv_kernel_sm90<T>(P)",
                                                  ms_per_call=1.0)]})
        (tmp_path / v / "p_8192_8.json").write_text(json.dumps(rep))
    lines = compare(tmp_path)
    kv = next(line for line in lines if "backward_kv*_kernel_sm80" in line)
    assert "2.000" in kv and "-25.0%" in kv
    assert any("backward_kv_kernel_sm90" in line and "+0.0%" in line for line in lines)


def test_clock_samples_parse_and_summarize():
    text = "1755, 690.12\n1980, 410.00\n[N/A], [N/A]\n1620, 700.5\n17"  # a partial last line
    samples = gpu_clock.parse_samples(text)
    assert samples == [(1755.0, 690.12), (1980.0, 410.0), (1620.0, 700.5)]
    assert gpu_clock.summarize(samples) == dict(sm_clock_mhz=1755.0, power_w=690.12, samples=3)
    assert gpu_clock.summarize([]) == {}
    assert gpu_clock.label(gpu_clock.summarize(samples)) == "1755 MHz "
    assert gpu_clock.label({}) == ""


def test_clock_samples_with_temperature_and_event_reasons():
    # clock, power, temperature, clock event reasons (hex): power cap (0x4), SW thermal (0x20), none
    text = "1605, 628.1, 84, 0x0000000000000020\n1590, 699.0, 85, 0x0000000000000024\n1980, 300.2, 70, 0x0\n1600, 6"
    samples = gpu_clock.parse_samples(text, fields=4)
    assert samples == [(1605.0, 628.1, 84.0, 0x20), (1590.0, 699.0, 85.0, 0x24), (1980.0, 300.2, 70.0, 0)]
    summary = gpu_clock.summarize(samples)
    assert summary == dict(sm_clock_mhz=1605.0, power_w=628.1, samples=3, temp_c=84.0, power_capped=0.333,
                           thermal=0.667, hw_slowdown=0.0)
    assert gpu_clock.label(summary) == "1605 MHz 84 C thermal "


def test_clock_monitor_without_nvidia_smi_is_empty(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi to start: the benchmark still runs
    with gpu_clock.ClockMonitor() as clock:
        pass
    assert clock.summary() == {}


def test_kv_schedule_model_units_partition_the_key_blocks_and_fused_adds_traffic():
    import numpy as np
    import s2attn
    mask = np.asarray(s2attn.local_stride(32, 64, 16, 8, causal=True).to_block_mask(64)).astype(bool)
    for group in (0, 4, 1):
        units = kv_model.units_of(mask, 8, group)
        blocks = sorted((h, j) for h, js in units for j in js)
        assert blocks == [(h, j) for h in range(32) for j in range(64)]  # every key block once
    units = kv_model.units_of(mask, 8, 0)
    ordered = kv_model.simulate(mask, units, False, 4 * 2**20)
    fused = kv_model.simulate(mask, units, True, 4 * 2**20)
    assert ordered["write"] == 0 and ordered["read"] > 0
    assert fused["read"] > ordered["read"] and fused["write"] >= 32 * 64 * 32 * 1024  # every dQ tile written


def test_sm80_kv_grid_model_vertical_first_is_a_permutation_and_shortens_the_tail():
    import numpy as np
    import sm80_kv_grid_model as grid_model
    from kv_schedule_model import busiest_over_mean
    work, vertical = grid_model.tile_work(8192, 32, 16, 32)
    plain = grid_model.grid_order(work, vertical, False)
    first = grid_model.grid_order(work, vertical, True)
    assert sorted(plain) == sorted(first) and len(first) == work.size  # the same CTAs, reordered
    nv = sum(len(v) for v in vertical)
    assert np.mean(first[:nv]) > 4 * np.mean(first[nv:])  # the vertical tiles are the long ones: they go first
    end = [busiest_over_mean(np.array(o, dtype=float) + 4, 264, True) for o in (plain, first)]
    assert end[1] < end[0] - 0.1 and end[1] < 1.05  # the plain order's last heads run their long tiles alone


def test_bench_paired_alternates_the_order_and_takes_the_median_ratio(monkeypatch):
    pytest.importorskip("torch")  # bench/gpu_forward.py imports torch (not its GPU)
    import gpu_forward

    def fake_do_bench(fn):
        fake_do_bench.last_clock = {"sm_clock_mhz": 1500.0}
        return fn()

    fake_do_bench.last_clock = {}
    monkeypatch.setattr(gpu_forward, "do_bench", fake_do_bench)
    monkeypatch.setenv("S2_BENCH_PAIRED_ROUNDS", "4")
    calls, peer_ms = [], iter([11.0, 10.0, 12.0, 10.5])

    def ours():
        calls.append("ours")
        return 10.0

    def peer():
        calls.append("peer")
        return next(peer_ms)

    e = gpu_forward.paired("test", 1024, ours, peer)
    assert calls == ["ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]
    assert [t["peer"] for t in e["rounds"]] == [11.0, 10.0, 12.0, 10.5]
    assert e["peer_over_ours_median"] == pytest.approx(1.075)  # ratios 1.0, 1.05, 1.1, 1.2
    assert e["peer_over_ours_range"] == pytest.approx([1.0, 1.2])
    assert e["rounds"][0]["ours_clock"] == {"sm_clock_mhz": 1500.0}


def test_step_gaps_analyse_merges_overlaps_and_reports_the_gaps():
    import step_gaps  # (torch and s2attn are imported inside its GPU functions only)

    # kernels (start us, end us, name): a and b overlap, then idle 8 us before c, c and d touch, idle 9 before e
    iv = [(0, 10, "a"), (5, 12, "b"), (20, 30, "c"), (30, 31, "d"), (40, 41, "e")]
    r = step_gaps.analyse(iv, iters=1)
    assert r["span_ms_per_step"] == pytest.approx(0.041)
    assert r["busy_ms_per_step"] == pytest.approx(0.024)  # 12 + 11 + 1 us
    assert r["idle_fraction"] == pytest.approx(17 / 41)
    assert r["gaps_over_5us"] == 2
    assert [(g["us"], g["after"], g["before"]) for g in r["largest_gaps"]] == [(9, "d", "e"), (8, "b", "c")]
    # two steps: the figures are per step
    r2 = step_gaps.analyse(iv, iters=2)
    assert r2["busy_ms_per_step"] == pytest.approx(0.012) and r2["gaps_over_5us"] == 1
    # a kernel nested inside an earlier, longer one ends the span with the longer one, not with itself
    nested = [(0, 50, "long"), (10, 20, "short")]
    r3 = step_gaps.analyse(nested, iters=1)
    assert r3["span_ms_per_step"] == pytest.approx(0.050) and r3["busy_ms_per_step"] == pytest.approx(0.050)
    assert r3["idle_fraction"] == 0 and r3["largest_gaps"] == []
    assert step_gaps.analyse([], iters=1)["busy_ms_per_step"] == 0

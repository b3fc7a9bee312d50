"""The GPU's SM clock and power while a benchmark measures: nvidia-smi sampling in the background.

The H100's clock under sustained load moves by more than 10% between rounds of the same kernel (session 13:
the same forward took 11.45 and 13.17 ms; under Nsight Compute's locked clock both storages of a case ran
within 0.3%). Each benchmark row therefore records the clock it ran at, so that two rows can be compared
knowing whether they saw the same clock.

    with ClockMonitor() as clock:
        ms = triton.testing.do_bench(fn)
    clock.summary()  # {"sm_clock_mhz": median, "power_w": median, "samples": n} or {} without nvidia-smi
"""
import statistics
import subprocess

QUERY = "clocks.sm,power.draw"


def parse_samples(text):
    """(SM clock MHz, power W) pairs from `nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,
    nounits` lines; lines that do not parse ([N/A], a partial last line) are skipped."""
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            samples.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    return samples


def summarize(samples):
    if not samples:
        return {}
    return dict(sm_clock_mhz=statistics.median(s[0] for s in samples),
                power_w=statistics.median(s[1] for s in samples), samples=len(samples))


def label(summary):
    """'1755 MHz ' for a printed benchmark row, '' without samples."""
    clock = summary.get("sm_clock_mhz")
    return f"{clock:.0f} MHz " if clock else ""


class ClockMonitor:
    """Samples the clock every `period_ms` from entry to exit (one nvidia-smi process); never raises: without
    nvidia-smi, or if it fails, summary() is {}."""

    def __init__(self, device_index=0, period_ms=50):
        self.cmd = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-i",
                    str(device_index), "-lms", str(period_ms)]
        self.proc = None
        self.text = ""

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.text, _ = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.text = ""
        return False

    def summary(self):
        return summarize(parse_samples(self.text))

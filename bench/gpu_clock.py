"""The GPU's SM clock and power while a benchmark measures: nvidia-smi sampling in the background.

The H100's clock under sustained load moves by more than 10% between rounds of the same kernel (session 13:
the same forward took 11.45 and 13.17 ms; under Nsight Compute's locked clock both storages of a case ran
within 0.3%). Each benchmark row therefore records the clock it ran at, so that two rows can be compared
knowing whether they saw the same clock.

    with ClockMonitor() as clock:
        ms = triton.testing.do_bench(fn)
    clock.summary()  # {"sm_clock_mhz": median, "power_w": median, "samples": n} or {} without nvidia-smi

Where the driver reports them, the summary also has the median temperature (`temp_c`) and, from the clock
event reasons nvidia-smi gives per sample, the fraction of samples whose clock was held down by the power
cap (`power_capped`), by thermal slowdown (`thermal`, software or hardware) or by other hardware slowdown
(`hw_slowdown`): a row that ran at a low clock then says why (session 25: the 128k V32 fwd+bwd row ran at
1605 MHz drawing 628 W, below the 700 W cap).
"""
import statistics
import subprocess

QUERY = "clocks.sm,power.draw"
QUERY_FULL = QUERY + ",temperature.gpu,clocks_event_reasons.active"
# NVML's clock event reason bits
POWER_CAP = 0x4
HW_SLOWDOWN = 0x8 | 0x80  # hardware slowdown, hardware power brake
THERMAL = 0x20 | 0x40  # software and hardware thermal slowdown


def parse_samples(text, fields=2):
    """Samples from `nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits` lines: (SM clock MHz, power W)
    or, with QUERY_FULL (fields=4), (SM clock MHz, power W, temperature C, event reasons bitmask); lines that
    do not parse ([N/A], a partial last line) are skipped."""
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != fields:
            continue
        try:
            sample = (float(parts[0]), float(parts[1]))
            if len(parts) == 4:
                sample += (float(parts[2]), int(parts[3], 16))
        except ValueError:
            continue
        samples.append(sample)
    return samples


def summarize(samples):
    if not samples:
        return {}
    out = dict(sm_clock_mhz=statistics.median(s[0] for s in samples),
               power_w=statistics.median(s[1] for s in samples), samples=len(samples))
    full = [s for s in samples if len(s) == 4]
    if full:
        def share(bits):
            return round(sum(1 for s in full if s[3] & bits) / len(full), 3)
        out.update(temp_c=statistics.median(s[2] for s in full), power_capped=share(POWER_CAP),
                   thermal=share(THERMAL), hw_slowdown=share(HW_SLOWDOWN))
    return out


def label(summary):
    """'1755 MHz ' for a printed benchmark row ('1755 MHz 81 C power-capped ' with the full query: the
    limiters held in most samples), '' without samples."""
    clock = summary.get("sm_clock_mhz")
    if not clock:
        return ""
    out = f"{clock:.0f} MHz "
    if "temp_c" in summary:
        out += f"{summary['temp_c']:.0f} C "
        for key, word in (("power_capped", "power-capped"), ("thermal", "thermal"), ("hw_slowdown", "hw-slowdown")):
            if summary.get(key, 0) > 0.5:
                out += word + " "
    return out


_full_query = {}


def full_query_works(device_index=0):
    """Whether this driver answers QUERY_FULL (an unknown field fails the whole query): asked once."""
    if device_index not in _full_query:
        try:
            run = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY_FULL}", "--format=csv,noheader,nounits",
                                  "-i", str(device_index)], capture_output=True, text=True, timeout=10)
            _full_query[device_index] = run.returncode == 0 and bool(parse_samples(run.stdout, 4))
        except (OSError, subprocess.SubprocessError):
            _full_query[device_index] = False
    return _full_query[device_index]


class ClockMonitor:
    """Samples the clock every `period_ms` from entry to exit (one nvidia-smi process); never raises: without
    nvidia-smi, or if it fails, summary() is {}."""

    def __init__(self, device_index=0, period_ms=50):
        self.fields = 4 if full_query_works(device_index) else 2
        query = QUERY_FULL if self.fields == 4 else QUERY
        self.cmd = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i",
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
        return summarize(parse_samples(self.text, self.fields))

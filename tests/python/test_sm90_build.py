"""What the Hopper kernels must look like after ptxas, checked wherever nvcc and the CUTLASS headers are (CI
included, no GPU needed): the forward kernel spills nothing to local memory and is built on wgmma, TMA and
setmaxnreg (issue 5's resource criteria), and no Hopper kernel has ptxas serialise its wgmma or inject a
wait before using their registers (its C75xx messages: sessions met C7510, C7512, C7514, C7515, C7517 and
C7518 while writing these kernels, docs/hopper_notes.md; each puts a GEMM's latency back on the critical
path). One translation unit each for the benchmarked variant (bf16, head dim 128): the forward, and the
fused-dQ KV kernel of the backward; compiled as sm90.cmake compiles them."""
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUTLASS = ROOT / ".deps" / "cutlass" / "cutlass_library" / "source" / "include"
NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
INSTANTIATIONS = ROOT / "src" / "cuda" / "sm90" / "instantiations"

pytestmark = pytest.mark.skipif(
    not pathlib.Path(NVCC).exists() or not (CUTLASS / "cute" / "tensor.hpp").exists(),
    reason="needs nvcc and the CUTLASS headers (make cutlass)")


def compile_sm90(unit, out_dir):
    """ptxas's report and the PTX of one sm_90a translation unit (sm90.cmake's flags)."""
    cmd = [NVCC, "-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", f"-I{ROOT / 'include'}",
           f"-I{ROOT / 'src'}", "-isystem", str(CUTLASS), "-DS2ATTN_WITH_CUDA", "-DS2ATTN_WITH_SM90",
           "-DS2ATTN_SM90_D128_STAGES=2", "-gencode", "arch=compute_90a,code=sm_90a", "--resource-usage",
           "-keep", f"-keep-dir={out_dir}", "-c", str(INSTANTIATIONS / f"{unit}.cu"),
           "-o", str(out_dir / f"{unit}.o")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    ptx = next(out_dir.glob(f"{unit}*.ptx")).read_text()
    return run.stdout + run.stderr, ptx


def entries(report):
    """{mangled kernel name: (spill store bytes, spill load bytes)} from ptxas's --resource-usage lines."""
    spills, current = {}, None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current is not None and current not in spills:
            spills[current] = (int(m.group(1)), int(m.group(2)))
    return spills


@pytest.fixture(scope="module")
def forward(tmp_path_factory):
    return compile_sm90("forward_sm90_bf16_d128", tmp_path_factory.mktemp("sm90_forward"))


@pytest.fixture(scope="module")
def backward_fused(tmp_path_factory):
    return compile_sm90("backward_sm90_bf16_d128_fused_dq", tmp_path_factory.mktemp("sm90_backward"))


def test_forward_kernel_spills_nothing(forward):
    spills = {k: v for k, v in entries(forward[0]).items() if "forward_kernel_sm90" in k}
    assert len(spills) == 1, spills
    assert list(spills.values()) == [(0, 0)], spills


def test_forward_kernel_is_wgmma_tma_and_setmaxnreg(forward):
    ptx = forward[1]
    assert "wgmma.mma_async" in ptx
    assert "cp.async.bulk.tensor" in ptx  # TMA loads
    assert "setmaxnreg.inc" in ptx and "setmaxnreg.dec" in ptx


@pytest.mark.parametrize("which", ["forward", "backward_fused"])
def test_no_wgmma_serialisation_or_injected_wait(which, request):
    report = request.getfixturevalue(which)[0]
    found = re.findall(r"\(C75\d\d\)[^\n]*", report)
    assert not found, "\n".join(found)

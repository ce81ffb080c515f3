"""Tier 2: every kernels/*.cu compiles with nvcc for sm_80 and sm_90, with no warning and
no register spill (ptxas -v), and so do the self-contained sources the cuda backend
hands to NVRTC (local headers inlined). Skipped where nvcc is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tinycnn.backends.kernel_sources import KERNEL_DIR, kernel_sources

ARCHS = ("sm_80", "sm_90")
CU_FILES = sorted(f for f in os.listdir(KERNEL_DIR) if f.endswith(".cu"))


def _nvcc():
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/bin/nvcc",
                      os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


NVCC = _nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def _compile(src: str, arch: str, out_dir: str, include: bool = True) -> tuple[int, str]:
    out = os.path.join(out_dir, f"{os.path.basename(src)}.{arch}.cubin")
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-Werror", "all-warnings",
           "-o", out, src]
    if include:
        cmd[1:1] = ["-I", KERNEL_DIR]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{(file, arch): (returncode, nvcc output)} for every .cu and arch, compiled in parallel;
    plus (file, "inlined") for the NVRTC sources, compiled where no header can be found."""
    out_dir = str(tmp_path_factory.mktemp("cubins"))
    inline_dir = str(tmp_path_factory.mktemp("inlined"))
    jobs = {(f, arch): (os.path.join(KERNEL_DIR, f), arch, True) for f in CU_FILES for arch in ARCHS}
    for fname, (source, _) in kernel_sources().items():
        path = os.path.join(inline_dir, fname)
        with open(path, "w") as fh:
            fh.write(source)
        jobs[(fname, "inlined")] = (path, "sm_90", False)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_compile, src, arch, out_dir if inc else inline_dir, inc)
                   for key, (src, arch, inc) in jobs.items()}
        return {key: fut.result() for key, fut in futures.items()}


def _kernel_reports(log: str) -> dict[str, tuple[int, int, int]]:
    """{kernel: (registers, spill store bytes, spill load bytes)} from ptxas -v output."""
    reports, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\w+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            reports[current] = [0, int(m.group(1)), int(m.group(2))]
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current in reports:
            reports[current][0] = int(m.group(1))
    return {k: tuple(v) for k, v in reports.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", CU_FILES)
def test_compiles_without_warnings_or_spills(builds, cu, arch):
    rc, log = builds[(cu, arch)]
    assert rc == 0, f"nvcc failed on {cu} for {arch}:\n{log}"
    assert "warning" not in log.lower(), f"nvcc warned on {cu} for {arch}:\n{log}"
    reports = _kernel_reports(log)
    expected = set(kernel_sources()[cu][1])
    assert expected <= set(reports), f"ptxas reported {sorted(reports)}, the file defines {sorted(expected)}"
    spilling = {k: v for k, v in reports.items() if v[1] or v[2]}
    assert not spilling, f"register spills in {cu} for {arch}: {spilling}"


@pytest.mark.parametrize("cu", CU_FILES)
def test_inlined_nvrtc_source_is_self_contained(builds, cu):
    rc, log = builds[(cu, "inlined")]
    assert rc == 0, f"the self-contained source of {cu} does not compile on its own:\n{log}"
    assert "warning" not in log.lower(), log

"""The two layers and the wheel: the engine (tinycnn, tinycnn.backends, the kernels)
needs numpy alone and never imports the application (tinycnn.mammo); a wheel built
from this tree carries kernels/ and runs cuda-emu outside the checkout."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinycnn"
APP = PACKAGE / "mammo"
APP_ONLY = ("PIL", "sklearn", "matplotlib", "tqdm", "pydicom")  # the app extra


def engine_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if APP not in p.parents)


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (lazy imports too), as
    absolute dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb node.level - 1 packages from this one
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_scan_sees_relative_and_lazy_imports():
    """Guards the scanner itself: tinycnn/mammo/data/cache.py imports the engine both
    ways, and train.py reaches its siblings relatively."""
    assert "tinycnn.paths.atomic_savez" in imported_names(APP / "data" / "cache.py")
    assert "tinycnn.mammo.metrics" in imported_names(APP / "train.py")
    assert "tinycnn.shapes" in imported_names(PACKAGE / "backends" / "kernel_backend.py")


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_never_imports_the_application(path):
    wrong = sorted(n for n in imported_names(path)
                   if n.startswith("tinycnn.mammo") or n.split(".")[0] in APP_ONLY)
    assert not wrong, f"{path.relative_to(ROOT)} (engine) imports {wrong}: the arrows go app -> engine only"


def test_importing_the_engine_loads_nothing_of_the_application():
    modules = ["tinycnn." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
               for p in engine_modules()]
    modules = [m.removesuffix(".__init__") for m in modules if not m.endswith("numba_backend")]  # numba: optional
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.startswith('tinycnn.mammo') or m.split('.')[0] in {APP_ONLY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"the engine's imports load {out.stdout.strip()}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this tree, the way a user builds one."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return next(out.glob("tinycnn-*.whl"))


def test_the_wheel_carries_every_kernel_source_and_needs_numpy_alone(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT / "kernels") for p in (ROOT / "kernels").rglob("*")
               if p.suffix in (".cu", ".cuh", ".h")]
    assert sources
    missing = [str(s) for s in sources if f"tinycnn/kernels/{s.as_posix()}" not in names]
    assert not missing, f"the wheel lacks kernel sources {missing}"
    assert "tinycnn/mammo/data/mias.py" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].strip() for r in core] == ["numpy"], f"core dependencies: {core}"


@pytest.mark.slow
def test_an_installed_wheel_runs_cuda_emu_and_trains_outside_the_checkout(wheel, tmp_path):
    """pip install tinycnn-*.whl into a fresh virtual environment (numpy comes along,
    nothing else), then, from a folder far from the checkout: one cuda-emu conv
    against numpy, and a few SGD steps of a small paper_net on numpy."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True, text=True)
    script = """
import numpy as np, tinycnn
from tinycnn import backends
from tinycnn.backends import kernel_sources
from tinycnn.model import paper_net
from tinycnn.optim import SGD
rng = np.random.default_rng(0)
x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
x, w, b = (a.astype(np.float32) for a in (x, w, b))
emu, ref = backends.get("cuda-emu"), backends.get("numpy")
out, _ = emu.conv2d_forward(x, w, b, stride=1, pad=1)
expected, _ = ref.conv2d_forward(x, w, b, stride=1, pad=1)
np.testing.assert_allclose(emu.to_numpy(out), expected, rtol=1e-5, atol=1e-5)
net = paper_net(hidden=8, in_size=32, seed=0, backend="numpy")
opt = SGD(net.parameters(), lr=0.05, momentum=0.9, backend=net.backend)
xs, ys = rng.random((8, 1, 32, 32), dtype=np.float32), np.array([0, 1] * 4)
losses = []
for _ in range(5):
    loss, dlogits = net.backend.softmax_cross_entropy(net.forward(xs, train=True), ys)
    net.backward(dlogits)
    opt.step()
    losses.append(float(loss))
assert np.isfinite(losses).all()
try:
    import tinycnn.mammo
except ImportError as e:
    app = str(e)
print(tinycnn.__file__, kernel_sources.KERNEL_DIR, app, sep=chr(10))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    res = subprocess.run([python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    package_file, kernel_dir, app_error = res.stdout.strip().splitlines()
    assert Path(package_file).is_relative_to(venv) and Path(kernel_dir).is_relative_to(venv)
    assert "pip install 'tinycnn[app]'" in app_error  # the app says what it needs, in one line

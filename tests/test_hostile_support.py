"""Shared fixtures and helpers of the hostile-input suite (tests/test_hostile_*.py): the
apps run in-process on tiny data (numpy backend, 32 px, hidden 8), a trained run
to classify with and resume from, checkpoints edited by hand, and a fixed amount of
"available memory", signals delivered however pytest was started, apps run as
processes, and a guard against a test that would wait forever. No tests here; the
other test_hostile_* files import these."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinycnn.mammo.experiment import classification

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps"))

import classify  # noqa: E402
import train as train_app  # noqa: E402

TINY = ["--image-size", "32", "--hidden", "8", "--epochs", "1", "--batch-size", "16", "--backend", "numpy",
        "--bootstrap", "20", "--no-progress", "--no-baseline", "--synthetic-count", "8"]
GIB = 1 << 30


def one_error(err: str) -> str:
    """The single `error: ...` line a refusal prints (and no traceback); returns it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def usage_error(main, argv, capsys) -> str:
    """The argparse error main(argv) exits with (code 2); its message."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def train(tmp_path, capsys):
    """train(*args, out="run") -> (exit code, stdout, stderr); --out under tmp_path."""
    def _train(*args, out="run"):
        argv = [*TINY, "--cache-dir", str(tmp_path / "cache"), *args]
        if out is not None:
            argv += ["--out", str(tmp_path / out)]
        rc = train_app.main(argv)
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    return _train


@pytest.fixture
def run_classify(capsys):
    """run_classify(*args) -> (exit code, stdout, stderr), on the numpy backend (the runs'
    own)."""
    def _classify(*args):
        rc = classify.main([str(a) for a in args] + ["--backend", "numpy"])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    return _classify


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny synthetic run (last.npz, best.npz, metrics.json, plots), made once
    per module. Copy it (fresh_run) before changing anything in it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    rc = train_app.main([*TINY, "--cache-dir", str(out.parent / "cache"), "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture
def fresh_run(trained_run, tmp_path):
    """A private copy of trained_run at tmp_path / "run"."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def folder_bytes(folder: Path) -> dict:
    """{relative path: content} of every file under folder (to show nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_rois(root: Path, n: int = 6, size: int = 40, seed: int = 0) -> Path:
    """benign/ and malignant/ with n random 8-bit PNGs each."""
    rng = np.random.default_rng(seed)
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def small_image(path: Path, value: int = 100) -> Path:
    rng = np.random.default_rng(value)
    Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(path)
    return path


def read_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def edit_checkpoint(src, dst, arrays=None, arch=None, meta=None, state=None, drop=()) -> Path:
    """Copy checkpoint src to dst with records replaced or edited by functions:
    arch/meta/state: a callable(record) -> record, or a JSON string put in as is;
    arrays: {name: array} replaced or added; drop: names removed."""
    z = read_npz(src)
    for key, edit in (("__arch__", arch), ("__meta__", meta), ("__state__", state)):
        if isinstance(edit, str):
            z[key] = np.array(edit)
        elif edit is not None:
            z[key] = np.array(json.dumps(edit(json.loads(str(z[key])))))
    z.update(arrays or {})
    for name in drop:
        z.pop(name)
    np.savez(dst, **z)
    return Path(dst)


@pytest.fixture
def memory_available(monkeypatch):
    """memory_available(n): the machine reports n bytes free (None: cannot tell)."""
    from tinycnn.backends import host_memory

    def _set(n):
        monkeypatch.setattr(host_memory, "available_bytes", lambda: n)
    return _set


@pytest.fixture
def no_data_reading(monkeypatch):
    """Fail the test if the app starts reading data (argument-only errors come first)."""
    def refuse(*a, **k):
        raise AssertionError("the data was read before an argument-only error")

    monkeypatch.setattr(classification, "load_dataset", refuse)


@contextlib.contextmanager
def sigint_as_ctrl_c():
    """While the block runs, SIGINT raises KeyboardInterrupt, as at an interactive shell.
    A process started with SIGINT ignored (a background job of a script, nohup in some
    shells, CI runners) keeps it ignored, Python included, so a test that sends itself
    Ctrl-C would see nothing happen. The caller's disposition comes back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def ctrl_c():
    """The test runs with SIGINT as Ctrl-C (sigint_as_ctrl_c), however pytest was started."""
    with sigint_as_ctrl_c():
        yield


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def app_process(app: str, *args, **popen):
    """apps/APP.py as a child process with SIGINT at its default disposition, whatever
    this process inherited (children inherit an ignored SIGINT too), so Ctrl-C reaches
    it as it would from a terminal. stdout and stderr are pipes of text."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps", f"{app}.py")
    return subprocess.Popen([sys.executable, script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default, **popen)


@contextlib.contextmanager
def sigint_ignored():
    """The test process as a background job sees it: SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Hang(Exception):
    """The code under test waited past the guard's time (it opened a named pipe?)."""


@pytest.fixture
def no_hang():
    """Fail, instead of waiting forever, a test whose code blocks (opening a named pipe
    waits for a writer): SIGALRM after 20 s raises Hang."""
    def _raise(signum, frame):
        raise Hang("still waiting after 20 s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)

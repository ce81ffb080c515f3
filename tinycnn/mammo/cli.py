"""What every command-line app (train, classify, scan_film) shares: option types that
refuse inf and nan, text that prints whatever bytes a file name holds, SIGTERM (what
`timeout`, `kill` and batch schedulers send) handled like Ctrl-C, and the choice of a
backend: --backend and --precision with one default (auto), opened by open_backend
with one error line for whatever stands in the way."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading

INTERRUPTED = 130  # the shell's code for a run ended by SIGINT; SIGTERM ends ours the same way


def finite_float(text: str) -> float:
    """argparse type: a float that is neither inf nor nan (float() accepts both, and
    either one turns every later number into nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def printable(text) -> str:
    """`text` safe to print or write as UTF-8. A file name that is not valid UTF-8 reaches
    Python with its bad bytes as lone surrogates (PEP 383), which no UTF-8 stream
    accepts; they are shown as \\xNN instead."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def error(message, code: int = 2) -> int:
    """Print `error: message` on stderr (one line) and return the exit code."""
    print(f"error: {printable(message)}", file=sys.stderr, flush=True)
    return code


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While the block runs, SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so the
    code that saves on Ctrl-C saves on SIGTERM too. The caller's handler comes back
    afterwards (tests run the apps in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tolerant_std_streams() -> None:
    """For a real process (not in-process tests): a character the terminal's encoding
    cannot show prints as an escape instead of ending the run."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


BACKEND_CHOICES = ("auto", "numpy", "numba", "cuda", "cuda-emu")
BACKEND_HELP = ("where the network runs (default auto: cuda on a GPU, else numba when installed, else the numpy "
                "reference); cuda-emu runs the CUDA kernels on the CPU, slowly")
PRECISION_CHOICES = ("auto", "fp32", "tf32", "bf16")
PRECISION_HELP = ("what the conv and dense products compute: fp32 (FP32 operands, CUDA cores), tf32 or bf16 "
                  "(operands rounded to TF32 / BF16, FP32 sums and FP32 master weights: tensor cores on a "
                  "GPU; the numpy and cuda-emu backends compute the same roundings on the CPU); auto: the "
                  "backend's default, tf32 on a GPU with tensor cores (compute capability 8.0+), else fp32")


def add_backend_arguments(parser) -> None:
    """--backend and --precision, the same in every app."""
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)


class BackendError(Exception):
    """The backend asked for cannot run here, or not in the precision asked for."""


def open_backend(name: str, precision: str):
    """The backend `name` ("auto": tinycnn.backends.resolve) in `precision` ("auto": the
    backend's default), ready to use; its .name says which one "auto" chose. One
    BackendError line says why not: the backend cannot run on this machine (no GPU,
    numba not installed, ...) or does not run that precision (naming the modes it runs)."""
    from tinycnn import backends

    try:
        return backends.get(backends.resolve(name), None if precision == "auto" else precision)
    except (backends.BackendUnavailable, ImportError) as e:
        raise BackendError(f"backend {name!r} is not available here: {e}") from e
    except ValueError as e:
        raise BackendError(f"--precision {precision}: {e}") from e


def precision_line(backend) -> str:
    """One line for a banner: the precision mode that runs, and what it means."""
    meaning = {"fp32": "FP32 operands and sums",
               "tf32": "TF32 operands (10-bit mantissa), FP32 sums, FP32 master weights",
               "bf16": "BF16 operands (7-bit mantissa), FP32 sums, FP32 master weights"}
    p = backend.precision
    return f"precision {p}: conv and dense products on {meaning.get(p, p)}"

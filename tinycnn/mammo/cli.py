"""What both command-line apps need to meet hostile input the same way: option types
that refuse inf and nan, text that prints whatever bytes a file name holds, and
SIGTERM (what `timeout`, `kill` and batch schedulers send) handled like Ctrl-C."""

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


PRECISION_CHOICES = ("auto", "fp32", "tf32", "bf16")
PRECISION_HELP = ("what the conv and dense products compute: fp32 (FP32 operands, CUDA cores), tf32 or bf16 "
                  "(operands rounded to TF32 / BF16, FP32 sums and FP32 master weights: tensor cores on a "
                  "GPU; the numpy and cuda-emu backends compute the same roundings on the CPU); auto: the "
                  "backend's default, tf32 on a GPU with tensor cores (compute capability 8.0+), else fp32")


def add_precision_argument(parser) -> None:
    """--precision, the same in every app."""
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)


def backend_with_precision(name: str, precision: str):
    """The backend `name` (already resolved) in --precision `precision` ('auto': its
    default); ValueError naming the modes the backend runs."""
    from tinycnn import backends

    return backends.get(name, None if precision == "auto" else precision)


def precision_line(backend) -> str:
    """One line for a banner: the precision mode that runs, and what it means."""
    meaning = {"fp32": "FP32 operands and sums",
               "tf32": "TF32 operands (10-bit mantissa), FP32 sums, FP32 master weights",
               "bf16": "BF16 operands (7-bit mantissa), FP32 sums, FP32 master weights"}
    p = getattr(backend, "precision", "fp32")
    return f"precision {p}: conv and dense products on {meaning.get(p, p)}"

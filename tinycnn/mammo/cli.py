"""What every command-line app (train, classify, scan_film) shares: option types that
refuse inf and nan, one escape for names (whatever bytes and control characters a file
name holds, it stays one field on one line), SIGTERM (what `timeout`, `kill` and batch
schedulers send) handled like Ctrl-C, running out of memory said in one line, and the
choice of a backend: --backend and --precision with one default (auto), opened by open_backend
with one error line for whatever stands in the way."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
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


# What a name may not carry into a log line, a CSV cell or metrics.json: C0 and C1
# control characters (a newline forges a second line, a carriage return or an escape
# sequence rewrites the terminal), the Unicode line and paragraph separators, the
# bidirectional overrides that show a name reversed, and lone surrogates (the bytes of
# a file name that is not valid UTF-8, PEP 383), which no UTF-8 stream accepts.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text) -> str:
    """`text` as one field on one line, whatever a file name holds: every character
    above (newlines and tabs included) as a backslash escape (\\n, \\t, \\x1b, \\xff
    for a byte that is not UTF-8, \\u202e). The one escape for a name in a log line, an
    error, a CSV cell or metrics.json."""
    return _UNSAFE.sub(_escape, str(text))


def printable(text) -> str:
    """`text` safe to print or write as UTF-8, its own line breaks kept (a banner of
    several lines): everything else shown() escapes is escaped. A name inside it should
    have gone through shown() already, or a newline it holds starts a line."""
    return "\n".join(shown(line) for line in str(text).split("\n"))


def error(message, code: int = 2) -> int:
    """Print `error: message` on stderr, one line whatever names it holds (shown), and
    return the exit code."""
    print(f"error: {shown(message)}", file=sys.stderr, flush=True)
    return code


def note(message) -> None:
    """Print `note: message` on stderr, one line (shown): what the app changed or chose
    on its own (a renamed output, a converted checkpoint), never mixed into stdout,
    which may be a table."""
    print(f"note: {shown(message)}", file=sys.stderr, flush=True)


NOT_ENOUGH_MEMORY = 2  # the exit code of a refusal by estimate (memory.NotEnoughMemory), and of running out


def out_of_memory(what: str, fix: str) -> int:
    """A MemoryError the estimates did not foresee, said in one line with what to lower;
    the exit code."""
    return error(f"ran out of memory {what}: {fix}", NOT_ENOUGH_MEMORY)


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

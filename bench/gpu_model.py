"""A static performance model of the CUDA training step, built from the compiler's
own output. A MODEL, not a measurement: it says where the time should go, and what
a kernel change should move, on a machine without a GPU.

    python -m bench.gpu_model                       # batch 64, hidden 1024, 256x256, H100 SXM + H200
    python -m bench.gpu_model --batch 32 --hidden 28800
    python -m bench.gpu_model --measure             # on a GPU: measured time beside each prediction

Inputs, all read here, none typed in:
- registers, shared memory and spills of every kernel: ``nvcc -arch=sm_90 -cubin
  -Xptxas -v`` on kernels/*.cu (the sources the backend loads);
- the instruction mix of each kernel's main loop: the SASS (``cuobjdump -sass``,
  pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm), the loop being the backward branch whose body
  holds the most FFMA; the body's static instructions are counted once per trip;
- the launch list of one real training step at the requested shapes: the step runs on
  a recording backend (tinycnn.backends.launch.KernelBackend with host arrays that
  are never touched) that keeps every launch's kernel, grid, block and arguments, and
  each launch's layer.

Per launch (assumptions, stated once; they are the model's, to be calibrated):
- issue: every warp executes the code outside the main loop once and the loop body
  once per trip; trips = the reduction length / (TILE_K x FFMA per body / 256) for
  the tiled kernels, positions / lanes for the few-taps weight gradient;
  a scheduler issues one warp instruction per clock when it holds >= 2 warps
  (the main loops have 16 independent FMAs per thread), proportionally less below;
- shared memory: one wavefront (128 bytes) per clock per SM; LDS/STS.32 = 1
  wavefront, .64 = 2, .128 = 2 (the tiles' 128-bit reads: A broadcast to the warp,
  1 wavefront; B 2-4);
- DRAM: every array argument crosses DRAM once (L2 catches the tile reuse; the
  multi-tensor optimizer: 20 or 28 bytes per parameter); grid-stride element-wise
  kernels are DRAM-bound;
- the busiest SM sets the time: it runs ceil(blocks / SMs) blocks (a partial last
  wave costs a whole one);
- each launch costs at least LAUNCH_US (back-to-back launches from a stream).
time = max(issue, shared memory, DRAM), at least LAUNCH_US.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np

from tinycnn.backends import launch
from tinycnn.model import paper_net
from tinycnn.optim import SGD

LAUNCH_US = 2.0
# Bytes an optimizer kernel moves per parameter element (kernels/optim.cu's napkin math).
OPTIMIZER_BYTES = {"sgd_update": 20, "adam_update": 28}


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    sms: int
    clock_ghz: float      # boost clock of the SMs
    dram_tb_s: float      # HBM bandwidth
    schedulers: int = 4   # warp schedulers per SM, one instruction per clock each
    regs_per_sm: int = 65536
    smem_per_sm: int = 228 * 1024
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32


DEVICES = {
    "H100 SXM": Device("H100 SXM", sms=132, clock_ghz=1.98, dram_tb_s=3.35),
    "H200": Device("H200", sms=132, clock_ghz=1.98, dram_tb_s=4.8),
}


# ------------------------------------------------------------ compiler output
@dataclasses.dataclass
class KernelCode:
    """What the compiler says of one kernel."""
    name: str
    registers: int = 0
    smem: int = 0
    spills: int = 0
    total: int = 0                    # static SASS instructions
    loop: dict = dataclasses.field(default_factory=dict)   # opcode class -> count in the main loop body
    loop_len: int = 0                 # static instructions in the main loop body

    @property
    def ffma_share(self) -> float:
        return self.loop.get("FFMA", 0) / self.loop_len if self.loop_len else 0.0


def tool(name: str) -> str | None:
    """nvcc / cuobjdump / nvdisasm: on PATH, or from the nvidia-cuda-* wheels of this Python."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for sub in sorted(os.listdir(root)):
            path = os.path.join(root, sub, "bin", name)
            if os.path.exists(path):
                return path
    return None


_PTXAS_FN = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_REGS = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def opcode_class(op: str) -> str:
    """FFMA, LDS.32/.64/.128, STS.*, LDG, STG, BAR, BRA, INT (integer and address
    arithmetic), or OTHER."""
    base = op.split(".")[0]
    if base in ("LDS", "STS"):
        width = next((w for w in ("128", "64") if f".{w}" in op), "32")
        return f"{base}.{width}"
    if base in ("FFMA", "LDG", "STG", "BAR", "BRA"):
        return base
    if base in ("IMAD", "IADD3", "IABS", "LEA", "SHF", "LOP3", "ISETP", "SEL", "IMNMX", "VIMNMX", "MOV",
                "I2F", "F2I", "MUFU", "IMUL", "UIMAD", "UIADD3", "ULEA", "USHF", "ULOP3", "UISETP", "UMOV",
                "PRMT", "SGXT", "IMAD.WIDE", "FLO", "POPC", "IADD", "P2R", "R2P", "PLOP3", "S2R", "LDC",
                "ULDC", "CS2R", "S2UR"):
        return "INT"
    return "OTHER"


def main_loop(instructions: list) -> tuple[int, dict]:
    """(length, opcode-class counts) of the loop body (a backward branch's span) with
    the most FFMA; (0, {}) when the code has no loop."""
    loops = []
    for i, (addr, op, rest) in enumerate(instructions):
        m = re.search(r"0x([0-9a-f]+)", rest)
        if op.split(".")[0] != "BRA" or not m or int(m.group(1), 16) >= addr:
            continue
        body = [o for a, o, _ in instructions[:i + 1] if a >= int(m.group(1), 16)]
        counts = defaultdict(int)
        for o in body:
            counts[opcode_class(o)] += 1
        loops.append((counts["FFMA"], -len(body), dict(counts)))
    if not loops:
        return 0, {}
    ffma, neg_len, counts = max(loops, key=lambda loop: loop[:2])
    return -neg_len, counts


def compile_kernels(arch: str = "sm_90") -> dict:
    """{kernel name: KernelCode} for every kernel of kernels/*.cu."""
    nvcc, cuobjdump, nvdisasm = tool("nvcc"), tool("cuobjdump"), tool("nvdisasm")
    if not (nvcc and cuobjdump and nvdisasm):
        raise SystemExit("bench.gpu_model needs nvcc, cuobjdump and nvdisasm "
                         "(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    # cuobjdump -sass runs nvdisasm, which it looks for on PATH
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    codes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fname in sorted(launch.kernel_sources()):
            cubin = os.path.join(tmp, fname + ".cubin")
            res = subprocess.run([nvcc, f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-I", launch.KERNEL_DIR,
                                  "-o", cubin, os.path.join(launch.KERNEL_DIR, fname)],
                                 capture_output=True, text=True, check=True)
            current = None
            for line in (res.stdout + res.stderr).splitlines():
                if m := _PTXAS_FN.search(line):
                    current = codes.setdefault(m.group(1), KernelCode(m.group(1)))
                elif current and (m := _PTXAS_REGS.search(line)):
                    current.registers, current.smem = int(m.group(1)), int(m.group(2) or 0)
                elif current and (m := _PTXAS_SPILL.search(line)):
                    current.spills = int(m.group(1)) + int(m.group(2))
            sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True,
                                  env=env).stdout
            for block in sass.split("Function : ")[1:]:
                name = block.split()[0]
                instructions = [(int(a, 16), op, rest) for a, op, rest in _SASS_LINE.findall(block)]
                code = codes.setdefault(name, KernelCode(name))
                code.total = len(instructions)
                code.loop_len, code.loop = main_loop(instructions)
    return codes


# ------------------------------------------------------------ the launch list
@dataclasses.dataclass
class Launch:
    kernel: str
    grid: tuple
    block: tuple
    args: list
    layer: str


class RecordingBackend(launch.KernelBackend):
    """The kernel backend's launch code on host arrays that are never written:
    np.empty reserves address space only, so the paper's shapes cost no memory."""

    name = "recording"
    xp = np

    def __init__(self):
        self.launches: list[Launch] = []
        self.layer = "-"
        self.dry_layers: list[str] = []

    def _launch(self, name, grid, block, args):
        if self._recording is not None:  # a captured step's dry pass: keep each launch's layer
            if not self._recording:
                self.dry_layers = []
            self.dry_layers.append(self.layer)
        super()._launch(name, grid, block, args)

    def _make_graph(self, launches):
        return list(zip(launches, self.dry_layers))

    def _launch_graph(self, graph):
        for (name, grid, block, args), layer in graph:
            self.launches.append(Launch(name, grid, block, list(args), layer))

    def _device_empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def _device_run(self, name, grid, block, args):
        self.launches.append(Launch(name, tuple(grid), tuple(block), list(args), self.layer))

    def _device_copy(self, dst, src):
        np.copyto(dst, src)

    def _device_upload(self, dst, host):
        np.copyto(dst, host)

    def _address(self, a) -> int:
        return a.ctypes.data

    def asarray(self, a, dtype=None):
        a = np.asarray(a)
        return np.ascontiguousarray(a, dtype=dtype or (self.dtype if a.dtype.kind == "f" else a.dtype))

    def to_numpy(self, a):
        return np.asarray(a)

    def synchronize(self):
        pass

    def device_name(self):
        return "recording (no device)"


def label_layers(net, backend) -> None:
    """Make each step of the network (a layer, or a fused conv block named after its
    first layer) name the launches its forward and backward issue."""
    make_steps = net.steps

    def labelled_steps():
        steps = make_steps()
        for step in steps:
            first = getattr(step, "conv", step)
            tag = f"{net.layers.index(first)}:{type(step).__name__.lower()}"
            for method in ("forward", "backward"):
                original = getattr(step, method)

                def labelled(*a, _original=original, _tag=f"{tag} {method[:3]}", **kw):
                    backend.layer = _tag
                    return _original(*a, **kw)
                setattr(step, method, labelled)
        return steps
    net.steps = labelled_steps


def training_step(backend, batch: int, hidden: int, size: int):
    """(run, step, inputs): the training loop's step (tinycnn/mammo/train.py: forward,
    loss, step statistics, backward, SGD-momentum update with the statistics as its
    guard) of paper_net on `backend`; run = backend.capture(step)."""
    from tinycnn.backends.contract import new_step_stats

    net = paper_net(hidden=hidden, in_size=size, seed=0, backend="numpy")
    net.to(backend)
    opt = SGD(net.parameters(), lr=1e-3, momentum=0.9, backend=backend)
    stats = backend.asarray(new_step_stats())

    def step(x, y):
        logits = net.forward(x, train=True)
        loss, dlogits = backend.softmax_cross_entropy(logits, y)
        backend.step_stats_update(stats, loss, logits, y)
        net.backward(dlogits)
        opt.step(guard=stats)

    inputs = (backend.asarray(np.zeros((batch, 1, size, size), np.float32)),
              backend.asarray(np.arange(batch) % 2, dtype=np.int32))
    return backend.capture(step), step, inputs, net


def record_step(batch: int, hidden: int, size: int):
    """(launches, allocations, graph launches) of one replayed training step: the
    third call of the captured step, after the one that fills its arena and the one
    that records its launch list."""
    backend = RecordingBackend()
    run, _, inputs, net = training_step(backend, batch, hidden, size)
    label_layers(net, backend)
    run(*inputs)
    run(*inputs)
    backend.launches.clear()
    allocations, replays = backend.allocations, run.replays
    run(*inputs)
    for lau in backend.launches:  # what runs after the layers: name it
        if lau.kernel in ("sgd_update", "adam_update"):
            lau.layer = "optimizer"
        elif lau.kernel in ("softmax_xent", "train_stats"):
            lau.layer = "loss"
    return backend.launches, backend.allocations - allocations, run.replays - replays


# ------------------------------------------------------------ the model
def _i(args, k: int) -> int:
    return int(args[k])


def reduction_steps(kernel: str, args: list) -> int:
    """TILE_K steps of a tiled kernel's main loop for one block (0: not tiled)."""
    if kernel.startswith("conv2d_forward_igemm"):        # K = C KH KW
        return math.ceil(_i(args, 5) * _i(args, 9) * _i(args, 10) / launch.TILE_K)
    if kernel.startswith("conv2d_relu_maxpool_igemm"):   # the fused block: K = C KH KW
        return math.ceil(_i(args, 6) * _i(args, 10) * _i(args, 11) / launch.TILE_K)
    if kernel.startswith("conv2d_backward_data_igemm"):  # K = F KH KW
        return math.ceil(_i(args, 7) * _i(args, 8) * _i(args, 9) / launch.TILE_K)
    if kernel.startswith("conv2d_backward_filter_igemm"):  # K = this split's share of N OH OW
        n, oh, ow, chunk = _i(args, 3), _i(args, 10), _i(args, 11), _i(args, 14)
        return math.ceil(min(chunk, n * oh * ow) / launch.TILE_K)
    if kernel == "sgemm_strided":
        return math.ceil(min(_i(args, 12), _i(args, 6)) / launch.TILE_K)  # k_chunk, k
    return 0


def main_loop_trips(kernel: str, args: list, code: KernelCode) -> float:
    """Trips of the main loop for one thread (0: no loop model; DRAM-bound)."""
    if kernel == "conv2d_backward_filter_smallk":  # one trip per SMALLK_LANES positions of the chunk
        return math.ceil(_i(args, 15) / launch.SMALLK_LANES)
    steps = reduction_steps(kernel, args)
    if steps and code.loop.get("FFMA"):
        return steps / (code.loop["FFMA"] / (16 * launch.TILE_K))  # 4x4 outputs x TILE_K per thread and step
    return 0


def useful_flops(kernel: str, args: list) -> float:
    """2 M N K of the product a tiled kernel computes (its whole grid)."""
    if kernel.startswith("conv2d_") and "igemm" in kernel:
        # argument positions of (N, C, F, KH, KW, OH, OW)
        where = ((5, 6, 9, 10, 11, 12, 13) if "maxpool" in kernel else (4, 5, 8, 9, 10, 11, 12)
                 if "forward" in kernel else (3, 4, 7, 8, 9, 10, 11))
        n, c, f, kh, kw, oh, ow = (_i(args, k) for k in where)
        return 2.0 * n * oh * ow * f * c * kh * kw
    if kernel == "sgemm_strided":
        return 2.0 * _i(args, 4) * _i(args, 5) * _i(args, 6)
    return 0.0


def occupancy(code: KernelCode, threads: int, dev: Device) -> int:
    """Resident blocks per SM (registers in units of 8 per thread, 256 per warp)."""
    regs = max(8, math.ceil(max(code.registers, 1) / 8) * 8)
    limits = [dev.blocks_per_sm, dev.threads_per_sm // threads,
              dev.regs_per_sm // (regs * 32 * math.ceil(threads / 32))]
    if code.smem:
        limits.append(dev.smem_per_sm // (code.smem + 1024))  # 1 KB reserved per block
    return max(1, min(limits))


@dataclasses.dataclass
class Prediction:
    launch: Launch
    us: float
    bound: str
    flops: float
    dram_bytes: int
    blocks_per_sm: int


def predict(lau: Launch, code: KernelCode, dev: Device) -> Prediction:
    threads = lau.block[0] * lau.block[1] * lau.block[2]
    blocks = lau.grid[0] * lau.grid[1] * lau.grid[2]
    warps = blocks * math.ceil(threads / 32)
    per_sm = occupancy(code, threads, dev)
    clock = dev.clock_ghz * 1e9
    dram = sum(a.nbytes for a in lau.args if isinstance(a, np.ndarray) and a.ndim > 0)
    if lau.kernel in OPTIMIZER_BYTES:  # multi-tensor: the arrays sit behind a pointer table
        dram = int(lau.args[1][-1]) * OPTIMIZER_BYTES[lau.kernel]
    t = {"DRAM": dram / (dev.dram_tb_s * 1e12)}
    trips = main_loop_trips(lau.kernel, lau.args, code)
    if trips:
        # The busiest SM runs ceil(blocks / SMs) blocks, at most per_sm at a time:
        # a partial last wave costs a whole one.
        warps_per_block = math.ceil(threads / 32)
        on_sm = math.ceil(blocks / dev.sms)
        resident = min(per_sm, on_sm) * warps_per_block / dev.schedulers
        per_warp = (code.total - code.loop_len) + trips * code.loop_len
        t["issue"] = on_sm * warps_per_block * per_warp / (dev.schedulers * clock * min(1.0, resident / 2))
        wavefronts = sum(n * {"32": 1, "64": 2, "128": 2}[c.split(".")[1]]
                         for c, n in code.loop.items() if c.startswith(("LDS.", "STS.")))
        t["smem"] = on_sm * warps_per_block * trips * wavefronts / clock
    bound = max(t, key=t.get)
    return Prediction(lau, max(t[bound] * 1e6, LAUNCH_US), bound, useful_flops(lau.kernel, lau.args), dram, per_sm)


# ------------------------------------------------------------ report
def family(kernel: str) -> str:
    return re.sub(r"_\d+x\d+$", "", kernel)


def report(predictions: dict, codes: dict, launches: list, counts: tuple, args) -> str:
    lines = []
    first = next(iter(DEVICES))
    preds = predictions[first]
    lines.append(f"# bench.gpu_model: a static model (not a measurement) of one training step")
    allocations, graphs = counts
    lines.append(f"# paper_net batch {args.batch}, {args.size}x{args.size}, hidden {args.hidden}, SGD momentum; "
                 f"sm_90 SASS; a replayed step: {len(launches)} kernels in {graphs} graph launch(es), "
                 f"{allocations} allocations")
    lines.append("")
    lines.append(f"{'kernel':40s} {'regs':>4s} {'smem':>6s} {'blk/SM':>6s} {'loop':>5s} {'FFMA%':>6s} "
                 f"{'LDS':>4s} {'INT':>4s}")
    for name in sorted({p.launch.kernel for p in preds}):
        c = codes[name]
        blocks = next(p.blocks_per_sm for p in preds if p.launch.kernel == name)
        lds = sum(n for k, n in c.loop.items() if k.startswith("LDS"))
        lines.append(f"{name:40s} {c.registers:4d} {c.smem:6d} {blocks:6d} {c.loop_len:5d} "
                     f"{100 * c.ffma_share:5.1f}% {lds:4d} {c.loop.get('INT', 0):4d}")
    lines.append("")
    head = f"{'layer':18s} {'launches':>8s} {'GFLOP':>7s} {'MB':>8s}"
    for dev in DEVICES:
        head += f" {dev + ' us':>13s}"
    head += "  bound (first device)"
    lines.append(head)
    layers = []
    for p in preds:
        if p.launch.layer not in layers:
            layers.append(p.launch.layer)
    for layer in layers:
        rows = {d: [p for p in predictions[d] if p.launch.layer == layer] for d in DEVICES}
        first_rows = rows[first]
        bounds = defaultdict(float)
        for p in first_rows:
            bounds[f"{family(p.launch.kernel)}:{p.bound}"] += p.us
        top = max(bounds, key=bounds.get)
        line = (f"{layer:18s} {len(first_rows):8d} {sum(p.flops for p in first_rows) / 1e9:7.2f} "
                f"{sum(p.dram_bytes for p in first_rows) / 1e6:8.1f}")
        for d in DEVICES:
            line += f" {sum(p.us for p in rows[d]):13.1f}"
        lines.append(line + f"  {top}")
    lines.append("")
    for d in DEVICES:
        lines.append(f"{d}: {sum(p.us for p in predictions[d]) / 1e3:.2f} ms, "
                     f"{sum(p.flops for p in predictions[d]) / 1e9:.1f} GFLOP in tiled kernels")
    total = sum(p.us for p in predictions[first]) / 1e3
    lines.append(f"predicted step: {total:.2f} ms ({first}, batch {args.batch}, hidden {args.hidden})")
    return "\n".join(lines)


def measure(launches: list, args, repeats: int = 20) -> tuple[list, float]:
    """On a GPU: (each launch of an eager step timed with CUDA events, in launch order;
    the median time of the captured step's graph replays, in microseconds). The
    recorded list and the real one come from the same code; a test checks they match."""
    import cupy

    from tinycnn import backends

    be = backends.get("cuda")
    run, step, inputs, _ = training_step(be, args.batch, args.hidden, args.size)
    timed = []
    original = be._run

    def timed_run(name, grid, block, a):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        original(name, grid, block, a)
        end.record()
        timed.append((name, start, end))

    step(*inputs)
    be.synchronize()
    be._run = timed_run
    try:
        step(*inputs)
        be.synchronize()
    finally:
        be._run = original
    if [n for n, _, _ in timed] != [lau.kernel for lau in launches]:
        raise RuntimeError("the GPU step launched other kernels than the recorded one")
    per_launch = [cupy.cuda.get_elapsed_time(s, e) * 1e3 for _, s, e in timed]
    for _ in range(3):  # arena, capture, first replay
        run(*inputs)
    graph_times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run(*inputs)
        end.record()
        end.synchronize()
        graph_times.append(cupy.cuda.get_elapsed_time(start, end) * 1e3)
    return per_launch, float(np.median(graph_times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--measure", action="store_true", help="on a GPU: time each launch beside its prediction")
    args = ap.parse_args(argv)
    codes = compile_kernels()
    launches, allocations, graphs = record_step(args.batch, args.hidden, args.size)
    predictions = {d: [predict(lau, codes[lau.kernel], dev) for lau in launches] for d, dev in DEVICES.items()}
    text = report(predictions, codes, launches, (allocations, graphs), args)
    if args.measure:
        measured, graph_us = measure(launches, args)
        first = next(iter(DEVICES))
        text += "\n\n# measured (CUDA events, this GPU) beside predicted (" + first + ")\n"
        for p, us in zip(predictions[first], measured):
            text += f"{p.launch.layer:18s} {p.launch.kernel:40s} {p.us:9.1f} {us:9.1f}\n"
        text += f"measured step (sum of eager launches): {sum(measured) / 1e3:.2f} ms\n"
        text += f"measured step (captured graph, median of 20): {graph_us / 1e3:.2f} ms"
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A static performance model of the CUDA training step, built from the compiler's
own output. A MODEL, not a measurement: it says where the time should go, and what
a kernel change should move, on a machine without a GPU.

    python -m bench.gpu_model                       # batch 64, hidden 1024, 256x256, H100 SXM + H200,
                                                    # each precision mode (fp32, tf32, bf16)
    python -m bench.gpu_model --precision tf32      # one mode
    python -m bench.gpu_model --batch 32 --hidden 28800
    python -m bench.gpu_model --measure             # on a GPU: measured time beside each prediction

Inputs, all read here, none typed in:
- registers, shared memory and spills of every kernel: ``nvcc -arch=sm_90 -cubin
  -Xptxas -v`` on kernels/*.cu (the sources the backend loads);
- the instruction mix of each kernel's main loop: the SASS (``cuobjdump -sass``,
  pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm), the loop being the backward
  branch whose body holds the most HMMA (the tensor-core kernels of gemm_tc.cu and
  conv2d_tc.cu), else the most FFMA; among equals the shortest (a kernel with several
  such loops, e.g. gemm_tc.cu's four operand orientations or a table path beside its
  fallback, is modelled by its fastest; the report's "alt" column counts them); the
  body's static instructions are counted once per trip;
- the launch list of one real training step at the requested shapes, in each precision
  mode: the step runs on a recording backend (tinycnn.backends.KernelBackend,
  in that mode, with host arrays that are never touched) that keeps every launch's
  kernel, grid, block and arguments, and each launch's layer.

Per launch (assumptions, stated once; they are the model's, to be calibrated):
- issue: every warp executes the code outside the main loop once and the loop body
  once per trip; trips = the reduction length / (TILE_K x FFMA per body / 256) for
  the FP32 tiled kernels, positions / lanes for the few-taps weight gradient, and
  k_tiles / (HMMA per body / hmma_per_trip) for the
  tensor-core kernels; a scheduler issues one warp instruction per clock when it holds
  >= 2 warps (the main loops have 16 independent FMAs or 8 independent mma
  accumulators per thread), proportionally less below; an HMMA takes one issue slot
  like any other instruction;
- tensor cores (HMMA kernels): each HMMA does HMMA_FLOPS[opcode] FLOPs
  (whole fragments, idle rows of a tile included); an SM's tensor cores do
  MMA_SYNC_FRACTION x the dense peak (PEAK_TFLOPS) / (SMs x clock) FLOPs
  per clock: warp-level mma.sync does not reach Hopper's wgmma peak (see
  MMA_SYNC_FRACTION, an assumption);
- shared memory: one wavefront (128 bytes) per clock per SM; LDS/STS.32 = 1
  wavefront, .64 = 2, .128 = 2 in the FP32 tiles (their 128-bit reads: A broadcast to
  the warp, 1 wavefront; B 2-4) and 4 in the tensor-core tiles (every lane reads or
  writes its own 16 bytes, conflict-free by the swizzle of kernels/tc_tile.cuh; a
  cp.async LDGSTS.128 writes as much);
- DRAM: every array argument crosses DRAM once (L2 catches the tile reuse; the
  multi-tensor optimizer: 20 or 28 bytes per parameter); grid-stride element-wise
  kernels are DRAM-bound;
- the busiest SM sets the time: it runs ceil(blocks / SMs) blocks (a partial last
  wave costs a whole one);
- latency: a main loop with global loads (LDG) waits for them once per trip, and only
  the warps resident at the same time overlap their waits, so the busiest SM needs
  at least ceil(its blocks / blocks per SM) x trips x the per-trip time, where a trip
  costs MEM_LATENCY_CLOCKS + its body when the loop uses its loads in the same trip
  (it stages nothing into shared memory: the few-taps weight gradient) and
  max(MEM_LATENCY_CLOCKS, its body) when it stages them (the tiles prefetch the next
  k-tile into registers or by cp.async while the math runs); this is where occupancy
  (blocks per SM from registers, shared memory and threads) enters;
- each launch costs at least LAUNCH_US (back-to-back launches from a stream).
time = max(issue, shared memory, DRAM, tensor, latency), at least LAUNCH_US.

Reported per tiled launch: the HMMA (or FFMA) share of the main loop's instructions,
the operand bytes its block tiles stage (FP32 elements read through L2, whole grid),
the occupancy (blocks per SM from registers, shared memory and threads), each bound's
time and the one that sets it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.hmma import HMMA_FLOPS, PEAK_TFLOPS, hmma_per_trip, k_tiles
from tinycnn import paths
from tinycnn.backends import geometry as geo
from tinycnn.backends.cuda_emu import HostMemory
from tinycnn.backends.kernel_backend import KernelBackend
from tinycnn.backends.kernel_sources import KERNEL_DIR, kernel_sources
from tinycnn.model import paper_net
from tinycnn.optim import SGD
from tinycnn.precision import PRECISIONS, TENSOR_CORE_PRECISIONS

LAUNCH_US = 2.0
# Bytes an optimizer kernel moves per parameter element (kernels/optim.cu's napkin math).
OPTIMIZER_BYTES = {"sgd_update": 20, "adam_update": 28}

#: ASSUMPTION: the fraction of the dense tensor-core peak that warp-level mma.sync (our
#: HMMA.1688 / HMMA.16816) can reach on Hopper; the full peak needs the warp-group wgmma.
#: Public, unofficial figures: Hazy Research, "GPUs Go Brrr" (2024-05-12): without wgmma
#: an H100 "tops out around 63%" of peak; a CUDA forum-style report of WMMA at about 50%
#: of the FP16 peak with no memory traffic at all; kernels/gemm_tc.cu's header guessed 2/3.
#: 5/8 sits in that range. A GPU run (bench.variants.run, gpu_model --measure) calibrates it.
MMA_SYNC_FRACTION = 0.625
#: ASSUMPTION: SM clocks from issuing a global load that misses L2 to its use (about
#: 0.3 us at 1.98 GHz), the order public microbenchmarks give for an H100's HBM3; the
#: few-taps weight gradient, whose trips each wait for one, is the launch that
#: gpu_model --measure calibrates it by.
MEM_LATENCY_CLOCKS = 600
#: The precision of each HMMA opcode (its row of PEAK_TFLOPS).
MMA_PRECISION = {op: ("tf32" if op.endswith("TF32") else "bf16") for op in HMMA_FLOPS}
# Shared-memory wavefronts (128 bytes) of one warp's LDS / STS by width: the FP32 tiles
# broadcast their A reads (see the module docstring), the tensor-core tiles do not.
WAVEFRONTS_FP32 = {"32": 1, "64": 2, "128": 2}
WAVEFRONTS_TC = {"32": 1, "64": 2, "128": 4}


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
    # dense tensor-core peaks by precision, TFLOP/s (the data sheets: the same GH100 chip)
    tensor_tflops: dict = dataclasses.field(default_factory=lambda: dict(PEAK_TFLOPS))

    def tensor_flops_per_clock(self, precision: str) -> float:
        """Dense FLOPs per clock of one SM's tensor cores at the model's clock."""
        return self.tensor_tflops[precision] * 1e12 / (self.sms * self.clock_ghz * 1e9)


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
    alternatives: int = 1             # loops as good as the main one by HMMA and FFMA count
    launch_bounds: tuple = ()         # (max threads, min blocks per SM or 0) of __launch_bounds__

    @property
    def stages_loads(self) -> bool:
        """Whether the main loop writes shared memory (a tile staging the next k-tile
        while the math runs) rather than using its global loads in the same trip."""
        return bool(self.loop.get("LDGSTS")) or any(c.startswith("STS") for c in self.loop)

    @property
    def ffma_share(self) -> float:
        return self.loop.get("FFMA", 0) / self.loop_len if self.loop_len else 0.0

    @property
    def hmma(self) -> int:
        """HMMA instructions in the main loop body (per warp and trip)."""
        return sum(n for c, n in self.loop.items() if c.startswith("HMMA"))

    @property
    def hmma_share(self) -> float:
        return self.hmma / self.loop_len if self.loop_len else 0.0

    @property
    def mma_flops(self) -> int:
        """FLOPs of the main loop body's HMMA, per warp and trip."""
        return sum(n * HMMA_FLOPS[c] for c, n in self.loop.items() if c.startswith("HMMA"))

    def tensor_clocks(self, dev: Device) -> float:
        """SM clocks the tensor cores need for one warp's trip of the main loop, at
        MMA_SYNC_FRACTION of the dense peak."""
        return sum(n * HMMA_FLOPS[c] / (MMA_SYNC_FRACTION * dev.tensor_flops_per_clock(MMA_PRECISION[c]))
                   for c, n in self.loop.items() if c.startswith("HMMA"))


def tool(name: str) -> str | None:
    """nvcc / cuobjdump / nvdisasm: on PATH, in the CUDA toolkit ($CUDA_HOME, else
    /usr/local/cuda), or from the nvidia-cuda-* wheels of this Python."""
    found = shutil.which(name)
    if found:
        return found
    toolkit = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", name)
    if os.path.exists(toolkit):
        return toolkit
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
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")  # on the same line, after barriers and any stack size
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def opcode_class(op: str) -> str:
    """FFMA, LDS.32/.64/.128, STS.*, LDGSTS (cp.async, 16 bytes), LDG, STG, BAR, BRA,
    INT (integer and address arithmetic), OTHER, or an HMMA's whole opcode (its shape
    and types set its FLOPs: HMMA_FLOPS; another HMMA is an error)."""
    base = op.split(".")[0]
    if base == "HMMA":
        if op not in HMMA_FLOPS:
            raise ValueError(f"{op}: an HMMA shape the model does not know (HMMA_FLOPS)")
        return op
    if base in ("LDS", "STS"):
        width = next((w for w in ("128", "64") if f".{w}" in op), "32")
        return f"{base}.{width}"
    if base == "LDGSTS":
        return base
    if base in ("FFMA", "LDG", "STG", "BAR", "BRA"):
        return base
    if base in ("IMAD", "IADD3", "IABS", "LEA", "SHF", "LOP3", "ISETP", "SEL", "IMNMX", "VIMNMX", "MOV",
                "I2F", "F2I", "MUFU", "IMUL", "UIMAD", "UIADD3", "ULEA", "USHF", "ULOP3", "UISETP", "UMOV",
                "PRMT", "SGXT", "IMAD.WIDE", "FLO", "POPC", "IADD", "P2R", "R2P", "PLOP3", "S2R", "LDC",
                "ULDC", "CS2R", "S2UR"):
        return "INT"
    return "OTHER"


def loops(instructions: list) -> list[tuple[int, dict]]:
    """(length, opcode-class counts) of every loop body: a backward branch's span."""
    found = []
    for i, (addr, op, rest) in enumerate(instructions):
        m = re.search(r"0x([0-9a-f]+)", rest)
        if op.split(".")[0] != "BRA" or not m or int(m.group(1), 16) >= addr:
            continue
        counts = defaultdict(int)
        for a, o, _ in instructions[:i + 1]:
            if a >= int(m.group(1), 16):
                counts[opcode_class(o)] += 1
        found.append((sum(counts.values()), dict(counts)))
    return found


def _work(counts: dict) -> tuple[int, int]:
    """What makes a loop the main one: its HMMA, then its FFMA."""
    return sum(n for c, n in counts.items() if c.startswith("HMMA")), counts.get("FFMA", 0)


def main_loop(instructions: list) -> tuple[int, dict]:
    """(length, opcode-class counts) of the loop body with the most HMMA, else the most
    FFMA, the shortest among equals; (0, {}) when the code has no loop."""
    found = loops(instructions)
    if not found:
        return 0, {}
    return max(found, key=lambda loop: (*_work(loop[1]), -loop[0]))


def alternatives(instructions: list) -> int:
    """How many loops hold as many HMMA and FFMA as the main loop (orientations or
    paths of which a launch runs one; the model takes the shortest)."""
    _, counts = main_loop(instructions)
    return sum(_work(c) == _work(counts) for _, c in loops(instructions)) if counts else 0


def parse_ptxas(log: str, codes: dict) -> None:
    """Registers, static shared memory and spill bytes of each kernel of a ``ptxas -v``
    log, into codes {name: KernelCode} (created as needed)."""
    current = None
    for line in log.splitlines():
        if m := _PTXAS_FN.search(line):
            current = codes.setdefault(m.group(1), KernelCode(m.group(1)))
        elif current and (m := _PTXAS_REGS.search(line)):
            smem = _PTXAS_SMEM.search(line)
            current.registers, current.smem = int(m.group(1)), int(smem.group(1)) if smem else 0
        elif current and (m := _PTXAS_SPILL.search(line)):
            current.spills = int(m.group(1)) + int(m.group(2))


_LAUNCH_BOUNDS = re.compile(r'extern\s+"C"\s+__global__\s+void\s+__launch_bounds__\s*\(([^)]*)\)\s*(\w+)\s*\(')


_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Z][A-Z0-9_]*)\s+(\d+)\b", re.M)


def launch_bounds(source: str) -> dict:
    """{kernel: (max threads, min blocks per SM, 0 where not given)} of every kernel of
    `source` (a self-contained file, its headers inlined) declared with
    __launch_bounds__; its arguments are numbers or names the source #defines."""
    constants = {name: int(value) for name, value in _DEFINE.findall(source)}
    out = {}
    for args, name in _LAUNCH_BOUNDS.findall(source):
        values = [int(a) if a.strip().isdigit() else constants[a.strip()] for a in args.split(",")]
        out[name] = (values[0], values[1] if len(values) > 1 else 0)
    return out


@functools.lru_cache(maxsize=None)
def _tool_versions() -> str:
    return "\n".join(subprocess.run([tool(t), "--version"], capture_output=True, text=True).stdout
                     for t in ("nvcc", "cuobjdump", "nvdisasm"))


def _compile_file(fname: str, arch: str, folder: str) -> tuple[str, str]:
    """(ptxas -v log, SASS) of one kernels/*.cu, from the disk cache (tinycnn.paths.cache_dir()
    / gpu-model, keyed by the file with its headers inlined, the architecture and the
    tools' versions) or compiled now and stored there."""
    source = kernel_sources()[fname][0]
    key = hashlib.sha256("\0".join((fname, arch, _tool_versions(), source)).encode()).hexdigest()[:24]
    cached = os.path.join(str(paths.cache_dir()), "gpu-model", f"{fname}-{arch}-{key}.json.gz")
    if os.path.exists(cached):
        with open(cached, "rb") as f:
            entry = json.loads(gzip.decompress(f.read()))
        return entry["log"], entry["sass"]
    log, sass = _run_compiler(fname, arch, folder)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with paths.atomic_write(cached, "wb") as f:
        f.write(gzip.compress(json.dumps({"log": log, "sass": sass}).encode()))
    return log, sass


def _run_compiler(fname: str, arch: str, folder: str) -> tuple[str, str]:
    """(ptxas -v log, SASS) of one kernels/*.cu, by nvcc and cuobjdump."""
    nvcc, cuobjdump, nvdisasm = tool("nvcc"), tool("cuobjdump"), tool("nvdisasm")
    # cuobjdump -sass runs nvdisasm, which it looks for on PATH
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    cubin = os.path.join(folder, fname + ".cubin")
    res = subprocess.run([nvcc, f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-I", KERNEL_DIR,
                          "-o", cubin, os.path.join(KERNEL_DIR, fname)],
                         capture_output=True, text=True, check=True)
    sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True, env=env).stdout
    return res.stdout + res.stderr, sass


@functools.lru_cache(maxsize=None)
def compile_kernels(arch: str = "sm_90") -> dict:
    """{kernel name: KernelCode} for every kernel of kernels/*.cu (the files compiled in
    parallel, once per process, the compilers' output cached on disk)."""
    if not all(tool(t) for t in ("nvcc", "cuobjdump", "nvdisasm")):
        raise SystemExit("bench.gpu_model needs nvcc, cuobjdump and nvdisasm "
                         "(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    codes = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outputs = pool.map(lambda fname: _compile_file(fname, arch, tmp), sorted(kernel_sources()))
        for log, sass in outputs:
            parse_ptxas(log, codes)
            for block in sass.split("Function : ")[1:]:
                name = block.split()[0]
                instructions = [(int(a, 16), op, rest) for a, op, rest in _SASS_LINE.findall(block)]
                code = codes.setdefault(name, KernelCode(name))
                code.total = len(instructions)
                code.loop_len, code.loop = main_loop(instructions)
                code.alternatives = alternatives(instructions)
    for source, _ in kernel_sources().values():
        for name, bounds in launch_bounds(source).items():
            if name in codes:
                codes[name].launch_bounds = bounds
    return codes


# ------------------------------------------------------------ the launch list
@dataclasses.dataclass
class Launch:
    kernel: str
    grid: tuple
    block: tuple
    args: list
    layer: str


class RecordingBackend(HostMemory, KernelBackend):
    """The kernel backend's launch code on host arrays that are never written:
    np.empty reserves address space only, so the paper's shapes cost no memory."""

    name = "recording"
    xp = np

    def __init__(self, precision: str = "fp32"):
        """precision: the mode whose kernels the step launches (fp32, tf32, bf16)."""
        self._set_precision(precision, "fp32")
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

    def _device_run(self, name, grid, block, args):
        self.launches.append(Launch(name, tuple(grid), tuple(block), list(args), self.layer))

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
    """Make each entry of the network's run plan (a layer, or a fused conv block named
    after its first layer) name the launches its forward and backward issue."""
    make_plan = net.run_plan

    def labelled_plan():
        plan = make_plan()
        for step in plan:
            first = getattr(step, "conv", step)
            tag = f"{net.layers.index(first)}:{type(step).__name__.lower()}"
            for method in ("forward", "backward"):
                original = getattr(step, method)

                def labelled(*a, _original=original, _tag=f"{tag} {method[:3]}", **kw):
                    backend.layer = _tag
                    return _original(*a, **kw)
                setattr(step, method, labelled)
        return plan
    net.run_plan = labelled_plan


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


def record_step(batch: int, hidden: int, size: int, precision: str = "fp32"):
    """(launches, allocations, graph launches) of one replayed training step in that
    precision mode: the third call of the captured step, after the one that fills its
    arena and the one that records its launch list."""
    backend = RecordingBackend(precision)
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


_CONV = re.compile(r"conv2d_(forward|relu_maxpool|backward_data|backward_filter)_(igemm|tf32|bf16)_(\d+)x(\d+)")
_GEMM = re.compile(r"sgemm_(?:(tf32|bf16)_)?strided")


def tile_shape(kernel: str) -> tuple[int, int] | None:
    """(BM, BN) of a tiled product kernel (conv2d's *_BMxBN, the SGEMMs' 64 x 64); None
    for any other kernel."""
    if m := _CONV.fullmatch(kernel):
        return int(m.group(3)), int(m.group(4))
    if m := _GEMM.fullmatch(kernel):
        return (geo.TC_GEMM_TILE,) * 2 if m.group(1) else (geo.TILE_M, geo.TILE_N)
    return None


def kernel_precision(kernel: str) -> str:
    """The precision mode a kernel computes in: tf32 or bf16 for the tensor-core kernels
    and the few-taps weight gradient that rounds like them, else fp32."""
    return next((p for p in TENSOR_CORE_PRECISIONS if f"_{p}" in kernel), "fp32")


def reduction_steps(kernel: str, args: list) -> int:
    """TILE_K steps of an FP32 tiled kernel's main loop for one block (0: not one)."""
    if kernel.startswith("conv2d_forward_igemm"):        # K = C KH KW
        return math.ceil(_i(args, 5) * _i(args, 9) * _i(args, 10) / geo.TILE_K)
    if kernel.startswith("conv2d_relu_maxpool_igemm"):   # the fused block: K = C KH KW
        return math.ceil(_i(args, 6) * _i(args, 10) * _i(args, 11) / geo.TILE_K)
    if kernel.startswith("conv2d_backward_data_igemm"):  # K = F KH KW
        return math.ceil(_i(args, 7) * _i(args, 8) * _i(args, 9) / geo.TILE_K)
    if kernel.startswith("conv2d_backward_filter_igemm"):  # K = this split's share of N OH OW
        n, oh, ow, chunk = _i(args, 3), _i(args, 10), _i(args, 11), _i(args, 14)
        return math.ceil(min(chunk, n * oh * ow) / geo.TILE_K)
    if kernel == "sgemm_strided":
        return math.ceil(min(_i(args, 12), _i(args, 6)) / geo.TILE_K)  # k_chunk, k
    return 0


def main_loop_trips(kernel: str, args: list, code: KernelCode) -> float:
    """Trips of the main loop for one thread (0: no loop model; DRAM-bound)."""
    if kernel.startswith("conv2d_backward_filter_smallk"):  # one trip per SMALLK_LANES positions of the chunk
        return math.ceil(_i(args, 15) / geo.SMALLK_LANES)
    if kernel.startswith("conv2d_relu_maxpool_smallk"):  # one trip per filter of the block (the taps unrolled)
        return min(geo.SMALLK_FWD_FILTERS, _i(args, 9))
    tiles = k_tiles(kernel, args)
    if tiles and code.hmma:  # the body may hold several k-tiles' HMMA (an unrolled loop)
        return tiles / (code.hmma / hmma_per_trip(*tile_shape(kernel)))
    steps = reduction_steps(kernel, args)
    if steps and code.loop.get("FFMA"):
        return steps / (code.loop["FFMA"] / (16 * geo.TILE_K))  # 4x4 outputs x TILE_K per thread and step
    return 0


def operand_bytes(kernel: str, args: list, blocks: int) -> int:
    """Bytes of FP32 operands the block tiles of a tiled kernel read (through L2, into
    registers, converted, into shared memory), whole grid: (BM + BN) x the depth of K
    each block stages x 4 bytes; 0 for other kernels."""
    shape = tile_shape(kernel)
    if shape is None:
        return 0
    tiles = k_tiles(kernel, args)
    depth = (tiles * geo.k_tile(kernel_precision(kernel)) if tiles
             else reduction_steps(kernel, args) * geo.TILE_K)
    return blocks * depth * sum(shape) * 4


def useful_flops(kernel: str, args: list) -> float:
    """2 M N K of the product a tiled kernel computes (its whole grid)."""
    if m := _CONV.fullmatch(kernel):
        # argument positions of (N, C, F, KH, KW, OH, OW)
        where = {"relu_maxpool": (5, 6, 9, 10, 11, 12, 13), "forward": (4, 5, 8, 9, 10, 11, 12)}.get(
            m.group(1), (3, 4, 7, 8, 9, 10, 11))
        n, c, f, kh, kw, oh, ow = (_i(args, k) for k in where)
        return 2.0 * n * oh * ow * f * c * kh * kw
    if _GEMM.fullmatch(kernel):
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


def smem_wavefronts(code: KernelCode) -> int:
    """Shared-memory wavefronts of one warp's trip of the main loop."""
    width = WAVEFRONTS_TC if code.hmma else WAVEFRONTS_FP32
    return (sum(n * width[c.split(".")[1]] for c, n in code.loop.items() if c.startswith(("LDS.", "STS.")))
            + code.loop.get("LDGSTS", 0) * width["128"])


@dataclasses.dataclass
class Prediction:
    launch: Launch
    us: float                 # the launch's predicted time
    bound: str                # the bound that sets it: issue, smem, DRAM, tensor or latency
    flops: float              # useful FLOPs (2 M N K of a tiled product)
    dram_bytes: int
    blocks_per_sm: int        # occupancy
    times: dict = dataclasses.field(default_factory=dict)  # each bound's time, us
    trips: float = 0.0        # main-loop trips per warp
    operand_bytes: int = 0    # FP32 operands the block tiles stage, whole grid
    mma_flops: float = 0.0    # FLOPs the tensor cores execute (whole fragments), whole grid


def predict(lau: Launch, code: KernelCode, dev: Device) -> Prediction:
    threads = lau.block[0] * lau.block[1] * lau.block[2]
    blocks = lau.grid[0] * lau.grid[1] * lau.grid[2]
    per_sm = occupancy(code, threads, dev)
    clock = dev.clock_ghz * 1e9
    dram = sum(a.nbytes for a in lau.args if isinstance(a, np.ndarray) and a.ndim > 0)
    if lau.kernel in OPTIMIZER_BYTES:  # multi-tensor: the arrays sit behind a pointer table
        dram = int(lau.args[1][-1]) * OPTIMIZER_BYTES[lau.kernel]
    t = {"DRAM": dram / (dev.dram_tb_s * 1e12)}
    trips = main_loop_trips(lau.kernel, lau.args, code)
    mma = 0.0
    if trips:
        # The busiest SM runs ceil(blocks / SMs) blocks, at most per_sm at a time:
        # a partial last wave costs a whole one.
        warps_per_block = math.ceil(threads / 32)
        on_sm = math.ceil(blocks / dev.sms)
        resident = min(per_sm, on_sm) * warps_per_block / dev.schedulers
        per_warp = (code.total - code.loop_len) + trips * code.loop_len
        t["issue"] = on_sm * warps_per_block * per_warp / (dev.schedulers * clock * min(1.0, resident / 2))
        t["smem"] = on_sm * warps_per_block * trips * smem_wavefronts(code) / clock
        if code.hmma:  # the SM's tensor cores, shared by its warps
            t["tensor"] = on_sm * warps_per_block * trips * code.tensor_clocks(dev) / clock
            mma = blocks * warps_per_block * trips * code.mma_flops
        if code.loop.get("LDG"):  # each resident block's trips wait in turn; rounds of resident blocks
            rounds = math.ceil(on_sm / min(per_sm, on_sm))
            trip = (max(MEM_LATENCY_CLOCKS, code.loop_len) if code.stages_loads
                    else MEM_LATENCY_CLOCKS + code.loop_len)
            t["latency"] = rounds * trips * trip / clock
    bound = max(t, key=t.get)
    return Prediction(lau, max(t[bound] * 1e6, LAUNCH_US), bound, useful_flops(lau.kernel, lau.args), dram, per_sm,
                      {k: v * 1e6 for k, v in t.items()}, trips, operand_bytes(lau.kernel, lau.args, blocks), mma)


def predict_step(launches: list, codes: dict) -> dict:
    """{device name: [Prediction of each launch]}."""
    return {d: [predict(lau, codes[lau.kernel], dev) for lau in launches] for d, dev in DEVICES.items()}


def model_device(name: str) -> str | None:
    """The DEVICES entry that models a GPU of this CUDA device name ('NVIDIA H100 80GB
    HBM3' is the SXM part, 'NVIDIA H200'); None for a GPU the model has no entry for."""
    upper = name.upper()
    if "H200" in upper:
        return "H200"
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):
        return "H100 SXM"
    return None


def predicted_step_ms(precision: str, batch: int, hidden: int, size: int, device: str) -> float:
    """The model's time of one replayed captured training step (ms) on DEVICES[device]."""
    launches, _, _ = record_step(batch, hidden, size, precision)
    codes = compile_kernels()
    return step_ms([predict(lau, codes[lau.kernel], DEVICES[device]) for lau in launches])


# ------------------------------------------------------------ report
def family(kernel: str) -> str:
    return re.sub(r"_\d+x\d+$", "", kernel)


def kernel_table(preds: list, codes: dict) -> list[str]:
    """What the compiler says of each kernel the step launches."""
    lines = [f"{'kernel':40s} {'bounds':>7s} {'regs':>4s} {'spill':>5s} {'smem':>6s} {'blk/SM':>6s} {'loop':>5s} "
             f"{'alt':>3s} {'FFMA%':>6s} {'HMMA%':>6s} {'LDS':>4s} {'INT':>4s}"]
    for name in sorted({p.launch.kernel for p in preds}):
        c = codes[name]
        blocks = next(p.blocks_per_sm for p in preds if p.launch.kernel == name)
        lds = sum(n for k, n in c.loop.items() if k.startswith("LDS"))
        alt = str(c.alternatives) if any(_work(c.loop)) else "-"  # ties of loops without work mean nothing
        bounds = f"{c.launch_bounds[0]}/{c.launch_bounds[1] or '-'}" if c.launch_bounds else "-"
        lines.append(f"{name:40s} {bounds:>7s} {c.registers:4d} {c.spills:5d} {c.smem:6d} {blocks:6d} {c.loop_len:5d} "
                     f"{alt:>3s} {100 * c.ffma_share:5.1f}% {100 * c.hmma_share:5.1f}% {lds:4d} "
                     f"{c.loop.get('INT', 0):4d}")
    return lines


def launch_table(preds: list, codes: dict) -> list[str]:
    """Each launch with a main-loop model (the tiled products, the few-taps weight
    gradient): its grid, occupancy, trips, the HMMA (or FFMA) share of its loop, the
    operands its tiles stage, each bound's time and the one that sets it."""
    lines = [f"{'layer':16s} {'kernel':38s} {'blocks':>6s} {'blk/SM':>6s} {'trips':>6s} {'unit':>9s} "
             f"{'operand MB':>10s} {'issue':>7s} {'smem':>7s} {'DRAM':>7s} {'tensor':>7s} {'latency':>7s}  bound"]
    for p in preds:
        if not p.trips:
            continue
        c = codes[p.launch.kernel]
        unit = f"HMMA {100 * c.hmma_share:3.0f}%" if c.hmma else f"FFMA {100 * c.ffma_share:3.0f}%"
        blocks = p.launch.grid[0] * p.launch.grid[1] * p.launch.grid[2]
        times = " ".join(f"{p.times[k]:7.1f}" if k in p.times else f"{'-':>7s}"
                         for k in ("issue", "smem", "DRAM", "tensor", "latency"))
        lines.append(f"{p.launch.layer:16s} {p.launch.kernel:38s} {blocks:6d} {p.blocks_per_sm:6d} {p.trips:6.1f} "
                     f"{unit:>9s} {p.operand_bytes / 1e6:10.1f} {times}  {p.bound}")
    return lines


def layer_table(predictions: dict) -> list[str]:
    """Launches, useful GFLOP, DRAM MB and time of each layer, per device."""
    first = next(iter(DEVICES))
    head = f"{'layer':18s} {'launches':>8s} {'GFLOP':>7s} {'MB':>8s}"
    for dev in DEVICES:
        head += f" {dev + ' us':>13s}"
    lines = [head + "  bound (first device)"]
    layers = list(dict.fromkeys(p.launch.layer for p in predictions[first]))
    for layer in layers:
        rows = {d: [p for p in predictions[d] if p.launch.layer == layer] for d in DEVICES}
        bounds = defaultdict(float)
        for p in rows[first]:
            bounds[f"{family(p.launch.kernel)}:{p.bound}"] += p.us
        line = (f"{layer:18s} {len(rows[first]):8d} {sum(p.flops for p in rows[first]) / 1e9:7.2f} "
                f"{sum(p.dram_bytes for p in rows[first]) / 1e6:8.1f}")
        for d in DEVICES:
            line += f" {sum(p.us for p in rows[d]):13.1f}"
        lines.append(line + f"  {max(bounds, key=bounds.get)}")
    return lines


def step_ms(preds: list) -> float:
    return sum(p.us for p in preds) / 1e3


def report(precision: str, predictions: dict, codes: dict, launches: list, counts: tuple, args) -> str:
    """One precision mode's section: kernels, tiled launches, layers, step time per device."""
    first = next(iter(DEVICES))
    allocations, graphs = counts
    lines = [f"# bench.gpu_model: a static model (not a measurement) of one training step, precision {precision}",
             f"# paper_net batch {args.batch}, {args.size}x{args.size}, hidden {args.hidden}, SGD momentum; "
             f"sm_90 SASS; a replayed step: {len(launches)} kernels in {graphs} graph launch(es), "
             f"{allocations} allocations"]
    if precision != "fp32":
        lines.append(f"# tensor cores: {MMA_SYNC_FRACTION:g} (MMA_SYNC_FRACTION, an assumption) of the dense peak "
                     f"{DEVICES[first].tensor_tflops[precision]:g} TFLOP/s = "
                     f"{MMA_SYNC_FRACTION * DEVICES[first].tensor_flops_per_clock(precision):.0f} FLOP per SM clock")
    lines += [""] + kernel_table(predictions[first], codes)
    lines += ["", f"# launches with a main-loop model ({first}; times in us)"] + launch_table(predictions[first], codes)
    lines += [""] + layer_table(predictions) + [""]
    for d in DEVICES:
        mma = sum(p.mma_flops for p in predictions[d])
        lines.append(f"{d}: {step_ms(predictions[d]):.2f} ms, {sum(p.flops for p in predictions[d]) / 1e9:.1f} "
                     f"GFLOP in tiled kernels" + (f" ({mma / 1e9:.1f} GFLOP of HMMA issued)" if mma else ""))
    return "\n".join(lines)


def summary(totals: dict, args) -> str:
    """The step time of each precision mode on each device, and the one-line result."""
    first = next(iter(DEVICES))
    lines = ["# predicted step time per precision mode (a model, not a measurement)",
             f"{'precision':10s}" + "".join(f" {d + ' ms':>12s}" for d in DEVICES)]
    for precision, per_device in totals.items():
        lines.append(f"{precision:10s}" + "".join(f" {per_device[d]:12.2f}" for d in DEVICES))
    lines.append("predicted step: " + ", ".join(f"{p} {t[first]:.2f} ms" for p, t in totals.items())
                 + f" ({first}, batch {args.batch}, hidden {args.hidden})")
    return "\n".join(lines)


def measure(launches: list, args, precision: str = "fp32", repeats: int = 20) -> tuple[list, float]:
    """On a GPU: (each launch of an eager step in that precision mode timed with CUDA
    events, in launch order; the median time of the captured step's graph replays, in
    microseconds). The recorded list and the real one come from the same code; a test
    checks they match."""
    import cupy

    from tinycnn import backends

    be = backends.get("cuda", precision)
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
        raise RuntimeError(f"the GPU step ({precision}) launched other kernels than the recorded one")
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


def gpu_unavailable() -> str | None:
    """Why the cuda backend cannot run here (None: it can)."""
    from tinycnn import backends

    try:
        backends.get("cuda")
    except (backends.BackendUnavailable, ImportError) as e:
        return str(e)
    return None


def measured_section(precision: str, preds: list, measured: list, graph_us: float) -> str:
    first = next(iter(DEVICES))
    lines = [f"# measured (CUDA events, this GPU) beside predicted ({first}), precision {precision}"]
    for p, us in zip(preds, measured):
        lines.append(f"{p.launch.layer:18s} {p.launch.kernel:40s} {p.us:9.1f} {us:9.1f}")
    lines.append(f"measured step ({precision}, sum of eager launches): {sum(measured) / 1e3:.2f} ms")
    lines.append(f"measured step ({precision}, captured graph, median of 20): {graph_us / 1e3:.2f} ms")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--precision", default="all", choices=("all",) + PRECISIONS,
                    help="the precision mode(s) of the step (default: all three, one section each)")
    ap.add_argument("--measure", action="store_true", help="on a GPU: time each launch beside its prediction")
    args = ap.parse_args(argv)
    sections, totals = [], {}
    if args.measure and (why := gpu_unavailable()):
        sections.append(f"# --measure skipped: {why}")
        args.measure = False
    codes = compile_kernels()
    for precision in PRECISIONS if args.precision == "all" else (args.precision,):
        launches, allocations, graphs = record_step(args.batch, args.hidden, args.size, precision)
        predictions = predict_step(launches, codes)
        sections.append(report(precision, predictions, codes, launches, (allocations, graphs), args))
        totals[precision] = {d: step_ms(preds) for d, preds in predictions.items()}
        if args.measure:
            measured, graph_us = measure(launches, args, precision)
            sections.append(measured_section(precision, predictions[next(iter(DEVICES))], measured, graph_us))
    sections.append(summary(totals, args))
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench.gpu_checks without a GPU: the plan (its budgets fit a device call, part 2 takes
what part 1 leaves, together they run every GPU test and benchmark of the tree, and a
part brings back no more files than the device tool returns), the runner (a step past
its budget is cut off with its whole process group and recorded, the deadline stops
steps that cannot finish, the entry is rewritten after every step), and the parts of
bench.bench_step_cuda that need no GPU: its arguments, its summary line and its
validation against the FP32 reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import bench_step_cuda as step_cuda
from bench import gpu_checks
from tinycnn import backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# ------------------------------------------------------------------ the plan
def test_plan_prints_every_step_with_its_budget_and_part_1_fits_one_call(capsys, monkeypatch):
    def no_process(*a, **kw):
        raise AssertionError("--plan started a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert gpu_checks.main(["--plan"]) == 0
    out = capsys.readouterr().out
    for step in gpu_checks.PLAN:
        assert re.search(rf"^  {re.escape(step.name)} +{step.estimate} +{step.budget} +python3 ", out, re.M), step.name
        assert step.basis and step.gives
    total = gpu_checks.part_total(1)
    assert total == sum(s.budget for s in gpu_checks.PLAN if 1 in s.parts)
    assert total < gpu_checks.PART_LIMIT_S == 480  # under 8 minutes, start-up (compiles) included
    assert f"part 1 total: {total} s" in out and "part 2 total:" in out and "estimated" in out
    assert [s.name for s in gpu_checks.steps_of(1)][:3] == ["device", "compile", "step"]  # most informative first


def test_every_part_fits_a_call_and_the_files_the_device_returns():
    """Part 1 by its budgets, every part by its estimates (part 2's budgets may pass the
    deadline: a step that would is not started, and --only runs it later); each budget
    a margin over its estimate; at most 8 files, with names the device tool returns."""
    assert gpu_checks.DEADLINE_S < 600  # inside one 10-minute device call
    for part in {p for s in gpu_checks.PLAN for p in s.parts}:
        steps = gpu_checks.steps_of(part)
        assert gpu_checks.part_estimate(part) <= gpu_checks.DEADLINE_S, part
        assert gpu_checks.files_of(steps) <= gpu_checks.MAX_FILES == 8, part
        for s in steps:
            assert s.budget >= 1.5 * s.estimate, s.name
            assert re.fullmatch(r"[A-Za-z0-9._-]+", f"{s.name}.log")  # letters, digits, '.', '_' and '-'
    assert gpu_checks.part_total(1) <= gpu_checks.DEADLINE_S


def test_the_hardware_facts_come_first_in_the_parity_tests():
    names = [s.name for s in gpu_checks.steps_of(1)]
    assert names.index("hardware") < names.index("parity") < names.index("gpu-tests")


def test_part_2_covers_every_step_part_1_leaves_out():
    one = {s.name for s in gpu_checks.steps_of(1)}
    two = {s.name for s in gpu_checks.steps_of(2)}
    assert {s.name for s in gpu_checks.PLAN} == one | two
    # what both parts run is what a fresh machine needs first
    assert [s.name for s in gpu_checks.PLAN if len(s.parts) > 1] == ["device", "compile"]
    assert gpu_checks.steps_of(2)[:2] == gpu_checks.steps_of(1)[:2]


def _collect(args: list) -> set:
    """Node ids pytest selects with `args` (run from the repository root)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    ids = {line.strip() for line in res.stdout.splitlines() if "::" in line}
    assert ids or res.returncode == 5, res.stdout + res.stderr
    return ids


def _pytest_args(step) -> list:
    """A pytest step's selection: its files and its -m / -k expressions."""
    args, it = [], iter(step.command[2:])
    for a in it:
        if a in ("-m", "-k"):
            args += [a, next(it)]
        elif a.endswith(".py"):
            args.append(a)
    return args


@pytest.mark.slow
def test_every_test_marked_gpu_runs_in_some_step():
    wanted = _collect(["-m", "gpu", "tests", "bench"])
    assert len(wanted) > 100
    selected = set()
    for step in gpu_checks.PLAN:
        if step.command[:2] == ("-m", "pytest"):
            selected |= _collect(_pytest_args(step))
    assert wanted <= selected, sorted(wanted - selected)[:20]


def test_every_gpu_benchmark_runs_in_some_step():
    """Every bench script that uses the GPU (a main() that names CuPy or the cuda
    backend) and the pytest-benchmark suite's GPU entries."""
    commands = [" ".join(s.command) for s in gpu_checks.PLAN]
    scripts = []
    for folder in ("bench", os.path.join("bench", "variants")):
        for fname in sorted(os.listdir(os.path.join(ROOT, folder))):
            if not fname.endswith(".py") or fname in ("gpu_checks.py", "__init__.py"):
                continue
            text = open(os.path.join(ROOT, folder, fname)).read()
            if "def main(" in text and re.search(r"cupy|[\"']cuda[\"']", text):
                scripts.append(f"{folder}/{fname[:-3]}".replace(os.sep, ".").replace("/", "."))
    assert {"bench.bench_step_cuda", "bench.gpu_model", "bench.report", "bench.variants.run",
            "bench.bench_data_pipeline"} <= set(scripts)
    for module in scripts:
        assert any(c.startswith(f"-m {module} ") or c == f"-m {module}" for c in commands), module
    assert any("bench/test_ops.py" in c and "cuda" in c for c in commands)  # the suite's GPU entries


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_checks.main(["--only", "parity,nonsense"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err


# ------------------------------------------------------------------ the runner
def _step(name, code, budget, parts=(1,)):
    return gpu_checks.Step(name, parts, budget // 2, budget, ("-c", code), r"^(started|done)", "a test step", "none")


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a killed process nobody reaped yet is a zombie: not running)."""
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in "ZX":
            return False
        time.sleep(0.1)
    return True


def test_a_step_past_its_budget_is_cut_off_with_its_children_and_the_next_one_runs(tmp_path, monkeypatch):
    pidfile = tmp_path / "child.pid"
    sleeper = ("import subprocess, sys, time; "
               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               f"open({str(pidfile)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")
    monkeypatch.setattr(gpu_checks, "PLAN", (_step("slow", sleeper, 2), _step("after", "print('done')", 20)))
    t0 = time.time()
    assert gpu_checks.main(["--only", "slow,after", "--out", str(tmp_path), "--commit", "abc1234"]) == 0
    assert time.time() - t0 < 30
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "commit: abc1234" in entry
    assert "### slow: cut off at 2 s" in entry and "### after: exit 0" in entry
    assert entry.index("started") < entry.index("### after")  # what it printed before the cut is kept
    log = (tmp_path / "slow.log").read_text()
    assert "started" in log and "cut off at 2 s" in log
    assert not _running(int(pidfile.read_text()))  # the grandchild went with the step's process group


def test_the_deadline_stops_the_steps_that_could_not_finish_before_it(tmp_path, monkeypatch):
    plan = (_step("quick", "print('done')", 3), _step("long", "print('done')", 100), _step("short", "print('done')", 2))
    monkeypatch.setattr(gpu_checks, "PLAN", plan)
    assert gpu_checks.main(["--only", "quick,long,short", "--out", str(tmp_path), "--deadline", "10"]) == 0
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "### quick: exit 0" in entry and "### short: exit 0" in entry
    assert re.search(r"### long: not started \(\d+ s left before the deadline\)", entry)
    assert "not started" in (tmp_path / "long.log").read_text()


def test_the_entry_is_written_after_every_step(tmp_path, monkeypatch):
    """A run that dies during its second step (the device call's own limit, say) leaves
    the first step's result in gpu-run.md."""
    monkeypatch.setattr(gpu_checks, "PLAN", (_step("first", "print('done')", 10), _step("second", "", 10)))
    real = gpu_checks.run_step

    def dies_in_second(step, *a, **kw):
        if step.name == "second":
            raise KeyboardInterrupt
        return real(step, *a, **kw)

    monkeypatch.setattr(gpu_checks, "run_step", dies_in_second)
    with pytest.raises(KeyboardInterrupt):
        gpu_checks.main(["--only", "first,second", "--out", str(tmp_path)])
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "### first: exit 0" in entry and "done" in entry and "second" not in entry.split("### first")[1]


def test_a_device_less_machine_runs_the_first_steps_and_says_so(tmp_path):
    if _has_gpu():
        pytest.skip("on a GPU these are the real steps")
    assert gpu_checks.main(["--only", "device,step", "--out", str(tmp_path), "--commit", "abc1234"]) == 0
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "### device: exit 0" in entry and "device: none usable" in entry
    assert "### step: exit 0" in entry and "skipped" in (tmp_path / "step.log").read_text()


# ------------------------------------------------ bench.bench_step_cuda on the CPU
def test_step_benchmark_arguments():
    args = step_cuda.parse_args([])
    assert args.precisions == ("fp32", "tf32", "bf16") and args.batch == 64 and args.hidden == 1024
    assert (args.repeats, args.warmup, args.validate_batch, args.time_limit) == (20, 3, 4, None)
    assert step_cuda.parse_args(["--precisions", "bf16, fp32,bf16"]).precisions == ("bf16", "fp32")
    assert step_cuda.parse_args(["--time-limit", "100"]).time_limit == 100
    with pytest.raises(SystemExit) as e:
        step_cuda.parse_args(["--precisions", "fp32,fp16"])
    assert e.value.code == 2


def test_the_summary_puts_each_mode_beside_pytorch_and_the_model():
    args = step_cuda.parse_args([])
    medians = {"tinycnn fp32 eager": 5.1e-3, "tinycnn fp32 graph": 4.4e-3, "torch FP32": 5.3e-3,
               "tinycnn tf32 graph": 2.5e-3, "torch TF32": 3.0e-3, "torch default": 3.5e-3}
    lines = step_cuda.summary_lines(args, medians, {"fp32": 4.13, "tf32": 2.09, "note": "the model's H100 SXM"})
    assert lines[0].split()[:4] == ["mode", "ours", "eager", "ours"] and "graph / predicted" in lines[0]
    assert lines[1].split() == ["fp32", "5.10", "4.40", "5.30", "(torch", "FP32)", "4.13", "1.07"]
    assert lines[2].split() == ["tf32", "-", "2.50", "3.00", "(torch", "TF32)", "2.09", "1.20"]
    assert lines[3].split() == ["bf16", "-", "-", "-", "-", "-"]
    assert "a model, not a measurement" in lines[-1] and "H100 SXM" in lines[-1]


def test_every_mode_has_a_tolerance_and_pytorch_modes_are_distinct():
    assert set(step_cuda.TOLERANCE) == {"fp32", "tf32", "bf16"}
    for tol in step_cuda.TOLERANCE.values():
        assert 0 < tol["forward"] < tol["gradients"] < 1  # a wrong product errs by order 1
    assert step_cuda.TORCH_FP32.cudnn_tf32 is False and step_cuda.TORCH_FP32.matmul_tf32 is False
    assert step_cuda.TORCH_TF32.cudnn_tf32 is True and step_cuda.TORCH_TF32.matmul_tf32 is True
    assert step_cuda.TORCH_DEFAULT.cudnn_tf32 is None and step_cuda.TORCH_BF16.autocast_bf16
    assert len({m.name for m in step_cuda.TORCH_MODES}) == len(step_cuda.TORCH_MODES) == 4
    assert {p: m.precision for p, m in step_cuda.SAME_MODE.items()} == {p: p for p in ("fp32", "tf32", "bf16")}


def test_the_model_knows_which_gpu_it_models():
    from bench import gpu_model

    assert gpu_model.model_device("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert gpu_model.model_device("NVIDIA H200") == "H200"
    assert gpu_model.model_device("NVIDIA H100 PCIe") is None and gpu_model.model_device("NVIDIA A100") is None


def test_compare_ranks_pytorchs_arrays_by_their_tolerance():
    rng = np.random.default_rng(0)
    ref = {"loss": np.array(0.7), "logits": rng.standard_normal((4, 2)), "0.w": rng.standard_normal((16, 1, 3, 3))}
    close = {k: v * (1 + 1e-3) for k, v in ref.items()}
    rows = step_cuda.compare(close, ref, "fp32")
    assert rows[0][0] in ("loss", "logits") and rows[0][1] > rows[0][2]  # 1e-3 is beyond fp32's forward 1e-4
    assert all(err <= tol for name, err, tol in step_cuda.compare(close, ref, "tf32"))
    with pytest.raises(ValueError, match="shape"):
        step_cuda.compare(dict(ref, logits=ref["logits"].T), ref, "fp32")
    with pytest.raises(ValueError, match="differ"):
        step_cuda.compare({"loss": ref["loss"]}, ref, "fp32")


class _WrongDense:
    """The NumPy reference in a mode, with a dense layer one part in 100 off: a wrong kernel."""

    def __init__(self, precision):
        self._be = backends.get("numpy", precision)
        self.name, self.precision = "wrong-dense", precision

    def __getattr__(self, name):
        return getattr(self._be, name)

    def dense_forward(self, x, w, b):
        out, cache = self._be.dense_forward(x, w, b)
        return out * np.float32(1.01), cache


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_validation_verifies_a_correct_step_and_fails_a_wrong_one(precision):
    """The validation the GPU benchmark runs (tinycnn.verify, derived bounds), on the NumPy
    reference of each mode (which rounds the products' operands as the tensor cores do)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = np.array([0, 1])
    ok, text = step_cuda.validate(backends.get("numpy", precision), 8, x, y)
    assert ok, text
    assert f"({precision}): verified" in text.splitlines()[0] and "end to end" in text
    ok, text = step_cuda.validate(_WrongDense(precision), 8, x, y)
    assert not ok and "Dense" in text and "FAIL" in text

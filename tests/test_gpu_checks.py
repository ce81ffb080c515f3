"""bench.gpu_checks without a GPU: every step still runs (and skips), and the entry
it writes names the device situation, the commit and each step's exit code; and the
parts of bench.bench_step_cuda (the step it runs first) that need no GPU: its
arguments and its validation against the FP32 reference."""

import numpy as np
import pytest

from bench import bench_step_cuda as step_cuda
from bench import gpu_checks
from tinycnn import backends
from tinycnn.model import paper_net


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="on a GPU these steps are the real (long) benchmarks")
def test_writes_an_entry_with_each_step(tmp_path, capsys):
    assert gpu_checks.main(["--out", str(tmp_path), "--only", "step,pipeline", "--commit", "abc1234"]) == 0
    entry = (tmp_path / "gpu-run.md").read_text()
    assert "commit: abc1234" in entry
    assert "### step: exit 0" in entry and "### pipeline: exit 0" in entry
    assert "skipped" in (tmp_path / "step.log").read_text()  # no cuda backend here, said plainly


def test_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_checks.main(["--only", "tests,nonsense"])
    assert e.value.code == 2 and "nonsense" in capsys.readouterr().err


# ------------------------------------------------ bench.bench_step_cuda on the CPU


def test_step_benchmark_arguments():
    args = step_cuda.parse_args([])
    assert args.precisions == ("fp32", "tf32", "bf16") and args.batch == 64 and args.hidden == 1024
    assert step_cuda.parse_args(["--precisions", "bf16, fp32,bf16"]).precisions == ("bf16", "fp32")
    with pytest.raises(SystemExit) as e:
        step_cuda.parse_args(["--precisions", "fp32,fp16"])
    assert e.value.code == 2


def test_every_mode_has_a_tolerance_and_pytorch_modes_are_distinct():
    assert set(step_cuda.TOLERANCE) == {"fp32", "tf32", "bf16"}
    for tol in step_cuda.TOLERANCE.values():
        assert 0 < tol["forward"] < tol["gradients"] < 1  # a wrong product errs by order 1
    assert step_cuda.TORCH_FP32.cudnn_tf32 is False and step_cuda.TORCH_FP32.matmul_tf32 is False
    assert step_cuda.TORCH_DEFAULT.cudnn_tf32 is None and step_cuda.TORCH_BF16.autocast_bf16
    assert len({m.name for m in step_cuda.TORCH_MODES}) == 3


def test_compare_names_the_arrays_beyond_tolerance():
    rng = np.random.default_rng(0)
    ref = {"loss": np.array(0.7), "logits": rng.standard_normal((4, 2)), "0.w": rng.standard_normal((16, 1, 3, 3))}
    close = {k: v * (1 + 1e-3) for k, v in ref.items()}
    assert "matches the FP32 reference" in step_cuda.check("x", close, ref, "tf32")
    with pytest.raises(SystemExit, match=r"logits 9\.99e-04 > 0\.0001") as e:
        step_cuda.check("ours fp32", close, ref, "fp32")
    assert "0.w" not in str(e.value)  # a gradient 1e-3 off is within the fp32 gradient tolerance
    wrong = dict(ref, **{"0.w": ref["0.w"][::-1].copy()})  # filters in the wrong order
    with pytest.raises(SystemExit, match="0.w"):
        step_cuda.check("ours bf16", wrong, ref, "bf16")
    with pytest.raises(ValueError, match="shape"):
        step_cuda.compare(dict(ref, logits=ref["logits"].T), ref, "fp32")
    with pytest.raises(ValueError, match="differ"):
        step_cuda.compare({"loss": ref["loss"]}, ref, "fp32")


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_a_rounding_mode_passes_its_validation_against_fp32(precision):
    """The validation the GPU benchmark runs, on the NumPy reference (which rounds the
    products' operands like the tensor cores): a small step in the mode against FP32."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = np.array([0, 1])
    reference = step_cuda.step_outputs(paper_net(hidden=8, in_size=32, seed=0, backend="numpy"), x, y)
    net = paper_net(hidden=8, in_size=32, seed=0, backend=backends.get("numpy", precision))
    outputs = step_cuda.step_outputs(net, x, y)
    assert set(outputs) == {"loss", "logits"} | {f"{i}.{p}" for i in (0, 3, 6, 9, 13, 16, 19) for p in "wb"}
    assert step_cuda.check(precision, outputs, reference, precision).startswith("validated: ")
    assert max(step_cuda.compare(outputs, reference, precision), key=lambda r: r[1])[1] > 0  # it did round

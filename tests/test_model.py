"""The layer/model/optimizer library: the paper's shapes, checkpoints, training."""

import json

import numpy as np
import pytest

from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, SoftmaxCrossEntropy
from tinycnn.checkpoint import CheckpointError
from tinycnn.model import Sequential, load_model, paper_net
from tinycnn.optim import SGD, Adam, CosineLR, StepLR, make_optimizer


def test_paper_net_shapes_match_table_one():
    net = paper_net(hidden=1024)
    shapes = net.shapes()
    convs = [s for layer, s in zip(net.layers, shapes) if isinstance(layer, Conv2D)]
    pools = [s for layer, s in zip(net.layers, shapes) if isinstance(layer, MaxPool2D)]
    assert convs == [(16, 254, 254), (32, 125, 125), (64, 61, 61), (128, 29, 29)]
    assert pools == [(16, 127, 127), (32, 63, 63), (64, 31, 31), (128, 15, 15)]
    flat = [s for layer, s in zip(net.layers, shapes) if isinstance(layer, Flatten)]
    assert flat == [(28800,)]
    assert shapes[-1] == (2,)
    # 4 convs (3x3) + FC 28800->1024 + FC 1024->1024 + FC 1024->2
    expected = (1 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 128 + 128) \
        + (28800 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 2 + 2)
    assert net.num_parameters() == expected


def test_summary_prints_the_papers_shapes():
    text = paper_net(hidden=1024).summary(batch_size=32)
    for shape in ("254x254x16", "127x127x16", "125x125x32", "63x63x32", "61x61x64", "31x31x64",
                  "29x29x128", "15x15x128", "28800"):
        assert shape in text
    assert "30,641,026" in text and "training memory at batch 32" in text


def test_compact_summary_has_one_row_per_block_and_the_same_totals():
    net = paper_net(hidden=1024)
    full, compact = net.summary(batch_size=32), net.summary(batch_size=32, compact=True)
    rows = compact.splitlines()[2:-3]
    assert len(rows) == 1 + 4 + 1 + 3  # input, 4 conv blocks, flatten, 3 fc blocks
    assert rows[1].split()[-2:] == ["127x127x16", "160"]  # the block's output, the conv's parameters
    assert "conv 3x3/1, 128 + relu + maxpool 2x2/2 ceil" in rows[4] and "15x15x128" in rows[4]
    assert rows[6].split()[-2:] == ["1024", "29,492,224"]
    assert full.splitlines()[-2:] == compact.splitlines()[-2:]


def test_paper_net_small_input_derives_flatten_size():
    net = paper_net(hidden=8, in_size=64)
    # 64 -> conv 62 -> pool 31 -> 29 -> 15 -> 13 -> 7 -> 5 -> 3: flatten 3*3*128
    assert net.shapes()[12] == (128 * 3 * 3,)
    assert net.layers[13].in_features == 1152
    x = np.zeros((3, 1, 64, 64), dtype=np.float32)
    assert net.forward(x).shape == (3, 2)


def test_forward_rejects_wrong_input_shape():
    net = paper_net(hidden=8, in_size=64)
    with pytest.raises(ValueError, match="expects inputs"):
        net.forward(np.zeros((1, 1, 32, 32), dtype=np.float32))


def test_he_init_is_seeded_and_scaled():
    a, b, c = paper_net(hidden=64, in_size=64, seed=1), paper_net(hidden=64, in_size=64, seed=1), \
        paper_net(hidden=64, in_size=64, seed=2)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(pa.value, pb.value)
        if pa.value.ndim > 1:
            assert not np.array_equal(pa.value, pc.value)
    conv = a.layers[3]  # 16 -> 32 channels, fan_in 144
    assert abs(conv.params["w"].value.std() - np.sqrt(2 / 144)) < 0.02
    assert conv.params["w"].value.dtype == np.float32


def test_save_load_roundtrip(tmp_path):
    net = paper_net(hidden=16, in_size=64, seed=3)
    net.layers[15].calls = 7  # a dropout layer's counter is state a resume needs
    path = tmp_path / "ckpt.npz"
    net.save(path, extra={"epoch": 4}, meta={"note": "x"})
    other = paper_net(hidden=16, in_size=64, seed=9)
    info = other.load(path)
    for (_, p), (_, q) in zip(net.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(p.value, q.value)
    assert other.layers[15].calls == 7 and other.layers[15].seed == net.layers[15].seed
    assert int(info["extra"]["epoch"]) == 4 and info["meta"] == {"note": "x"}
    rebuilt, _ = load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), net.forward(x))


def test_checkpoint_has_no_pickle(tmp_path):
    path = tmp_path / "c.npz"
    paper_net(hidden=4, in_size=32).save(path)
    with np.load(path, allow_pickle=False) as z:  # would raise on object arrays
        arch = json.loads(str(z["__arch__"]))
    assert arch["format"] == "tinycnn-checkpoint" and len(arch["layers"]) == 20


def test_load_into_another_architecture_names_the_layer(tmp_path):
    path = tmp_path / "c.npz"
    paper_net(hidden=16, in_size=64).save(path)
    with pytest.raises(CheckpointError, match=r"layer 13 differs.*out_features=16.*out_features=32"):
        paper_net(hidden=32, in_size=64).load(path)
    with pytest.raises(CheckpointError, match="inputs"):
        paper_net(hidden=16, in_size=32).load(path)


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    net = paper_net(hidden=4, in_size=32)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        net.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(CheckpointError, match=r"bad.npz is not a tinycnn checkpoint \(not an .npz archive\)"):
        net.load(bad)


@pytest.mark.parametrize("arch, message", [
    ("{not json", "damaged __arch__ record"),
    ('{"format": "tinycnn-checkpoint", "version": 1}', "no layer list"),
    ('[1, 2]', "not a tinycnn checkpoint"),
    ('{"format": "tinycnn-checkpoint", "version": 1, "input_shape": [1, 32, 32], "layers": [{"type": "Mystery"}]}',
     "cannot be built.*Mystery"),
])
def test_load_model_rejects_a_damaged_architecture_record(tmp_path, arch, message):
    path = tmp_path / "c.npz"
    paper_net(hidden=4, in_size=32).save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["__arch__"] = np.array(arch)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_atomic_save_keeps_the_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    net = paper_net(hidden=4, in_size=32, seed=1)
    net.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        paper_net(hidden=4, in_size=32, seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_to_backend_roundtrip_keeps_values():
    net = paper_net(hidden=8, in_size=32, seed=5)
    before = [p.value.copy() for p in net.parameters()]
    net.to("numpy64")
    assert all(p.value.dtype == np.float64 for p in net.parameters())
    net.to("numpy")
    for a, p in zip(before, net.parameters()):
        np.testing.assert_array_equal(a, p.value)


def test_overfit_a_tiny_batch():
    """A few SGD steps on one fixed batch of noise must drive the loss down hard
    (memorisation; dropout off so that 8 samples can be fitted in 25 steps)."""
    rng = np.random.default_rng(0)
    net = paper_net(hidden=64, in_size=64, seed=0, dropout=0.0)
    x = rng.standard_normal((8, 1, 64, 64)).astype(np.float32)
    y = np.array([0, 1] * 4)
    opt = SGD(net.parameters(), lr=0.003, momentum=0.9)
    loss_fn = SoftmaxCrossEntropy()
    losses = []
    for _ in range(25):
        loss = loss_fn.forward(net.forward(x, train=True), y)
        net.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.1 * losses[0], losses
    assert (net.forward(x).argmax(axis=1) == y).all()


def test_sgd_matches_hand_computation():
    net = Sequential([Dense(3, 2)], (3,))
    p = net.layers[0].params["w"]
    p.value[:] = 1.0
    p.grad = np.full((3, 2), 0.5, dtype=np.float32)
    net.layers[0].params["b"].grad = np.zeros(2, dtype=np.float32)
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()  # v = 0.5 + 0.01*1 = 0.51; w = 1 - 0.1*0.51
    np.testing.assert_allclose(p.value, 1 - 0.051, rtol=1e-6)
    opt.step()  # w1 = 0.949; v = 0.9*0.51 + 0.5 + 0.00949 = 0.96849; w = 0.949 - 0.096849
    np.testing.assert_allclose(p.value, 0.949 - 0.096849, rtol=1e-6)


def test_adam_first_step_is_lr_times_sign():
    net = Sequential([Dense(2, 2)], (2,))
    p = net.layers[0].params["w"]
    p.value[:] = 0.0
    p.grad = np.array([[1.0, -2.0], [3.0, -0.5]], dtype=np.float32)
    net.layers[0].params["b"].grad = np.zeros(2, dtype=np.float32)
    Adam(net.parameters(), lr=0.01).step()
    np.testing.assert_allclose(p.value, -0.01 * np.sign(p.grad), rtol=1e-5)


def test_optimizer_requires_gradients_and_state_roundtrip():
    net = paper_net(hidden=4, in_size=32)
    opt = make_optimizer("adam", net, lr=1e-3)
    with pytest.raises(RuntimeError, match="no gradient"):
        opt.step()
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", net, lr=1e-3)
    for p in net.parameters():
        p.grad = np.ones_like(p.value)
    opt.step()
    opt.step()
    state = opt.state_arrays()
    opt2 = make_optimizer("adam", net, lr=1e-3)
    opt2.load_state_arrays(state)
    assert opt2.steps == 2
    for a, b in zip(opt.m + opt.v, opt2.m + opt2.v):
        assert np.any(a != 0)
        np.testing.assert_array_equal(a, b)


def test_lr_schedules():
    step = StepLR(0.1, step_size=2, gamma=0.5)
    assert [step(e) for e in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    cos = CosineLR(1.0, total=10, min_lr=0.0)
    assert cos(0) == 1.0 and abs(cos(5) - 0.5) < 1e-12 and abs(cos(10)) < 1e-12
    warm = CosineLR(1.0, total=10, warmup=2)
    assert warm(0) == 0.5 and warm(1) == 1.0


def test_dropout_layer_draws_a_new_mask_each_step_and_none_at_eval():
    layer = Dropout(0.5, seed=3)
    x = np.ones((4, 100), dtype=np.float32)
    a, b = layer.forward(x, train=True), layer.forward(x, train=True)
    assert not np.array_equal(a, b) and layer.calls == 2
    np.testing.assert_array_equal(layer.forward(x, train=False), x)


def test_layer_stack_that_does_not_fit_fails_at_construction():
    with pytest.raises(ValueError, match="expects 4 input channels"):
        Sequential([Conv2D(4, 8, 3)], (1, 16, 16))
    with pytest.raises(ValueError, match="expects 10 features"):
        Sequential([Flatten(), Dense(10, 2)], (1, 4, 4))


def test_auto_backend_is_cuda_then_numba_then_numpy():
    import importlib.util

    from tinycnn import backends

    if backends.available("cuda"):
        assert backends.resolve("auto") == "cuda"
    elif importlib.util.find_spec("numba") is not None:  # a CPU machine with numba (CI): numba
        assert backends.resolve("auto") == "numba"
    else:
        assert backends.resolve("auto") == "numpy"
    assert backends.resolve("numpy") == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        backends.resolve("tpu")


@pytest.mark.parametrize("name", ["numpy", "numba", "cuda-emu"])
def test_backward_skips_the_input_gradient_unless_asked(name):
    """The first layer's dx is work nobody uses in training: Sequential.backward returns
    None and every parameter gradient is the same bit for bit as when the input
    gradient is asked for (gradient checks and saliency maps ask)."""
    from helpers import backend_or_skip

    backend_or_skip(name)
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 1, 40, 40), dtype=np.float32), np.array([0, 1, 1])
    grads = []
    for input_grad in (False, True):
        net = paper_net(hidden=8, in_size=40, seed=0, backend=name)
        _, dlogits = net.backend.softmax_cross_entropy(net.forward(x, train=True), y)
        dx = net.backward(dlogits, input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        if input_grad:
            assert tuple(dx.shape) == x.shape
        grads.append({k: net.backend.to_numpy(p.grad) for k, p in net.named_parameters()})
    for k in grads[0]:
        np.testing.assert_array_equal(grads[0][k], grads[1][k], err_msg=k)

"""The training loop: exact resume, Ctrl-C, NaN loss, checkpoints of another network."""

import os
import signal

import numpy as np
import pytest

from tinycnn.mammo.data import load_dataset
from tinycnn.mammo.data.split import make_split
from tinycnn.checkpoint import CheckpointError
from tinycnn.model import paper_net
from tinycnn.optim import make_optimizer
from tinycnn.mammo.train import BEST, LAST, NonFiniteLoss, ResumeError, TrainConfig, Trainer

SIZE, HIDDEN = 32, 8


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny matrices: BLAS threads only add hand-offs (and stall on a busy machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rois = load_dataset("synthetic", image_size=SIZE, cache_dir=tmp_path_factory.mktemp("cache"),
                        benign=12, malignant=12, seed=0)
    split = make_split("patient", rois.labels, rois.patients, seed=0)
    return rois, split


def trainer(tiny, out, epochs=2, hidden=HIDDEN, lr=1e-3, optimizer="adam", images=None):
    rois, split = tiny
    net = paper_net(hidden=hidden, in_size=SIZE, seed=0)
    opt = make_optimizer(optimizer, net, lr)
    cfg = TrainConfig(epochs=epochs, batch_size=16, optimizer=optimizer, lr=lr, seed=0)
    return Trainer(net, opt, rois.images if images is None else images, rois.labels, split.train, split.test,
                   cfg, out, meta={"preprocessing": {"image_size": SIZE}}, progress=False, log=lambda *a: None)


def weights(t):
    return [np.array(p.value) for p in t.net.parameters()]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_reaches_the_same_weights_bit_for_bit(tiny, tmp_path, optimizer):
    full = trainer(tiny, tmp_path / "full", optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 0.01)
    done = full.fit()
    assert done.status == "done" and len(done.history) == 2
    steps = full.steps_per_epoch

    part = trainer(tiny, tmp_path / "part", optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 0.01)
    part.stop_after_steps = steps + 2  # mid-way through the second epoch
    stopped = part.fit()
    assert stopped.status == "interrupted" and len(stopped.history) == 1

    resumed = trainer(tiny, tmp_path / "part", optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 0.01)
    resumed.resume(tmp_path / "part")
    assert (resumed.state.epoch, resumed.state.batch) == (1, 2)
    result = resumed.fit()
    assert result.status == "done"
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert result.history == done.history  # per-epoch numbers included
    np.testing.assert_array_equal(result.probs, done.probs)


def test_ctrl_c_saves_and_stops_cleanly(tiny, tmp_path, monkeypatch):
    t = trainer(tiny, tmp_path)
    real_step = t.opt.step
    calls = []

    def step_then_interrupt(**kw):
        real_step(**kw)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the real handler

    monkeypatch.setattr(t.opt, "step", step_then_interrupt)
    before = signal.getsignal(signal.SIGINT)
    result = t.fit()
    assert result.status == "interrupted"
    assert t.state.global_step == 3 and (tmp_path / LAST).exists()
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler, restored
    again = trainer(tiny, tmp_path)
    again.resume(tmp_path / LAST)
    assert again.state.global_step == 3


def test_last_and_best_checkpoints_carry_preprocessing(tiny, tmp_path):
    from tinycnn.model import load_model

    t = trainer(tiny, tmp_path, epochs=1)
    t.fit()
    for name in (LAST, BEST):
        net, info = load_model(tmp_path / name)
        assert info["meta"]["preprocessing"] == {"image_size": SIZE}
        assert len(info["meta"]["history"]) == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    t = trainer(tiny, tmp_path, epochs=1)
    t.fit()
    before = (tmp_path / LAST).read_bytes()
    t2 = trainer(tiny, tmp_path, epochs=2)
    t2.resume(tmp_path / LAST)
    t2.images = np.full_like(tiny[0].images, np.nan)  # after resume: other data would be refused there
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, batch 1/\d+ \(global step \d+\).*last good checkpoint"):
        t2.fit()
    assert (tmp_path / LAST).read_bytes() == before


def test_resume_into_another_architecture_names_the_layer(tiny, tmp_path):
    trainer(tiny, tmp_path, epochs=1).fit()
    other = trainer(tiny, tmp_path, epochs=1, hidden=HIDDEN * 2)
    with pytest.raises(CheckpointError, match="layer 13 differs"):
        other.resume(tmp_path / LAST)


def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    trainer(tiny, tmp_path, epochs=1).fit()
    other = trainer(tiny, tmp_path, epochs=1, lr=5e-3)
    with pytest.raises(ResumeError, match="lr"):
        other.resume(tmp_path / LAST)


def test_batch_loader_yields_exactly_the_gathered_samples():
    from tinycnn.mammo.data import augment
    from tinycnn.mammo.batches import BatchLoader

    rng = np.random.default_rng(0)
    images = rng.standard_normal((5, 6, 6)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1])
    samples = augment.expand(np.arange(5))  # every ROI with each of the six transforms
    order = rng.permutation(len(samples))
    loader = BatchLoader(images, labels, samples, order, batch_size=7, start_batch=1)
    try:
        got = list(loader)
    finally:
        loader.close()
    assert len(got) == len(range(7, len(order), 7))  # start_batch=1 skips the first batch
    for (x, y, y_host), idx in zip(got, [order[i:i + 7] for i in range(7, len(order), 7)]):
        np.testing.assert_array_equal(x, augment.gather(images, samples[idx]))
        np.testing.assert_array_equal(y_host, labels[samples[idx, 0]])
        np.testing.assert_array_equal(y, y_host)


def test_batch_loader_hands_a_worker_error_to_the_consumer():
    from tinycnn.mammo.batches import BatchLoader

    images = np.zeros((2, 4, 4), np.float32)
    samples = np.array([[0, 0], [5, 0]])  # ROI 5 does not exist
    loader = BatchLoader(images, np.array([0, 1]), samples, np.array([0, 1]), batch_size=2)
    try:
        with pytest.raises(IndexError):
            list(loader)
    finally:
        loader.close()


def test_evaluation_is_deterministic_and_leaves_dropout_alone(tiny, tmp_path):
    from tinycnn.layers import Dropout

    t = trainer(tiny, tmp_path, epochs=1)
    t.fit()
    counters = [layer.calls for layer in t.net.layers if isinstance(layer, Dropout)]
    first, second = t.predict(), t.predict()
    np.testing.assert_array_equal(first, second)  # dropout off: no mask, no randomness
    assert [layer.calls for layer in t.net.layers if isinstance(layer, Dropout)] == counters


def test_best_checkpoint_is_the_best_epoch_not_the_last(tiny, tmp_path, monkeypatch):
    from tinycnn.model import load_model

    t = trainer(tiny, tmp_path, epochs=3)
    real_evaluate, aucs = t.evaluate, iter([0.7, 0.9, 0.5])

    def scripted_evaluate():
        return dict(real_evaluate(), test_auc=next(aucs, 0.5))

    monkeypatch.setattr(t, "evaluate", scripted_evaluate)
    result = t.fit()
    assert result.best_epoch == 2
    _, best = load_model(tmp_path / BEST)
    _, last = load_model(tmp_path / LAST)
    assert len(best["meta"]["history"]) == 2 and best["meta"]["best_epoch"] == 2
    assert len(last["meta"]["history"]) == 3


def test_every_epoch_has_its_own_order(tiny, tmp_path):
    t = trainer(tiny, tmp_path)
    orders = []
    for epoch in (0, 1, 0):
        loader = t.loader(epoch)
        orders.append(np.concatenate(loader.batches))
        loader.close()
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    np.testing.assert_array_equal(orders[0], orders[2])  # and reproducibly so

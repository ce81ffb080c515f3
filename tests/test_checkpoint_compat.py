"""Checkpoints written by an earlier tinycnn still load, and a run stopped then resumes.

tests/data/checkpoints-v1/ was written once, by the code of commit 9de3554 (before the
checkpoint format moved to its own module), and is never rewritten: a tiny network
(two conv blocks, one fused and one not, dropout, two dense layers; 12x12 inputs)
trained by the training loop on the seeded data below, stopped one batch into its
second epoch (adam/, sgd/: last.npz with the optimizer state, position and running
sums; adam/best.npz from the end of the first epoch), and the same network saved
untrained with a dropout counter of 5 (weights.npz). expected.json holds what that code
computed: each file's logits on a fixed input, and each run's final P(malignant) after
both epochs uninterrupted."""

import json
from pathlib import Path

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.checkpoint import architecture_shapes, read_checkpoint
from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from tinycnn.mammo.data import augment
from tinycnn.mammo.inference import check_checkpoint
from tinycnn.mammo.train import TrainConfig, Trainer
from tinycnn.model import Sequential, load_model
from tinycnn.optim import make_optimizer

DATA = Path(__file__).parent / "data" / "checkpoints-v1"
EXPECTED = json.loads((DATA / "expected.json").read_text())
LR = {"adam": 1e-3, "sgd": 0.01}


def tiny_net() -> Sequential:
    net = Sequential([Conv2D(1, 4, 3), ReLU(), MaxPool2D(2, 2), Conv2D(4, 4, 3, stride=1, pad=1), ReLU(),
                      MaxPool2D(3, 2, ceil_mode=False), Flatten(), Dense(16, 8), ReLU(), Dropout(0.5, seed=3),
                      Dense(8, 2, gain=1.0)], (1, 12, 12))
    return net.init_params(0)


def tiny_data():
    """(images, labels, train samples, test samples): what the checkpoints were trained on."""
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    images = (rng.standard_normal((24, 12, 12)) + labels[:, None, None]).astype(np.float32)
    return images, labels, augment.expand(np.arange(16)), augment.expand(np.arange(16, 24), [0])


@pytest.mark.parametrize("name", ["weights.npz", "adam/last.npz", "adam/best.npz", "sgd/last.npz"])
def test_an_earlier_checkpoint_loads_with_its_weights_state_and_records(name):
    path = DATA / name
    net, info = load_model(path)
    raw = np.load(path)
    for key, p in net.named_parameters():
        np.testing.assert_array_equal(p.value, raw[key])
    probe = np.random.default_rng(1).standard_normal((3, 1, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(net.forward(probe), EXPECTED[name]["logits"], rtol=1e-5, atol=1e-6)
    assert net.architecture() == tiny_net().architecture()
    assert read_checkpoint(path, arrays=False)["meta"] == info["meta"]
    shapes = architecture_shapes(read_checkpoint(path)["arch"], path)
    assert shapes.num_parameters() == net.num_parameters()
    if name == "weights.npz":
        assert net.layers[9].calls == 5 and info == {"meta": {}, "extra": {}}
    else:
        assert net.layers[9].calls > 0 and "position" in info["extra"] and "history" in info["meta"]
        assert check_checkpoint(path, 4, backends.get("numpy"))[0] == 12  # what classify.py checks first


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_an_earlier_run_resumes_where_it_stopped_and_finishes_as_it_would_have(optimizer, tmp_path):
    images, labels, train, test = tiny_data()
    net = tiny_net()
    config = TrainConfig(epochs=2, batch_size=16, optimizer=optimizer, lr=LR[optimizer], seed=0)
    trainer = Trainer(net, make_optimizer(optimizer, net, LR[optimizer]), images, labels, train, test, config,
                      tmp_path, progress=False, log=lambda *a: None)
    trainer.resume(DATA / optimizer / "last.npz")
    assert (trainer.state.epoch, trainer.state.batch) == (1, 1)
    result = trainer.fit()
    assert result.status == "done"
    expected = EXPECTED[optimizer]
    # computed on another machine's BLAS: equal to rounding, not bit for bit
    np.testing.assert_allclose(result.probs, expected["final_probs"], rtol=1e-4, atol=1e-6)
    assert [h["epoch"] for h in result.history] == [h["epoch"] for h in expected["history"]]
    np.testing.assert_allclose([h["train_loss"] for h in result.history],
                               [h["train_loss"] for h in expected["history"]], rtol=1e-4)

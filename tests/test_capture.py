"""A training step captured once and replayed (tinycnn/backends/capture.py), on cuda-emu:
the same launch lists a GPU turns into a CUDA graph. Replays must give the bits of the
eager step while seeds and learning rates change, allocate nothing, and fall back to
the step's own launches when it launches something else; the step statistics and the
optimizer's guard keep the NaN check on the device."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backend_or_skip
from tinycnn import backends
from tinycnn.backends.contract import STAT_LAYOUT, new_step_stats
from tinycnn.model import paper_net
from tinycnn.optim import SGD, Adam

SIZE, BATCH = 31, 2  # paper_net's smallest input: the emulator runs every block's barriers


@pytest.fixture(scope="module")
def emu():
    return backend_or_skip("cuda-emu")


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, 1, SIZE, SIZE), dtype=np.float32), (np.arange(BATCH) % 2).astype(np.int32)


def trainer(be, opt_cls=SGD):
    """(step(x, y), net, opt, stats): a training step that reads nothing back."""
    net = paper_net(hidden=8, in_size=SIZE, seed=0, backend=be)
    opt = opt_cls(net.parameters(), lr=0.05, backend=be)
    stats = be.asarray(new_step_stats())

    def step(x, y):
        logits = net.forward(x, train=True)  # dropout on: a new mask every step
        loss, dlogits = be.softmax_cross_entropy(logits, y)
        be.step_stats_update(stats, loss, logits, y)
        net.backward(dlogits)
        opt.step(guard=stats)
    return step, net, opt, stats


def train(be, steps, capture, opt_cls=SGD, infinite_lr_at=None):
    step, net, opt, stats = trainer(be, opt_cls)
    run = be.capture(step) if capture else step
    for i in range(steps):
        x, y = batch(i)
        # a schedule (the captured step must not bake in the first value); an infinite
        # rate makes the weights non-finite, and the next step's loss NaN
        opt.lr = np.inf if i == infinite_lr_at else 0.05 / (1 + i)
        run(be.asarray(x), be.asarray(y, dtype=np.int32))
    return [be.to_numpy(p.value).copy() for p in net.parameters()], be.to_numpy(stats).copy(), run


@pytest.mark.parametrize("opt_cls", [SGD, Adam], ids=["sgd", "adam"])
def test_replays_give_the_bits_of_the_eager_steps(emu, opt_cls):
    eager_params, eager_stats, _ = train(emu, 4, capture=False, opt_cls=opt_cls)
    replayed_params, replayed_stats, run = train(emu, 4, capture=True, opt_cls=opt_cls)
    assert run.replays == 3 and run.fallbacks == 0  # the first call runs eagerly, to fill the arena
    for a, b in zip(eager_params, replayed_params):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(eager_stats, replayed_stats)


def test_replays_allocate_nothing_and_launch_one_list(emu):
    step, net, opt, stats = trainer(emu)
    run = emu.capture(step)
    x, y = (emu.asarray(a) for a in batch())
    run(x, y)
    run(x, y)
    allocations = emu.allocations
    graphs = []
    real = emu._launch_graph
    emu._launch_graph = lambda graph: (graphs.append(len(graph)), real(graph))
    try:
        for _ in range(3):
            run(x, y)
    finally:
        emu._launch_graph = real
    assert emu.allocations == allocations
    assert len(graphs) == 3 and graphs[0] == len(run.launches) > 20  # the whole step, one replay each


def test_other_input_shapes_run_eagerly_beside_the_capture(emu):
    step, net, opt, stats = trainer(emu)
    run = emu.capture(step)
    x, y = batch()
    for i in range(3):
        run(emu.asarray(x), emu.asarray(y))
    run(emu.asarray(x[:1]), emu.asarray(y[:1]))  # an epoch's smaller last batch
    run(emu.asarray(x), emu.asarray(y))
    assert run.replays == 3 and run.fallbacks == 0
    assert emu.to_numpy(stats)[STAT_LAYOUT["STAT_STEPS"]] == 5


def test_a_step_that_launches_something_else_runs_its_own_launches(emu):
    """A dry pass whose launch list differs from the recorded one (here: the conv
    blocks run as three layers each after the capture) must not replay the stale
    graph: it runs its own launches, and matches an eager twin bit for bit."""
    x, y = (emu.asarray(a) for a in batch())
    nets = []
    for capture in (True, False):
        step, net, opt, stats = trainer(emu)
        run = emu.capture(step) if capture else step
        for _ in range(3):
            run(x, y)
        net.run_plan = lambda net=net: list(net.layers)  # conv, relu and pool as three layers from now on
        run(x, y)
        nets.append(net)
        if capture:
            assert run.replays == 2 and run.fallbacks == 1
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        np.testing.assert_array_equal(emu.to_numpy(a.value), emu.to_numpy(b.value))


def test_a_non_finite_loss_stops_every_later_update_on_the_device(emu):
    """The step statistics record the first step whose loss is not finite; the
    optimizer skips that step and every later one, so the parameters stay exactly
    those the last good step left (here non-finite ones: its learning rate was inf)."""
    last_good, _, _ = train(emu, 2, capture=False, infinite_lr_at=1)
    params, stats, run = train(emu, 4, capture=True, infinite_lr_at=1)
    s = STAT_LAYOUT
    assert stats[s["STAT_FIRST_BAD"]] == 2 and not np.isfinite(stats[s["STAT_BAD_LOSS"]])
    assert stats[s["STAT_STEPS"]] == 4 and np.isfinite(stats[s["STAT_LOSSES"]:s["STAT_LOSSES"] + 2]).all()
    for a, b in zip(last_good, params):
        np.testing.assert_array_equal(a, b)  # NaNs compare equal here


def test_step_statistics_agree_with_the_reference(emu):
    """The same counts, and each step's loss up to float32 rounding."""
    ref = backends.get("numpy")
    got = [train(be, 3, capture=True)[1] for be in (ref, emu)]
    s = STAT_LAYOUT
    losses, correct = slice(s["STAT_LOSSES"], s["STAT_LOSSES"] + 3), slice(s["STAT_CORRECT"], s["STAT_CORRECT"] + 3)
    for key in ("STAT_STEPS", "STAT_FIRST_BAD"):
        assert got[0][s[key]] == got[1][s[key]], key
    np.testing.assert_array_equal(got[0][correct], got[1][correct])
    np.testing.assert_allclose(got[1][losses], got[0][losses], rtol=1e-5)
    assert got[0][s["STAT_STEPS"]] == 3 and (got[0][correct] <= BATCH).all()


def test_host_backends_run_the_step_itself():
    ref = backends.get("numpy")
    step = lambda: None  # noqa: E731
    assert ref.capture(step) is step

"""Hostile input, data loss: --overwrite, outputs that are inputs, two trainings in one
folder, temporary files of killed saves, and argument-only errors that must come
before the data is read."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_hostile_support import (  # noqa: F401  (fixtures)
    TINY, folder_bytes, fresh_run, make_rois, no_data_reading, one_error, run_classify, small_image, train,
    train_app, trained_run, usage_error)
from tinycnn.mammo import runfolder
from tinycnn.mammo.data import cache
from tinycnn.mammo.runfolder import Replacement, RunLock

DIVERGE = ("--lr", "1e30", "--optimizer", "sgd", "--lr-schedule", "constant")  # NaN within the first epoch
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


# ------------------------------------------------------------ --overwrite
def test_overwrite_that_fails_before_a_checkpoint_puts_the_old_run_back(fresh_run, train):
    # the case: the new run hits a NaN at step 2 and used to leave neither run
    before = folder_bytes(fresh_run)
    rc, out, err = train("--overwrite", *DIVERGE)
    assert rc == 3 and "loss is" in one_error(err)
    assert "is back in place" in out
    assert folder_bytes(fresh_run) == before


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(fresh_run, train):
    before = (fresh_run / "last.npz").read_bytes()
    rc, out, err = train("--overwrite", "--seed", "3")
    assert rc == 0, err
    assert (fresh_run / "last.npz").read_bytes() != before
    assert not (fresh_run / runfolder.REPLACED).exists() and not (fresh_run / runfolder.DISCARDED).exists()


def test_overwrite_that_cannot_read_its_data_touches_nothing(fresh_run, train, tmp_path):
    before = folder_bytes(fresh_run)
    rc, _, err = train("--overwrite", "--dataset", "folder", "--data-dir", str(tmp_path / "missing"))
    assert rc == 2 and "not found" in one_error(err)
    assert folder_bytes(fresh_run) == before


def test_overwrite_of_a_two_protocol_run_leaves_no_old_protocol_folders(train, tmp_path):
    assert train("--protocol", "both")[0] == 0
    rc, _, err = train("--overwrite")
    assert rc == 0, err
    # the old patient/ and paper/ runs are gone, not left beside the new one to be mixed up with it
    assert runfolder.run_files(tmp_path / "run" / "patient") == []
    assert runfolder.run_files(tmp_path / "run" / "paper") == []


def test_a_killed_overwrite_without_a_checkpoint_is_undone_by_the_next_run(fresh_run, train):
    before = folder_bytes(fresh_run)
    Replacement(fresh_run).begin()  # then the process "dies": no commit, no rollback
    assert not (fresh_run / "last.npz").exists()
    rc, out, err = train()  # a plain run: it restores, then finds the folder taken
    assert rc == 2 and "already holds a run" in one_error(err)
    assert "restored the run" in out
    assert folder_bytes(fresh_run) == before


def test_a_killed_overwrite_after_its_first_checkpoint_keeps_the_new_run(fresh_run):
    Replacement(fresh_run).begin()
    (fresh_run / "last.npz").write_bytes(b"the new run's checkpoint")
    note = runfolder.recover(fresh_run)
    assert "removed" in note and not (fresh_run / runfolder.REPLACED).exists()
    assert (fresh_run / "last.npz").read_bytes() == b"the new run's checkpoint"


def test_a_move_aside_killed_half_way_loses_nothing(fresh_run):
    # begin() died after moving one file: no completion mark, so the rest is put back,
    # though a checkpoint of the OLD run is still in place
    before = folder_bytes(fresh_run)
    backup = fresh_run / runfolder.REPLACED
    backup.mkdir()
    os.replace(fresh_run / "metrics.json", backup / "metrics.json")
    assert "restored" in runfolder.recover(fresh_run)
    assert folder_bytes(fresh_run) == before


# ------------------------------------------------------------ outputs that are inputs
def test_classify_never_writes_its_csv_over_the_checkpoint(fresh_run, run_classify, tmp_path):
    img = small_image(tmp_path / "roi.png")
    before = (fresh_run / "best.npz").read_bytes()
    rc, _, err = run_classify(fresh_run, img, "--csv", fresh_run / "best.npz")
    assert rc == 2 and "is the checkpoint" in one_error(err)
    assert (fresh_run / "best.npz").read_bytes() == before


def test_classify_never_writes_its_csv_over_an_input_image(fresh_run, run_classify, tmp_path):
    img = small_image(tmp_path / "roi.png")
    before = img.read_bytes()
    rc, _, err = run_classify(fresh_run, tmp_path, "--csv", img)  # the image reached through its folder
    assert rc == 2 and "is an input image" in one_error(err)
    assert img.read_bytes() == before


def test_classify_sees_through_another_spelling_of_the_checkpoint(fresh_run, run_classify, tmp_path):
    img = small_image(tmp_path / "roi.png")
    os.symlink(fresh_run / "best.npz", tmp_path / "alias.csv")
    rc, _, err = run_classify(fresh_run / "best.npz", img, "--csv", tmp_path / "alias.csv")
    assert rc == 2 and "is the checkpoint" in one_error(err)


def test_classify_refuses_to_replace_a_file_that_is_not_a_predictions_table(fresh_run, run_classify, tmp_path):
    img = small_image(tmp_path / "roi.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    rc, _, err = run_classify(fresh_run, img, "--csv", notes)
    assert rc == 2 and "not an earlier predictions table" in one_error(err)
    assert notes.read_text() == "my notes\n"


@pytest.mark.parametrize("earlier", ["file,p_malignant,prediction\nold.png,0.1,benign\n", ""])
def test_classify_replaces_an_earlier_predictions_table_or_an_empty_file(fresh_run, run_classify, tmp_path,
                                                                         earlier):
    img = small_image(tmp_path / "roi.png")
    table = tmp_path / "p.csv"
    table.write_text(earlier)
    rc, _, err = run_classify(fresh_run, img, "--csv", table)
    assert rc == 0, err
    assert "roi.png" in table.read_text() and "old.png" not in table.read_text()


def test_a_csv_write_that_fails_leaves_the_earlier_table_whole(fresh_run, run_classify, tmp_path, monkeypatch):
    img = small_image(tmp_path / "roi.png")
    table = tmp_path / "p.csv"
    table.write_text("file,p_malignant,prediction\nold.png,0.1,benign\n")
    import classify

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(classify.os, "replace", disk_full)
    rc, _, err = run_classify(fresh_run, img, "--csv", table)
    assert rc == 2 and "No space left" in one_error(err)
    assert "old.png" in table.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "roi.png", "run"]  # no temporary left


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_inside_the_data_folder_is_refused_before_reading(tmp_path, capsys, where):
    data = make_rois(tmp_path / "rois", n=2)
    out = data if where == "same" else data / "benign" / "run"  # plots there would become training images
    err = usage_error(train_app.main, [*TINY, "--dataset", "folder", "--data-dir", str(data), "--out", str(out)],
                      capsys)
    assert "is inside --data-dir" in err
    assert not (data / "benign" / "run").exists()


def test_out_under_a_file_is_refused_before_reading(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = usage_error(train_app.main, [*TINY, "--out", str(tmp_path / "afile" / "run")], capsys)
    assert "is a file, so no folder can be made under it" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions apply to")
def test_out_in_a_read_only_folder_is_refused_before_reading(tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    err = usage_error(train_app.main, [*TINY, "--out", str(locked / "run")], capsys)
    assert "is not writable" in err


# ------------------------------------------------------------ one training per folder
def test_a_folder_in_use_by_another_training_is_refused(train, tmp_path):
    with RunLock(tmp_path / "run"):  # another open lock file: to flock, another process
        rc, _, err = train()
    assert rc == 2 and "is in use by another training" in one_error(err)
    assert not runfolder.holds_run(tmp_path / "run")


def test_a_live_process_holds_the_lock_and_a_killed_one_leaves_none(train, tmp_path):
    folder = tmp_path / "run"
    code = ("import sys, time; from tinycnn.mammo.runfolder import RunLock; "
            f"lock = RunLock({str(folder)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, _, err = train()
        assert rc == 2 and f"(process {holder.pid})" in one_error(err)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait()
    rc, _, err = train()
    assert rc == 0, err


def test_resume_of_a_folder_in_use_is_refused(fresh_run, train):
    with RunLock(fresh_run):
        rc, _, err = train("--resume")
    assert rc == 2 and "in use" in one_error(err)


def test_a_default_out_in_use_moves_to_the_next_number(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with RunLock(tmp_path / "runs" / "synthetic"):
        rc = train_app.main([*TINY, "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    assert runfolder.holds_run(tmp_path / "runs" / "synthetic-2")
    assert not runfolder.holds_run(tmp_path / "runs" / "synthetic")


def test_a_run_that_fails_early_leaves_no_empty_folder(train, tmp_path):
    rc, _, err = train("--dataset", "folder", "--data-dir", str(tmp_path / "missing"))
    assert rc == 2 and "not found" in one_error(err)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------ temporary files of killed saves
def test_stale_temporaries_go_and_the_resume_still_works(fresh_run, train):
    (fresh_run / ".tmp-dead1234.npz").write_bytes(b"half a checkpoint")
    (fresh_run / "metrics.json.tmp").write_text("{")
    rc, out, err = train("--resume", "--epochs", "2")
    assert rc == 0, err
    assert "removed 2 temporary file(s)" in out
    assert not list(fresh_run.glob(".tmp-*")) and not (fresh_run / "metrics.json.tmp").exists()


def test_stale_cache_temporaries_go_but_a_write_in_progress_stays(tmp_path):
    old, live = tmp_path / ".tmp-old.npz", tmp_path / ".tmp-live.npz"
    old.write_bytes(b"x")
    live.write_bytes(b"x")
    hours_ago = time.time() - 2 * cache.STALE_AFTER_S
    os.utime(old, (hours_ago, hours_ago))
    assert cache.remove_stale_temporaries(tmp_path) == 1
    assert not old.exists() and live.exists()


# ------------------------------------------------------------ argument-only errors come first
def test_resume_with_nothing_to_resume_is_refused_before_reading(train, no_data_reading):
    rc, _, err = train("--resume")
    assert rc == 2 and "nothing to resume" in one_error(err)


def test_resume_with_another_architecture_is_refused_before_reading(fresh_run, train, no_data_reading):
    rc, _, err = train("--resume", "--hidden", "16")
    assert rc == 2 and "layer 13 differs" in one_error(err)


def test_resume_with_another_learning_rate_is_refused_before_reading(fresh_run, train, no_data_reading):
    rc, _, err = train("--resume", "--lr", "0.5")
    assert rc == 2 and "lr: checkpoint 0.001, now 0.5" in one_error(err)


def test_a_taken_out_is_refused_before_reading(fresh_run, train, no_data_reading):
    rc, _, err = train()
    assert rc == 2 and "already holds a run" in one_error(err)


def test_resume_of_a_two_protocol_run_stopped_in_its_first_protocol(train, tmp_path):
    # the paper protocol never started: --resume finishes patient, then starts paper
    assert train("--protocol", "both")[0] == 0
    for f in runfolder.run_files(tmp_path / "run" / "paper"):
        f.unlink()
    rc, out, err = train("--protocol", "both", "--resume")
    assert rc == 0, err
    assert "nothing saved for protocol paper yet" in out
    assert (tmp_path / "run" / "paper" / "last.npz").exists()
    assert np.isfinite(np.load(tmp_path / "run" / "paper" / "last.npz")["layer0.w"]).all()

"""Hand-edited and foreign checkpoints: every record checked by type and range, so
classify.py and --resume fail with one line naming the record and field, never an
IndexError, a TypeError or an allocation the record asks for."""

import zipfile

import numpy as np
import pytest

from test_hostile_support import (  # noqa: F401  (fixtures)
    edit_checkpoint, fresh_run, one_error, read_npz, run_classify, small_image, train, trained_run)

# paper_net's layers: 0 conv, 1 relu, 2 pool, ... 12 flatten, 13 dense, 14 relu, 15 dropout,
# 16 dense, 17 relu, 18 dropout, 19 dense (the logits)


def _set(path, value):
    """An edit function: record[path[0]][path[1]]... = value."""
    def edit(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return record
    return edit


def _drop_field(layer, field):
    def edit(arch):
        del arch["layers"][layer][field]
        return arch
    return edit


def _one_output(z):
    return {"layer19.w": z["layer19.w"][:, :1].copy(), "layer19.b": z["layer19.b"][:1].copy()}


# (edits to best.npz, what the one error line must say)
CLASSIFY_CASES = {
    "meta a list": (dict(meta="[]"), "damaged __meta__ record (a JSON object expected, found a list)"),
    "meta not JSON": (dict(meta="{"), "damaged __meta__ record"),
    "state a number": (dict(state="5"), "damaged __state__ record (a JSON object expected, found a number)"),
    "state entry a list": (dict(state='{"15": [1, 2]}'), "__state__ record, layer 15: an object expected"),
    "state seed a string": (dict(state='{"15": {"seed": "x", "calls": 0}}'),
                            "__state__ record, layer 15: field 'seed' should be a whole number"),
    "version a string": (dict(arch=_set(["version"], "1")), "field 'version' should be a positive whole number"),
    "version from the future": (dict(arch=_set(["version"], 99)), "format version 99 is newer than"),
    "foreign format": (dict(arch=_set(["format"], "keras")), "not a tinycnn checkpoint (format 'keras')"),
    "input shape of strings": (dict(arch=_set(["input_shape"], [1, "32", 32])), "field 'input_shape'"),
    "layer not an object": (dict(arch=_set(["layers", 0], "conv")), "layer 0: an object expected, found a string"),
    "channels a string": (dict(arch=_set(["layers", 0, "out_channels"], "16")),
                          "layer 0 Conv2D: field 'out_channels' should be a positive whole number, found \"16\""),
    "stride zero": (dict(arch=_set(["layers", 0, "stride"], 0)), "field 'stride' should be a positive whole number"),
    "ceil mode a string": (dict(arch=_set(["layers", 2, "ceil_mode"], "yes")), "'ceil_mode' should be true or false"),
    "dropout above one": (dict(arch=_set(["layers", 15, "p"], 1.5)), "layer 15 Dropout: field 'p' should be"),
    "unknown field": (dict(arch=_set(["layers", 0, "dilation"], 2)), "layer 0 Conv2D: unknown field 'dilation'"),
    "missing field": (dict(arch=_drop_field(0, "pad")), "layer 0 Conv2D: field 'pad' is missing"),
    "unknown layer": (dict(arch=_set(["layers", 1, "type"], "Swish")), "layer 1: unknown layer type \"Swish\""),
    "layers that do not fit": (dict(arch=_set(["layers", 16, "in_features"], 9)),
                               "layer 16 Dense: expects 9 features, gets shape (8,)"),
    "a parameter missing": (dict(drop=["layer13.b"]), "parameter layer13.b is missing"),
    "a parameter too many": (dict(arrays={"layer99.w": np.zeros(3, np.float32)}),
                             "parameter layer99.w is not part of the architecture record"),
    "whole-number weights": (dict(arrays={"layer13.b": np.zeros(8, np.int64)}), "layer13.b holds int64 values"),
    "weights of another shape": (dict(arrays={"layer13.b": np.zeros(9, np.float32)}),
                                 "layer13.b has shape (9,), the model expects (8,)"),
    "image size a string": (dict(meta=_set(["preprocessing", "image_size"], "32")),
                            "meta field 'preprocessing.image_size' should be a positive whole number"),
    "preprocessing a string": (dict(meta=_set(["preprocessing"], "resize")), "has no preprocessing settings"),
    "image size not the network's": (dict(meta=_set(["preprocessing", "image_size"], 64)),
                                     "network input (1, 32, 32) does not match image_size 64"),
}


@pytest.mark.parametrize("case", list(CLASSIFY_CASES))
def test_classify_names_what_is_wrong_in_an_edited_checkpoint(fresh_run, run_classify, tmp_path, case):
    edits, message = CLASSIFY_CASES[case]
    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "edited.npz", **edits)
    rc, out, err = run_classify(ckpt, small_image(tmp_path / "roi.png"))
    assert rc == 2 and message in one_error(err)
    assert out == ""


def test_classify_refuses_a_network_with_one_output(fresh_run, run_classify, tmp_path):
    z = read_npz(fresh_run / "best.npz")
    ckpt = edit_checkpoint(fresh_run / "best.npz", tmp_path / "one.npz", arch=_set(["layers", 19, "out_features"], 1),
                           arrays=_one_output(z))
    rc, _, err = run_classify(ckpt, small_image(tmp_path / "roi.png"))
    assert rc == 2 and "outputs of shape (1,); classify.py needs 2 (benign, malignant)" in one_error(err)


@pytest.mark.parametrize("content, message", [
    (b"", "not a tinycnn checkpoint (not an .npz archive)"),
    ("half", "not a tinycnn checkpoint (not an .npz archive)"),  # the first half of a real checkpoint
    ("numpy", "not a tinycnn checkpoint (no architecture record)"),  # np.savez of something else
    ("zip", "not a tinycnn checkpoint (no architecture record)"),  # a zip of text files
])
def test_classify_refuses_files_that_are_not_checkpoints(fresh_run, run_classify, tmp_path, content, message):
    path = tmp_path / "foreign.npz"
    if content == "half":
        data = (fresh_run / "best.npz").read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif content == "numpy":
        np.savez(path, x=np.arange(3))
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    else:
        path.write_bytes(content)
    rc, _, err = run_classify(path, small_image(tmp_path / "roi.png"))
    assert rc == 2 and message in one_error(err)


# ------------------------------------------------------------ --resume on an edited last.npz
def _edit_position(value):
    return dict(arrays={"extra.position": np.array(value, dtype=np.int64)})


RESUME_CASES = {
    "identity a list": (dict(meta=_set(["identity"], [1, 2])), "meta field 'identity' should be an object"),
    "history a string": (dict(meta=_set(["history"], "good")), "meta field 'history' should be a list"),
    "history without AUC": (dict(meta=_set(["history", 0, "test_auc"], None)), "meta field 'history'"),
    "best AUC a word": (dict(meta=_set(["best_auc"], "high")), "meta field 'best_auc' should be a number"),
    "best epoch past the history": (dict(meta=_set(["best_epoch"], 99)), "meta field 'best_epoch'"),
    "train config a list": (dict(meta=_set(["train_config"], [])), "meta field 'train_config' should be an object"),
    "position too short": (_edit_position([1, 0, 5]), "field extra.position should be 5 whole numbers"),
    "position negative": (_edit_position([1, -1, 5, 0, 0]), "field extra.position should be 5 whole numbers >= 0"),
    "position past the epoch": (_edit_position([0, 999, 5, 0, 0]), "does not fit this run"),
    "position as floats": (dict(arrays={"extra.position": np.zeros(5)}), "field extra.position"),
    "loss sum NaN": (dict(arrays={"extra.loss_sum": np.array(np.nan)}), "field extra.loss_sum should be one finite"),
    "optimizer buffer NaN": (dict(arrays={"extra.opt.m.0": np.full((16, 1, 3, 3), np.nan, np.float32)}),
                             "optimizer state extra.opt.m.0 holds NaN"),
    "optimizer buffer missing": (dict(drop=["extra.opt.v.3"]), "optimizer state does not fit this run's adam"),
    "optimizer step count missing": (dict(drop=["extra.opt.steps"]), "optimizer state does not fit"),
    "weights only": (dict(drop=["extra.position"]), "holds weights only"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_names_what_is_wrong_in_an_edited_checkpoint(fresh_run, train, case):
    edits, message = RESUME_CASES[case]
    before = read_npz(fresh_run / "best.npz")
    edit_checkpoint(fresh_run / "last.npz", fresh_run / "last.npz", **edits)
    rc, _, err = train("--resume", "--epochs", "2")
    assert rc == 2 and message in one_error(err)
    after = read_npz(fresh_run / "best.npz")  # the refusal wrote nothing
    assert all(np.array_equal(before[k], after[k]) for k in before if before[k].dtype.kind != "U")


# ------------------------------------------------------------ classify's other inputs
def test_classify_a_run_folder_without_checkpoints(run_classify, tmp_path):
    (tmp_path / "empty_run").mkdir()
    rc, _, err = run_classify(tmp_path / "empty_run", small_image(tmp_path / "roi.png"))
    assert rc == 2 and "no best.npz or last.npz in" in one_error(err)


def test_classify_an_input_that_does_not_exist(fresh_run, run_classify, tmp_path):
    rc, _, err = run_classify(fresh_run, tmp_path / "nowhere.png")
    assert rc == 2 and "not found:" in one_error(err)


def test_classify_a_folder_without_images(fresh_run, run_classify, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no images here")
    rc, _, err = run_classify(fresh_run, tmp_path / "docs")
    assert rc == 2 and "no images" in one_error(err)


def test_classify_with_only_unreadable_images(fresh_run, run_classify, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    rc, _, err = run_classify(fresh_run, tmp_path / "broken.png")
    assert rc == 2 and "none of the 1 input(s) could be read" in one_error(err)

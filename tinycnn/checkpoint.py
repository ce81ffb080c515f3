"""Checkpoints: the file format, the one reader, and the checks every record passes.

Format: one ``.npz`` written without pickle, whole or not at all
(tinycnn.paths.atomic_savez). ``__arch__`` holds the architecture as a JSON string
(format name, version, one sample's input shape, each layer's config()), ``__state__``
each layer's non-parameter state (dropout counters), ``__meta__`` whatever the caller
records (preprocessing, training history, ...), ``layer{i}.{name}`` the parameters and
``extra.{key}`` the caller's arrays (optimizer state, the training position).

A checkpoint is input like any other: every record is checked by type and range, so a
hand-edited or foreign file fails with a CheckpointError that names the record and the
field, never an IndexError, a TypeError or a huge allocation. Shapes are worked out
from the records by the layers' own arithmetic (tinycnn.layers), before anything is
allocated.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .layers import LAYER_TYPES
from .paths import atomic_savez

CHECKPOINT_FORMAT = "tinycnn-checkpoint"
CHECKPOINT_VERSION = 1
RECORDS = ("__arch__", "__meta__")  # what read_checkpoint(arrays=False) reads


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not fit the model."""


def write_checkpoint(path, arch: dict, params: dict, state: dict, meta: dict | None = None,
                     extra: dict | None = None) -> None:
    """One .npz at `path`, atomically: a crash mid-write never destroys the previous one.
    params: {"layer{i}.{name}": host array}; state: {str(i): layer i's state}."""
    arrays = dict(params)
    arrays["__arch__"] = np.array(json.dumps(arch))
    arrays["__state__"] = np.array(json.dumps(state))
    arrays["__meta__"] = np.array(json.dumps(meta or {}))
    for key, value in (extra or {}).items():
        arrays[f"extra.{key}"] = np.asarray(value)
    atomic_savez(path, arrays)


def read_checkpoint(path, arrays: bool = True) -> dict:
    """{"arch", "meta"} of a checkpoint, checked as far as they go without a model;
    with arrays, also "state", "params" (by checkpoint name) and "extra" (by key).
    arrays=False reads no array at all (an NpzFile reads a member only when asked):
    cheap, for checks made before a long job starts. FileNotFoundError when there is
    no file; CheckpointError for anything that is not a readable tinycnn checkpoint."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # before np.load, whose message for other files is about pickles
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files if arrays or k in RECORDS}
    except Exception as e:  # truncated or damaged archive: name the file
        raise CheckpointError(f"{path} is not a readable tinycnn checkpoint ({e})") from e
    if "__arch__" not in files:
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (no architecture record)")
    arch = _json_record(files, "__arch__", path)
    if not isinstance(arch, dict) or arch.get("format") != CHECKPOINT_FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (format {found!r})")
    _check_arch_header(arch, path)
    if not arrays:
        return {"arch": arch, "meta": _json_object(files, "__meta__", path)}
    return {
        "arch": arch,
        "state": _json_object(files, "__state__", path),
        "meta": _json_object(files, "__meta__", path),
        "params": {k: v for k, v in files.items() if k.startswith("layer")},
        "extra": {k[len("extra."):]: v for k, v in files.items() if k.startswith("extra.")},
    }


def _check_arch_header(arch: dict, path) -> None:
    if not isinstance(arch.get("layers"), list) or not isinstance(arch.get("input_shape"), list):
        raise CheckpointError(f"{path}: damaged architecture record (no layer list or input shape)")
    version = arch.get("version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: architecture record field 'version' should be a positive whole number, "
                              f"found {_short(version)}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this tinycnn reads "
                              f"({CHECKPOINT_VERSION}): update tinycnn")


def _json_record(files: dict, key: str, path):
    try:
        return json.loads(str(files.get(key, "{}")))
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged {key} record ({e})") from e


def _json_object(files: dict, key: str, path) -> dict:
    """A record that must be a JSON object (a dict): hand edits that leave a list or a
    number there are named here, not met later as an AttributeError."""
    record = _json_record(files, key, path)
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: damaged {key} record (a JSON object expected, found {_json_type(record)})")
    return record


# ------------------------------------------------------------- the architecture record
@dataclass(frozen=True)
class ArchitectureShapes:
    """What an architecture record declares: each parameter's shape by checkpoint name
    (layer{i}.w, ...) and one sample's output shape after each layer."""

    params: dict
    outputs: list

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.params.values())

    def activations(self) -> int:
        """Floats of every layer's output for one sample (what memory_estimate counts)."""
        return sum(math.prod(s) for s in self.outputs)


def architecture_shapes(arch: dict, path="architecture") -> ArchitectureShapes:
    """Validate an architecture record field by field and work out its parameter and
    output shapes by arithmetic alone (nothing is allocated, so a record that claims a
    layer of 10^16 weights costs nothing). CheckpointError names the layer and field."""
    where = f"{path}: its architecture record cannot be built"
    shape = arch.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_is_int(s) and s >= 1 for s in shape):
        raise CheckpointError(f"{where} (field 'input_shape' should be a list of positive whole numbers, "
                              f"found {_short(shape)})")
    shape = tuple(shape)
    params, outputs = {}, []
    for i, cfg in enumerate(arch["layers"]):
        layer = _checked_layer_type(cfg, i, where)
        try:
            shape = layer.output_shape_of(cfg, shape)
        except ValueError as e:
            raise CheckpointError(f"{where} (layer {i} {cfg['type']}: {e})") from e
        params.update({f"layer{i}.{name}": s for name, s in layer.param_shapes(cfg).items()})
        outputs.append(shape)
    return ArchitectureShapes(params, outputs)


def _checked_layer_type(cfg, i: int, where: str):
    """The layer class of record `cfg`, once every field its config() writes is there
    and holds what it must, and no other field is."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where} (layer {i}: an object expected, found {_json_type(cfg)})")
    kind = cfg.get("type")
    if kind not in LAYER_TYPES:
        raise CheckpointError(f"{where} (layer {i}: unknown layer type {_short(kind)}; "
                              f"known: {', '.join(LAYER_TYPES)})")
    fields = LAYER_TYPES[kind].FIELDS
    unknown = sorted(set(cfg) - set(fields) - {"type"})
    if unknown:
        raise CheckpointError(f"{where} (layer {i} {kind}: unknown field {unknown[0]!r})")
    for name, (rule, ok) in fields.items():
        if name not in cfg:
            raise CheckpointError(f"{where} (layer {i} {kind}: field {name!r} is missing)")
        if not ok(cfg[name]):
            raise CheckpointError(f"{where} (layer {i} {kind}: field {name!r} should be {rule}, "
                                  f"found {_short(cfg[name])})")
    return LAYER_TYPES[kind]


def check_architecture(found: dict, expected: dict, path="checkpoint") -> None:
    """Raise CheckpointError naming the first layer where two architectures differ."""
    if list(found["input_shape"]) != list(expected["input_shape"]):
        raise CheckpointError(f"{path}: checkpoint was trained on inputs {tuple(found['input_shape'])}, "
                              f"the model takes {tuple(expected['input_shape'])}")
    fl, el = found["layers"], expected["layers"]
    for i, (f, e) in enumerate(zip(fl, el)):
        if f != e:
            raise CheckpointError(f"{path}: layer {i} differs: checkpoint has {_cfg_str(f)}, "
                                  f"the model has {_cfg_str(e)}")
    if len(fl) != len(el):
        raise CheckpointError(f"{path}: checkpoint has {len(fl)} layers, the model has {len(el)}")


# ------------------------------------------------------------- parameters and state
def check_parameters(found: dict, expected: dict, path="checkpoint") -> None:
    """Every expected parameter is in the file with its shape, as finite floats; no
    other parameter is. CheckpointError names the first that is not."""
    for name, shape in expected.items():
        if name not in found:
            raise CheckpointError(f"{path}: parameter {name} is missing")
        value = found[name]
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the model expects {tuple(shape)}")
        if value.dtype.kind != "f":
            raise CheckpointError(f"{path}: {name} holds {value.dtype} values, not floating point")
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise CheckpointError(f"{path}: {name} holds {bad} NaN or infinite value(s): the run that wrote it "
                                  "diverged; use an earlier checkpoint")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: parameter {extra[0]} is not part of the architecture record")


def layer_state(state: dict, i: int, path) -> dict:
    """Layer i's entry of the __state__ record: an object of whole numbers."""
    entry = state.get(str(i), {})
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: __state__ record, layer {i}: an object expected, found {_json_type(entry)}")
    for key, value in entry.items():
        if not _is_int(value):
            raise CheckpointError(f"{path}: __state__ record, layer {i}: field {key!r} should be a whole number, "
                                  f"found {_short(value)}")
    return entry


# ------------------------------------------------------------- naming what was found
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, bool, type(None))) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _cfg_str(cfg: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")
    return f"{cfg.get('type')}({args})"

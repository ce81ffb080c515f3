"""Checkpoints: the file format, the one reader, and the checks every record passes.

Format: one ``.npz`` written without pickle, whole or not at all
(tinycnn.paths.atomic_savez). ``__arch__`` holds the architecture as a JSON string
(format name, version, one sample's input shape, each layer's config()), ``__state__``
each layer's non-parameter state (dropout counters), ``__meta__`` whatever the caller
records (preprocessing, training history, ...), ``layer{i}.{name}`` the parameters and
``extra.{key}`` the caller's arrays (optimizer state, the training position).

A checkpoint is input like any other, and may come from anyone: every record is
checked by type and range, so a hand-edited or foreign file fails with a
CheckpointError that names the record and the field, never an IndexError, a
TypeError or a huge allocation. The archive is read member by member with zipfile,
never through pickle: each member's .npy header (its dtype and shape) is read from
the member's own stream first and held to the architecture record and to the size
the archive records for it, so a member that is not an array, holds objects, is
another shape or would inflate to more than it declares (a zip bomb) is refused
before its data is inflated. Shapes are worked out from the records by the layers'
own arithmetic (tinycnn.layers), before anything is allocated. Parameters stored as
float16 or float64 are converted to float32 with a note; other dtypes are refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format

from .layers import LAYER_TYPES
from .paths import atomic_savez

CHECKPOINT_FORMAT = "tinycnn-checkpoint"
CHECKPOINT_VERSION = 1
RECORD_NAMES = ("__arch__", "__state__", "__meta__")  # JSON text, not arrays
MAX_RECORD_BYTES = 64 << 20  # a record's text; a long run's history is a few hundred KiB
MAX_HEADER_BYTES = 64 << 10  # a .npy header (NumPy's own limit for safe loading is 10,000 characters)
MAX_MEMBERS = 100_000
# The caller's extra arrays are an optimizer's state (Adam: two per parameter, as wide
# as float64 at most) and a few numbers: anything bigger is not ours.
EXTRA_PER_PARAMETER, EXTRA_SLACK = 16, 16 << 20
READ_CHUNK = 16 << 20


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
    """{"arch", "meta", "notes"} of a checkpoint, checked as far as they go without a
    model; with arrays, also "state", "params" (by checkpoint name, float32) and
    "extra" (by key). Every member's .npy header is read and checked first (name,
    dtype, shape against the architecture record, size against the archive's), and
    nothing is inflated that fails: arrays=False reads the records only, cheap, for
    checks made before a long job starts. notes: a line per parameter converted to
    float32. FileNotFoundError when there is no file; CheckpointError for anything
    that is not a readable tinycnn checkpoint."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a named pipe would be waited on, forever
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (not a regular file)")
    if not zipfile.is_zipfile(path):  # before anything that would read it as something else
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_archive(zf, path, arrays)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as e:
        # truncated, damaged, encrypted or of an unknown compression: name the file
        raise CheckpointError(f"{path} is not a readable tinycnn checkpoint ({e})") from e


def _read_archive(zf: zipfile.ZipFile, path, arrays: bool) -> dict:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"{path} is not a tinycnn checkpoint ({len(infos)} members; a network has a few "
                              "dozen)")
    if "__arch__.npy" not in {i.filename for i in infos}:
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (no architecture record)")
    members = _members(zf, infos, path)
    arch = _json_text(zf, members, "__arch__", path)
    if not isinstance(arch, dict) or arch.get("format") != CHECKPOINT_FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise CheckpointError(f"{path} is not a tinycnn checkpoint (format {found!r})")
    _check_arch_header(arch, path)
    shapes = architecture_shapes(arch, path)
    notes = _check_members(members, shapes, path)
    meta = _json_object(zf, members, "__meta__", path)
    if not arrays:
        return {"arch": arch, "meta": meta, "notes": notes}
    params, extra = {}, {}
    for key, m in members.items():
        if key.startswith("layer"):
            params[key] = _as_float32(_read_array(zf, m, path), key, path)
        elif key.startswith("extra."):
            extra[key[len("extra."):]] = _read_array(zf, m, path)
    return {"arch": arch, "state": _json_object(zf, members, "__state__", path), "meta": meta, "params": params,
            "extra": extra, "notes": notes}


# ------------------------------------------------------------- the archive's members
@dataclass(frozen=True)
class _Member:
    """One .npy member of the archive, from its header alone."""

    info: zipfile.ZipInfo
    shape: tuple
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes of magic and header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _members(zf: zipfile.ZipFile, infos, path) -> dict:
    """key (the name without .npy) -> _Member, each header read from the member's own
    stream (a few hundred bytes inflated at most) and held to the archive's record of
    the member's size: a header that claims less than the member holds is a lie."""
    members = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise CheckpointError(f"{path}: member {name!r} is not a NumPy array (.npy): not a tinycnn checkpoint")
        key = name[:-len(".npy")]
        if key in members:
            raise CheckpointError(f"{path}: member {name!r} appears twice in the archive")
        with zf.open(info) as f:
            shape, fortran, dtype, offset = _npy_header(f, name, path)
        m = _Member(info, shape, fortran, dtype, offset)
        if offset + m.nbytes != info.file_size:
            raise CheckpointError(f"{path}: member {name!r} declares {dtype} {shape} ({offset + m.nbytes:,} bytes "
                                  f"with its header) but holds {info.file_size:,} bytes: damaged or forged")
        members[key] = m
    return members


def _npy_header(f, name: str, path) -> tuple:
    """(shape, fortran order, dtype, header bytes) of a .npy stream, read through
    NumPy's own header parser after the header's length is bounded (a version 2
    header may claim 4 GiB). Never unpickles: a dtype holding objects is refused."""
    magic = f.read(8)
    if len(magic) < 8 or magic[:6] != npy_format.MAGIC_PREFIX:
        raise CheckpointError(f"{path}: member {name!r} is not a NumPy array (no .npy header)")
    version = (magic[6], magic[7])
    readers = {(1, 0): (2, npy_format.read_array_header_1_0), (2, 0): (4, npy_format.read_array_header_2_0)}
    if version not in readers:
        raise CheckpointError(f"{path}: member {name!r} is a .npy file of version {version[0]}.{version[1]}, "
                              "which tinycnn does not read (it writes 1.0)")
    width, read_header = readers[version]
    length = f.read(width)
    size = int.from_bytes(length, "little") if len(length) == width else -1
    if not 0 <= size <= MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: member {name!r} has a damaged .npy header (length {size})")
    header = f.read(size)
    try:
        shape, fortran, dtype = read_header(io.BytesIO(length + header))
    except (ValueError, SyntaxError, TypeError) as e:
        raise CheckpointError(f"{path}: member {name!r} has a damaged .npy header ({e})") from e
    if dtype.hasobject:
        raise CheckpointError(f"{path}: member {name!r} holds Python objects, which a checkpoint never does "
                              "(they would need unpickling; tinycnn never unpickles)")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{path}: member {name!r} has a negative dimension in its shape {shape}")
    return tuple(shape), bool(fortran), dtype, 8 + width + size


def _check_members(members: dict, shapes: ArchitectureShapes, path) -> list[str]:
    """Every member before any is read: the records are text of a sane size, the
    parameters are the architecture's (shape and a float dtype), the extras no bigger
    than an optimizer's state can be, nothing else is there. Returns the notes."""
    converted: dict[str, list] = {}
    for key in RECORD_NAMES:
        m = members.get(key)
        if m is None:
            continue
        if m.dtype.kind != "U" or m.shape != ():
            raise CheckpointError(f"{path}: damaged {key} record (text expected, found {m.dtype} {m.shape})")
        if m.nbytes > MAX_RECORD_BYTES:
            raise CheckpointError(f"{path}: the {key} record is {m.nbytes:,} bytes; tinycnn's are far smaller "
                                  f"(at most {MAX_RECORD_BYTES:,} read): damaged or forged")
    extra_bytes = 0
    for key, m in members.items():
        if key in RECORD_NAMES:
            continue
        if key.startswith("layer"):
            if key not in shapes.params:
                raise CheckpointError(f"{path}: parameter {key} is not part of the architecture record")
            if m.shape != tuple(shapes.params[key]):
                raise CheckpointError(f"{path}: {key} has shape {m.shape}, the model expects "
                                      f"{tuple(shapes.params[key])}")
            if m.dtype.kind != "f":
                raise CheckpointError(f"{path}: {key} holds {m.dtype} values, not floating point")
            if m.dtype.itemsize not in (2, 4, 8):
                raise CheckpointError(f"{path}: {key} holds {m.dtype} values; tinycnn reads float32 (and converts "
                                      "float16 and float64)")
            if m.dtype.itemsize != 4:
                converted.setdefault(m.dtype.name, []).append(key)
        elif key.startswith("extra."):
            extra_bytes += m.nbytes
        else:
            raise CheckpointError(f"{path}: member {key!r} is not part of a tinycnn checkpoint")
    limit = EXTRA_PER_PARAMETER * shapes.num_parameters() + EXTRA_SLACK
    if extra_bytes > limit:
        raise CheckpointError(f"{path}: its extra arrays hold {extra_bytes:,} bytes, more than any optimizer state "
                              f"of this network ({limit:,}): damaged or forged")
    return [f"{path}: {len(keys)} parameter(s) stored as {name} ({', '.join(keys[:3])}"
            f"{', ...' if len(keys) > 3 else ''}), converted to float32 on loading" for name, keys in converted.items()]


def _read_array(zf: zipfile.ZipFile, m: _Member, path) -> np.ndarray:
    """The member's data, read in chunks straight into its array (checked sizes only)."""
    shape = m.shape[::-1] if m.fortran else m.shape
    base = np.empty(shape, dtype=m.dtype)
    view = memoryview(base.reshape(-1).view(np.uint8)) if base.size else memoryview(b"")
    with zf.open(m.info) as f:
        f.read(m.offset)
        got = 0
        while got < m.nbytes:
            n = f.readinto(view[got:got + READ_CHUNK])
            if not n:
                raise CheckpointError(f"{path}: member {m.info.filename!r} ends early")
            got += n
        if f.read(1):  # also where zipfile checks the member's CRC
            raise CheckpointError(f"{path}: member {m.info.filename!r} holds more than its header says")
    out = base.T if m.fortran else base
    return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))


def _as_float32(value: np.ndarray, key: str, path) -> np.ndarray:
    """A parameter in float32 (float16 exactly; float64 rounded, refused where it
    exceeds float32's range, which would turn it into inf)."""
    if value.dtype == np.float32:
        return value
    if value.dtype == np.float64:
        finite = value[np.isfinite(value)]
        top = float(np.abs(finite).max()) if finite.size else 0.0
        if top > float(np.finfo(np.float32).max):
            raise CheckpointError(f"{path}: {key} holds float64 values up to {top:.3g}, beyond float32's range")
    return value.astype(np.float32)


def _json_text(zf: zipfile.ZipFile, members: dict, key: str, path):
    if key not in members:
        return {}
    try:
        return json.loads(str(_read_array(zf, members[key], path)))
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged {key} record ({e})") from e


def _json_object(zf: zipfile.ZipFile, members: dict, key: str, path) -> dict:
    """A record that must be a JSON object (a dict): hand edits that leave a list or a
    number there are named here, not met later as an AttributeError."""
    record = _json_text(zf, members, key, path)
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: damaged {key} record (a JSON object expected, found {_json_type(record)})")
    return record


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

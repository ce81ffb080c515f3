"""Every registered backend against the op contract (tinycnn/backends/contract.py).

The check reads the backend's CLASS from the registry's "module:Factory" string and
never instantiates it, so the cuda backend is checked on machines without CuPy or a
GPU. It asks for every member of contract.Backend (the attributes name and dtype as
class attributes) and, for each method, the same parameters as the contract: names,
order, kinds and defaults (annotations are not compared)."""

from __future__ import annotations

import importlib
import inspect
import sys
import typing

import numpy as np
import pytest

from tinycnn import backends
from tinycnn.backends.contract import Backend
from tinycnn.backends.numpy_backend import NumpyBackend
from tinycnn.op_table import OPS
def _parameters(function) -> inspect.Signature:
    """The parameters of a method defined in a class body, without self and annotations."""
    params = list(inspect.signature(function).parameters.values())[1:]
    return inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in params])


def contract_members() -> dict:
    """{name: parameters} of every member of contract.Backend; None for an attribute."""
    members = {name: None for name in Backend.__annotations__}
    for name, value in vars(Backend).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            members[name] = _parameters(value)
    return members


def contract_differences(cls) -> list[str]:
    """How `cls` departs from the contract, one line per member (empty: it complies)."""
    differences = []
    for name, want in contract_members().items():
        if not hasattr(cls, name):
            differences.append(f"{name}: missing")
            continue
        if want is None:  # an attribute: present is all we can ask of a class
            continue
        member = inspect.getattr_static(cls, name)
        if not inspect.isfunction(member):
            differences.append(f"{name}: a {type(member).__name__}, not a plain method")
            continue
        got = _parameters(member)
        if [(p.name, p.kind, p.default) for p in got.parameters.values()] != \
                [(p.name, p.kind, p.default) for p in want.parameters.values()]:
            differences.append(f"{name}: parameters {got}, the contract's are {want}")
    return differences


def backend_class(name: str) -> type:
    """The class of backend `name`, from its registry entry, without instantiating it: the
    factory itself when it is a class, else the class its return annotation names (as
    numpy64's ``NumpyBackend64() -> NumpyBackend``). Skips when the module needs an
    optional dependency that is not installed here."""
    factory = backends._REGISTRY[name]  # the registry has no public accessor for it
    if isinstance(factory, str):
        module_name, attr = factory.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == "tinycnn":
                raise  # our own module is missing: a bug, not an optional dependency
            pytest.skip(f"{name}: {module_name} needs {e.name}, which is not installed ({e})")
        factory = getattr(module, attr)
    if isinstance(factory, type):
        return factory
    cls = typing.get_type_hints(factory).get("return")
    assert isinstance(cls, type), f"{name}: the factory {factory!r} is not a class and names no return class"
    return cls


@pytest.mark.parametrize("name", backends.names())
def test_backend_class_implements_the_contract(name):
    assert contract_differences(backend_class(name)) == []


class _Compliant(Backend):
    """The contract's own stubs as a class (a base for deliberately wrong classes)."""

    name = "compliant"
    dtype = np.dtype(np.float32)
    precision = "fp32"
    precisions = ("fp32",)
    memory_where = "this machine"
    memory_is_host = True


def test_the_check_names_the_member_and_the_difference():
    """A class that swaps two parameters, changes a default and makes one op a
    staticmethod, and a class with nothing but a name, are reported member by member
    (so the test above can fail)."""
    assert contract_differences(_Compliant) == []

    class Wrong(_Compliant):
        def conv2d_forward(self, x, w, b, pad=0, stride=1):  # order swapped
            raise NotImplementedError

        def maxpool2d_forward(self, x, size=2, stride=2, ceil_mode=False):  # another default
            raise NotImplementedError

        @staticmethod
        def relu_forward(x):
            raise NotImplementedError

    class Empty:
        name = "empty"

    wrong = contract_differences(Wrong)
    assert wrong == [
        "conv2d_forward: parameters (x, w, b, pad=0, stride=1), the contract's are (x, w, b, stride=1, pad=0)",
        "relu_forward: a staticmethod, not a plain method",
        "maxpool2d_forward: parameters (x, size=2, stride=2, ceil_mode=False), "
        "the contract's are (x, size=2, stride=2, ceil_mode=True)",
    ]
    empty = contract_differences(Empty)
    assert "dtype: missing" in empty and "adam_update: missing" in empty and "name: missing" not in empty
    assert len(empty) == len(contract_members()) - 1


def test_a_parameter_kind_is_part_of_the_signature():
    """Same names and defaults, but keyword-only: a positional call would break."""

    class KeywordOnly(_Compliant):
        def dropout_forward(self, x, *, p, seed, train=True):
            raise NotImplementedError

    assert contract_differences(KeywordOnly) == [
        "dropout_forward: parameters (x, *, p, seed, train=True), the contract's are (x, p, seed, train=True)"]


def test_every_op_of_the_op_table_is_in_the_contract():
    """op_table.OPS drives the gradient checks and the parity tests: each of its ops is
    a forward/backward pair of the contract (or, for the loss, one member)."""
    members = set(contract_members())
    for op in OPS:
        assert op in members or {op + "_forward", op + "_backward"} <= members, op


def test_backend_class_reads_a_factory_function_through_its_return_annotation():
    assert backend_class("numpy64") is NumpyBackend


def test_a_missing_optional_dependency_skips_with_its_name(monkeypatch):
    """numba is optional: without it the numba backend's module does not import, and the
    contract test skips (naming what is missing) instead of failing."""
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "tinycnn.backends.numba_backend", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs numba"):
        backend_class("numba")

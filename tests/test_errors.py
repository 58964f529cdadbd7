"""One error tree: every exception class onionmesh defines lives in onionmesh.errors.

The modules that used to define one re-import it, so their old names keep working; a handler
can catch `OnionmeshError` and know it has caught everything onionmesh raises on purpose.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import onionmesh
from onionmesh import errors

ROOT = Path(onionmesh.__file__).parent
ERROR_NAMES = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, BaseException)}


def _exception_classes_outside_errors() -> list[str]:
    """Public classes deriving from an exception, defined anywhere but errors.py."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "errors.py" and path.parent == ROOT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
            if any(
                b.endswith(("Error", "Exception", "Refused", "Failed")) or b in ERROR_NAMES for b in bases
            ):
                found.append(f"{path.relative_to(ROOT)}: {node.name}")
    return found


def test_every_exception_class_is_in_errors() -> None:
    assert _exception_classes_outside_errors() == []


def test_every_error_is_an_onionmesh_error() -> None:
    assert {"StreamFailed", "ExitRefused", "RemoteProtocolError"} <= ERROR_NAMES
    assert sorted(n for n in ERROR_NAMES if not issubclass(getattr(errors, n), errors.OnionmeshError)) == []


@pytest.mark.parametrize(
    ("module", "name", "also"),
    [
        ("onionmesh.runtime.client.circuit_handle", "StreamFailed", None),
        ("onionmesh.runtime.client.circuit_manager", "StreamFailed", None),
        ("onionmesh.runtime.relay.exit_rules", "ExitRefused", None),
        ("onionmesh.runtime.keystore", "InsecurePermissions", OSError),
        ("onionmesh.app.config", "ConfigError", ValueError),
    ],
)
def test_old_names_are_the_errors_classes(module: str, name: str, also: type[Exception] | None) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, errors.OnionmeshError)
    if also is not None:  # what callers caught before still catches it
        assert issubclass(cls, also)


def test_nothing_raises_the_bare_base_class() -> None:
    # peer violations are RemoteProtocolError (the relay switch raised bare OnionmeshError before)
    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and isinstance(node.exc.func, ast.Name)
                and node.exc.func.id == "OnionmeshError"
            ):
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


def test_a_config_error_from_a_plain_string_is_one_problem() -> None:
    # the onion-service runtime raised ConfigError("text"): its message came out one letter a line
    exc = errors.ConfigError("an onion service needs at least one port")
    assert exc.problems == ["an onion service needs at least one port"]
    assert exc.one_line() == str(exc) == "an onion service needs at least one port"
    assert errors.ConfigError(["a", "b\nc"]).one_line() == "a; b c"

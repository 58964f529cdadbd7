"""The protocol core is sans-I/O: wire, crypto, proto and directory import no I/O and no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import onionmesh

CORE = ("wire", "crypto", "proto", "directory")
FORBIDDEN = {
    "asyncio",
    "socket",
    "selectors",
    "aiohttp",
    "kademlia",
    "structlog",
    "time",
    "logging",
    "threading",
}
FORBIDDEN_INTERNAL = ("onionmesh.runtime", "onionmesh.app")


def core_modules() -> list[Path]:
    root = Path(onionmesh.__file__).parent
    return [p for pkg in CORE for p in sorted((root / pkg).glob("*.py"))]


def test_core_imports_no_io() -> None:
    offenders = []
    for path in core_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN_INTERNAL):
                    offenders.append(f"{path.name}: {name}")
    assert core_modules(), "no core modules found"
    assert offenders == []


def test_no_core_module_grows_unbounded() -> None:
    long = [
        f"{p.name}: {len(p.read_text().splitlines())}"
        for p in core_modules()
        if len(p.read_text().splitlines()) > 450
    ]
    assert long == []

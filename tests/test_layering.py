"""Layers only import downwards, and no module imports itself back through others.

The protocol core is sans-I/O: wire, crypto, proto and directory import no I/O and no clock.
Above that, the packages are ordered (LAYERS, lowest first, as docs/architecture.md draws them):
a module may import its own package and the layers below, never a layer above and never a peer
of its own layer. Every import counts, including those inside functions and under
`if TYPE_CHECKING:`, because each is a dependency a reader has to hold in mind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

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

# Lowest first. Packages in one tuple are peers: neither may import the other. "" is the package
# root (onionmesh/__init__.py: __version__); modules directly in onionmesh/ are their own layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "errors", "rng"),
    ("wire",),  # the cell layouts; knows no keys and no directory
    ("crypto",),  # keys, handshake, onion layer: builds on wire's layouts
    ("proto", "directory"),  # state machines / descriptors and policy: independent of each other
    ("runtime",),  # asyncio: the shared pieces directly in runtime/ (logs, keys, limits)
    ("runtime.transport",),  # links over TCP and WebSocket, the stream pump, the memory guard
    ("runtime.dht",),  # the Kademlia node
    ("runtime.metrics",),  # reads every role's counters at scrape time
    ("runtime.torcontrol",),  # Tor's control port: reaches a node only through its ControlTarget
    ("runtime.relay", "runtime.client"),  # the two roles: neither imports the other
    ("app",),  # the command
    ("__main__",),  # python -m onionmesh
)
# Import cycles the runtime/ split (issue 16) removes: it empties this list. Each entry is one
# strongly connected component of the module graph, exactly; a cycle that grows, a new cycle,
# or an entry that no longer exists fails the test, so the list can only shrink.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def module_name(path: Path, root: Path) -> str:
    """`root/wire/cell.py` -> `<package>.wire.cell`; a package's `__init__` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports anywhere in its body, relative imports resolved.

    `from pkg.a import b` is an import of `pkg.a.b` when that is a module, else of `pkg.a`.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import pkg.a.b` of a name inside pkg.a
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every module under the package directory `root` -> the package's modules it imports."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(paths)
    return {m: imports_of(p, m, modules) for m, p in paths.items()}


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> tuple[int, str]:
    """(rank, package) of a module: the longest entry of `layers` that is a dotted prefix of its
    path below the root package (`runtime.relay.switch` -> `runtime.relay`; the root is "")."""
    below = module.split(".")[1:]
    best: tuple[int, str] | None = None
    for rank, peers in enumerate(layers):
        for package in peers:
            parts = package.split(".") if package else []
            matches = (parts or not below) and below[: len(parts)] == parts
            if matches and (best is None or len(parts) > len(best[1].split("."))):
                best = (rank, package)
    if best is None:
        raise AssertionError(f"{module}: package {'.'.join(below[:2])!r} is in no layer; add it to LAYERS")
    return best


def upward_imports(graph: Mapping[str, Iterable[str]], layers: Sequence[Sequence[str]]) -> list[str]:
    """Every import of a higher layer or of a peer package, as 'importer -> imported'."""
    bad = []
    for module, targets in sorted(graph.items()):
        rank, package = layer_of(module, layers)
        for target in sorted(targets):
            t_rank, t_package = layer_of(target, layers)
            if t_rank > rank or (t_rank == rank and t_package != package):
                bad.append(f"{module} -> {target}")
    return bad


def import_cycles(graph: Mapping[str, Iterable[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.add(frozenset(component))
    return cycles


def describe(cycles: Iterable[frozenset[str]]) -> list[str]:
    return sorted(" <-> ".join(sorted(c)) for c in cycles)


ROOT = Path(onionmesh.__file__).parent


def core_modules() -> list[Path]:
    return [p for pkg in CORE for p in sorted((ROOT / pkg).glob("*.py"))]


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


def test_layers_only_import_downwards() -> None:
    graph = import_graph(ROOT)
    assert "onionmesh.wire.relay_msg" in graph and "onionmesh.wire.cell" in graph["onionmesh.wire.relay_msg"]
    assert upward_imports(graph, LAYERS) == []


def test_no_new_import_cycles_and_none_forgotten() -> None:
    found = import_cycles(import_graph(ROOT))
    assert describe(found - KNOWN_CYCLES) == [], "new or grown import cycle"
    assert describe(KNOWN_CYCLES - found) == [], "cycle gone: remove it from KNOWN_CYCLES"


# The test of the test: a small package with one arrow back up and one cycle.


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "errors.py": "class E(Exception): ...\n",
            "wire/__init__.py": "",
            "wire/cell.py": "from pkg.errors import E\n",
            "crypto/__init__.py": "",
            "crypto/layer.py": "from pkg.wire.cell import E\n",
            "proto/__init__.py": "",
            "proto/machine.py": "from pkg.crypto import layer\nfrom ..wire import cell\n",
            "directory/__init__.py": "",
            "directory/view.py": "from pkg.wire.cell import E\n",
            "runtime/__init__.py": "",
            "runtime/a.py": "from pkg.runtime.b import x\n",
            "runtime/b.py": "x = 1\n",
            "runtime/c.py": "import pkg.proto.machine\n",
        },
    )


def test_checker_passes_a_clean_tree(toy: Path) -> None:
    graph = import_graph(toy)
    assert graph["pkg.proto.machine"] == {"pkg.crypto.layer", "pkg.wire.cell"}  # relative resolved
    assert upward_imports(graph, LAYERS) == []
    assert import_cycles(graph) == set()


def test_checker_reports_an_arrow_back_up_and_between_peers(toy: Path) -> None:
    (toy / "wire" / "cell.py").write_text(
        "from pkg.errors import E\n\n\ndef late():\n    from pkg.crypto.layer import TAG\n"
    )
    (toy / "directory" / "view.py").write_text("if True:\n    from pkg.proto import machine\n")
    assert upward_imports(import_graph(toy), LAYERS) == [
        "pkg.directory.view -> pkg.proto.machine",
        "pkg.wire.cell -> pkg.crypto.layer",
    ]


def test_checker_reports_a_cycle_by_module(toy: Path) -> None:
    (toy / "runtime" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
    )
    (toy / "runtime" / "c.py").write_text("from pkg.runtime.a import y\n")
    assert describe(import_cycles(import_graph(toy))) == ["pkg.runtime.a <-> pkg.runtime.b <-> pkg.runtime.c"]


def test_checker_reports_a_module_in_no_layer(toy: Path) -> None:
    _write(toy, {"plugins/__init__.py": ""})
    with pytest.raises(AssertionError, match="plugins"):
        upward_imports(import_graph(toy), LAYERS)


def test_checker_orders_runtime_subpackages_and_keeps_the_roles_apart(toy: Path) -> None:
    _write(
        toy,
        {
            "runtime/transport/__init__.py": "",
            "runtime/transport/link.py": "from pkg.runtime import b\n",  # down to the shared pieces: fine
            "runtime/dht/__init__.py": "",
            "runtime/dht/node.py": "from pkg.runtime.transport import link\n",  # down: fine
            "runtime/relay/__init__.py": "",
            "runtime/relay/switch.py": "from pkg.runtime.client import manager\n",  # peer role
            "runtime/client/__init__.py": "",
            "runtime/client/manager.py": "from pkg.runtime.dht import node\n",  # down: fine
        },
    )
    (toy / "runtime" / "b.py").write_text("from pkg.runtime.dht.node import x\n")  # shared piece up into dht
    assert upward_imports(import_graph(toy), LAYERS) == [
        "pkg.runtime.b -> pkg.runtime.dht.node",
        "pkg.runtime.relay.switch -> pkg.runtime.client.manager",
    ]

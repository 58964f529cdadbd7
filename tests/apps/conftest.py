"""Fixtures several app tests share: a web server with files to fetch (`www`), and an in-process mesh
whose client serves the status page (`page_mesh`)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest

from onionmesh.runtime.client.control import ControlServer
from tests.helpers.chromium import status_server, wait_for_circuits
from tests.helpers.mesh import Mesh, start_mesh, stop_mesh
from tests.helpers.testnet import QuietHandler, QuietServer


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A web server on 127.0.0.1 serving /blob (50 MiB) and /m1 (1 MiB) of random bytes: (port, root)."""
    root = tmp_path_factory.mktemp("www")
    (root / "blob").write_bytes(os.urandom(50 * 1024 * 1024))
    (root / "m1").write_bytes(os.urandom(1024 * 1024))
    server = QuietServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], root
    server.shutdown()


@pytest.fixture
async def page_mesh(tmp_path: Path) -> AsyncIterator[tuple[Mesh, ControlServer]]:
    """A mesh with two built circuits and a control server that serves the status page."""
    mesh, extras = await start_mesh(tmp_path, prebuilt=2)
    server, own = await status_server(mesh)
    try:
        await wait_for_circuits(mesh, 2)
        yield mesh, server
    finally:
        if own:
            await server.stop()
        await stop_mesh(mesh, extras)

"""The in-process mesh as a fixture (`mesh`); the mesh itself lives in tests/helpers/mesh.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# Re-exported for one more round only: other branches still add tests that import these names from
# here. New code imports them from tests.helpers.mesh; drop this block once those branches are merged.
from tests.helpers.mesh import (  # noqa: F401
    LOOPBACK_EXIT_POLICY,
    Mesh,
    Origin,
    curl_via_socks,
    eventually,
    http_get_via_socks,
    raw_socks5_reply,
    socks5_connect,
    start_mesh,
    start_origin,
    stop_mesh,
)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m, extras = await start_mesh(tmp_path)
    try:
        yield m
    finally:
        await stop_mesh(m, extras)

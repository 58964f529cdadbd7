"""One testnet for the Tor control port tests (`testnet`, package-scoped: started once for all of
tests/apps/tor_control/, as a user starts it: `onionmesh testnet`, a subprocess) and a page to fetch
through it (`www`).  The files run in name order, which keeps the tests that add onion services
(test_txtorcon, test_v3_onion_services) after those that count the circuits."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import ThreadingHTTPServer

import pytest

from tests.helpers.testnet import QuietHandler, run_testnet, stop_testnet
from tests.helpers.torcontrol import STEM_PW_HASH


@pytest.fixture(scope="package")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, bytes]]:
    root = tmp_path_factory.mktemp("www")
    page = os.urandom(20_000)
    (root / "page").write_bytes(page)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], page
    server.shutdown()


CONFIG = """# onionmesh testnet settings for the control-port tests: SAVECONF writes back here
log_level = "warning"  # quiet

[testnet]
# no exit excluded yet (a controller's SETCONF ExcludeExitNodes + SAVECONF changes this line)
exclude_exit_nodes = ""   # keep this comment
strict_nodes = false
"""


@pytest.fixture(scope="package")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    state = tmp_path_factory.mktemp("tn")
    config = tmp_path_factory.mktemp("conf") / "onionmesh.toml"
    config.write_text(CONFIG)
    config.chmod(0o640)
    proc, info, _ = run_testnet(
        state, "--config", str(config), "--hashed-control-password", STEM_PW_HASH, relays=4
    )
    info["config"] = config
    yield info
    stop_testnet(proc)

"""Safe logging, end to end: after a testnet run with default settings, no log line carries a
destination hostname or address, or the client's address."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.helpers.mesh import http_get_via_socks, raw_socks5_reply
from tests.helpers.testnet import ONIONMESH, free_port

SECRET = "logscan-secret-destination"


def test_no_destination_or_client_address_in_any_log(tmp_path: Path, www: tuple[int, Path]) -> None:
    wport, root = www
    port = free_port()
    state = tmp_path / "tn"
    proc = subprocess.Popen(
        [*ONIONMESH, "testnet", "--relays", "5", "--socks", f"127.0.0.1:{port}", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    while "onionmesh testnet ready" not in first:
        line = proc.stdout.readline()
        assert line, "testnet exited"
        first += line
    try:
        host = f"{SECRET}.localhost"  # answered by the exit itself (RFC 6761): no DNS query anywhere
        assert http_get_via_socks(port, host, wport, "/m1", 30) == (root / "m1").read_bytes()
        assert raw_socks5_reply(port, f"refused.{SECRET}.localhost", 9) in (0x05, 0x04)  # a failure path too
        info = json.loads((state / "testnet.json").read_text())
        assert info["relays"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    proxy_log = first + out
    relay_logs = {p.name: p.read_text() for p in state.glob("relay*.log")}
    assert relay_logs and "relay listening" in "".join(relay_logs.values())  # the logs were written
    assert SECRET not in proxy_log
    for name, text in relay_logs.items():
        assert SECRET not in text, name
        # Relays see the client's address (the guard) and the destination's (the exit): 127.0.0.1 here.
        assert "127.0.0.1" not in text, name

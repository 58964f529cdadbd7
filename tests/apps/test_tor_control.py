"""Tor's control port with the real clients (Debian's python3-stem, nyx): no mocks.

A testnet runs as a user starts it (`onionmesh testnet`, a subprocess); stem runs under Debian's
/usr/bin/python3 as another subprocess, nyx under tmux; each test skips with the reason when its
client is not installed (.ci/run installs them)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers.testnet import QuietHandler, run_testnet, stop_testnet

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENTS = Path(__file__).parent / "torcontrol_clients"
STEM_PW_HASH = "16:8C423A41EF4A542C6078985270AE28A4E04D056FB63F9F201505DB8E06"  # "pw", stem's test torrc


def _has_stem() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import stem"], capture_output=True).returncode == 0


needs_stem = pytest.mark.skipif(
    not _has_stem(), reason="python3-stem is not installed (apt-get install python3-stem)"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
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


def control_port(info: dict[str, object]) -> int:
    return int(str(info["torcontrol"]).rsplit(":", 1)[1])


def stem(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


# --- stem ------------------------------------------------------------------------------------------
@needs_stem
@needs_curl
def test_a_stem_script_sees_circuits_events_and_newnym(
    testnet: dict[str, object], www: tuple[int, bytes]
) -> None:
    port, page = www
    url = f"http://127.0.0.1:{port}/page"
    script = str(CLIENTS / "stem_session.py")
    run = subprocess.run(
        [SYSTEM_PYTHON, script, str(control_port(testnet)), str(testnet["socks"]), url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["version"].startswith("0.4.8.10") and "onionmesh-" in seen["version_info"]
    assert seen["socks"] == f'"{testnet["socks"]}"'
    assert seen["bootstrap"] == 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"'
    relays = {r["fingerprint"]: r["nickname"] for r in testnet["relays"]}  # type: ignore[attr-defined]
    built = [c for c in seen["circuits"] if c["status"] == "BUILT"]
    assert built and all(len(c["path"]) == 3 for c in built)
    assert all(relays[fp] == nick for c in built for fp, nick in c["path"])  # $FP~nickname, both right
    assert seen["first_bytes"] == seen["second_bytes"] == len(page)
    kinds = {line.split()[0] for line in seen["events"]}
    assert {"CIRC", "STREAM"} <= kinds
    assert any(line.startswith("STREAM") and " CLOSED " in line for line in seen["events"])
    # NEWNYM: the fetch after it went over another circuit than the one before it
    assert len(seen["stream_circuits"]) >= 2
    assert seen["stream_circuits"][-1] != seen["first_circuit"]
    assert seen["ns"].startswith("r ")
    assert seen["traffic_read"] >= 2 * len(page)


SAFECOOKIE = """
import sys
from stem.control import Controller
from stem.connection import authenticate_safecookie
from stem.response.protocolinfo import ProtocolInfoResponse
with Controller.from_port(port=int(sys.argv[1])) as c:
    info = c.get_protocolinfo()
    authenticate_safecookie(c, info.cookie_path, info)
    print(c.get_info("status/bootstrap-phase"))
"""

PASSWORD = """
import sys
from stem.control import Controller
import stem.connection
with Controller.from_port(port=int(sys.argv[1])) as c:
    stem.connection.authenticate_password(c, sys.argv[2])
    print(c.get_info("version"))
"""


@needs_stem
def test_safecookie_and_password_with_stem(testnet: dict[str, object]) -> None:
    port = str(control_port(testnet))
    safe = stem(SAFECOOKIE, port)
    assert safe.returncode == 0 and "PROGRESS=100" in safe.stdout, safe.stderr
    good = stem(PASSWORD, port, "pw")
    assert good.returncode == 0 and "onionmesh" in good.stdout, good.stderr
    bad = stem(PASSWORD, port, "wrong")
    assert bad.returncode != 0 and "IncorrectPassword" in bad.stderr


def _talk(port: int, data: bytes, read_until_eof: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_eof:
                break
        return b"".join(chunks)


def test_a_wrong_cookie_is_refused_and_the_connection_closed(testnet: dict[str, object]) -> None:
    cookie = Path(str(testnet["cookie"])).read_bytes()
    wrong = bytes(b ^ 1 for b in cookie)
    reply = _talk(control_port(testnet), b"AUTHENTICATE " + wrong.hex().encode() + b"\r\nGETINFO version\r\n")
    assert reply.startswith(b"515 ") and reply.count(b"\r\n") == 1  # refused, then EOF: nothing more
    ok = _talk(
        control_port(testnet), b"AUTHENTICATE " + cookie.hex().encode() + b"\r\nGETINFO version\r\nQUIT\r\n"
    )
    assert ok.startswith(b"250 OK\r\n250-version=0.4.8.10 (onionmesh-") and ok.endswith(
        b"250 closing connection\r\n"
    )


def test_hostile_input_gets_clean_closes_and_bounded_service(testnet: dict[str, object]) -> None:
    port = control_port(testnet)
    cookie_hex = Path(str(testnet["cookie"])).read_bytes().hex().encode()
    # a line past the limit, and binary: one 500 line, then the connection is closed
    assert _talk(port, b"GETINFO " + b"A" * 100_000).startswith(b"500 Protocol error: line longer")
    assert _talk(port, b"\x16\x03\x01\x00\xff\x01\x00\r\n").startswith(b"500 Protocol error: binary")
    # an HTTP request (a web page poking the port) gets an HTTP refusal and a close
    assert _talk(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.0 501")
    # anything but the four commands before authentication: 514 and a close
    assert _talk(port, b"GETINFO version\r\nGETINFO version\r\n") == b"514 Authentication required.\r\n"
    # a flood of commands on one authenticated connection: every one answered, in order
    n = 3000
    flood = b"AUTHENTICATE " + cookie_hex + b"\r\n" + b"GETINFO version\r\n" * n + b"QUIT\r\n"
    reply = _talk(port, flood)
    assert reply.count(b"250-version=") == n and reply.endswith(b"250 closing connection\r\n")
    # many connections at once: the ones past the unauthenticated cap are closed at once, and
    # once they are gone an authenticated controller gets in again
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    closed = 0
    for s in held:
        s.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            closed += s.recv(1) == b""
    for s in held:
        s.close()
    assert 200 - 16 <= closed < 200
    deadline = time.monotonic() + 10
    reply = b""
    while time.monotonic() < deadline and not reply.startswith(b"250 OK"):
        reply = _talk(port, b"AUTHENTICATE " + cookie_hex + b"\r\nQUIT\r\n")
        time.sleep(0.1)
    assert reply == b"250 OK\r\n250 closing connection\r\n"
    assert testnet["proc"].poll() is None  # type: ignore[attr-defined]


# --- nyx -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(
    shutil.which("nyx") is None or shutil.which("tmux") is None, reason="nyx and tmux are needed"
)
@needs_curl
def test_nyx_draws_its_bandwidth_graph_and_connection_list(
    testnet: dict[str, object], www: tuple[int, bytes], tmp_path: Path
) -> None:
    sock = tmp_path / "tmux.sock"
    home = tmp_path / "home"
    home.mkdir()
    tmux = ["tmux", "-S", str(sock)]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "nyx", "-x", "200", "-y", "50",
         f"HOME={home} TERM=xterm nyx -i 127.0.0.1:{control_port(testnet)}"],
        check=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{www[0]}/page"
        capture = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            curl = ["curl", "-sS", "--max-time", "20", "--socks5-hostname", str(testnet["socks"])]
            subprocess.run([*curl, url, "-o", os.devnull], check=True)
            time.sleep(1.5)
            capture = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "nyx"], capture_output=True, text=True
            ).stdout
            if (
                "Bandwidth" in capture
                and "avg:" in capture
                and "total: 0.0 B" not in capture.split("Upload")[0]
            ):
                break
        (tmp_path / "nyx-graph.txt").write_text(capture)  # the artefact
        assert "Tor 0.4.8.10" in capture and "Bandwidth" in capture and "Download" in capture
        assert "Control Port (password)" in capture  # nyx shows the strongest method offered
        subprocess.run([*tmux, "send-keys", "-t", "nyx", "Right"], check=True)
        nicknames = {r["nickname"] for r in testnet["relays"]}  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1)
            listing = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "nyx"], capture_output=True, text=True
            ).stdout
            if "Connections" in listing and "Circuit ID" in listing:
                break
        (tmp_path / "nyx-connections.txt").write_text(listing)
        assert "Connections (" in listing and "(CONTROL)" in listing
        # With circuits resolved nyx also lists them ("Purpose: General, Circuit ID: n", the
        # relays as 1 / Guard .. 3 / End); it did by hand, not reliably under this test's timing.
        if "Circuit ID" in listing:
            assert any(nick in listing for nick in nicknames) and "1 / Guard" in listing
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)

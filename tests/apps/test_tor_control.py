"""Tor's control port with the real clients (Debian's python3-stem, nyx): no mocks.

A testnet runs as a user starts it (`onionmesh testnet`, a subprocess); stem runs under Debian's
/usr/bin/python3 as another subprocess, nyx under tmux; each test skips with the reason when its
client is not installed (.ci/run installs them)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
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

from tests.helpers.testnet import QuietHandler, free_port, run_testnet, stop_testnet

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


def _relay_in(line: str) -> tuple[str, str]:
    """(fingerprint, nickname) as a line of nyx's connection page shows a relay."""
    words = line.split()
    at = next((i for i, w in enumerate(words) if re.fullmatch(r"[0-9A-F]{40}", w)), None)
    return (words[at], words[at + 1]) if at is not None and at + 1 < len(words) else ("", "")


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
         f"HOME={home} TERM=xterm COLUMNS=200 LINES=50 nyx -i 127.0.0.1:{control_port(testnet)}"],
        check=True,
    )  # fmt: skip
    # nyx drops the purpose, fingerprint and nickname columns in a window narrower than ~150
    # columns, and curses may read the detached session's first size (80x24): COLUMNS/LINES (above)
    # pin it, as the window's own size
    subprocess.run([*tmux, "resize-window", "-t", "nyx", "-x", "200", "-y", "50"], check=True)
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
        relays = {r["fingerprint"]: r["nickname"] for r in testnet["relays"]}  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        listing = ""
        while time.monotonic() < deadline:
            time.sleep(1)
            listing = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "nyx"], capture_output=True, text=True
            ).stdout
            if "(CIRCUIT)" in listing and "3 / End" in listing and any(n in listing for n in relays.values()):
                break
        (tmp_path / "nyx-connections.txt").write_text(listing)  # the artefact
        assert "Connections (" in listing and "(CONTROL)" in listing
        # the circuits, each with its relays as fingerprint and nickname, guard to exit ...
        assert "(CIRCUIT)" in listing and "Purpose: General, Circuit ID: " in listing, listing
        hops = [
            _relay_in(line) for line in listing.splitlines() if line.rstrip().endswith(("/ Guard", "/ End"))
        ]
        assert hops and all(relays.get(fp) == nick for fp, nick in hops), listing
        # ... and the proxy's own connections to its guards, found through ns/all (relay ORPorts)
        ours = [
            _relay_in(line)
            for line in listing.splitlines()
            if line.rstrip().endswith("(OUTBOUND)") and line.lstrip().startswith("127.0.0.1:")
        ]
        assert ours and all(relays.get(fp) == nick for fp, nick in ours), listing
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


# --- SAVECONF, CONF_CHANGED ------------------------------------------------------------------------
SAVE = """
import json, sys, time
import stem
from stem.control import Controller
port, path, value = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {"events": [], "texts": []}
with Controller.from_port(port=port) as c:
    c.authenticate()
    c.add_event_listener(lambda e: out["events"].append(str(e).splitlines()), "CONF_CHANGED")
    out["config_file"] = c.get_info("config-file")
    c.set_conf("ExcludeExitNodes", value)
    c.save_conf()
    out["texts"].append(open(path).read())
    with open(path, "a") as f:  # someone edits the file while the node runs
        f.write("# edited by hand\\n")
    c.reset_conf("ExcludeExitNodes")
    try:
        c.save_conf()
    except stem.OperationFailed as exc:
        out["refused"] = [exc.code, exc.message]
    out["texts"].append(open(path).read())
    c.save_conf(force=True)
    out["texts"].append(open(path).read())
    time.sleep(0.5)
print(json.dumps(out))
"""


@needs_stem
def test_saveconf_writes_the_changed_options_back_to_the_config_file(testnet: dict[str, object]) -> None:
    config = Path(str(testnet["config"]))
    before = config.read_text()
    run = stem(SAVE, str(control_port(testnet)), str(config), "{zz}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["config_file"] == str(config.resolve())
    saved, refused_text, forced = seen["texts"]
    # only the changed key's line changed: its comment, the other lines and comments are as written
    assert saved == before.replace('exclude_exit_nodes = ""   #', 'exclude_exit_nodes = "{zz}"   #')
    # the file changed on disk since it was read: plain SAVECONF refuses (551), FORCE writes
    assert seen["refused"][0] == "551" and "changed on disk" in seen["refused"][1]
    assert refused_text == saved + "# edited by hand\n"
    assert forced == before + "# edited by hand\n"
    assert oct(config.stat().st_mode & 0o777) == "0o640"  # the mode is kept
    from onionmesh.app.config import check_file

    assert check_file(config, "testnet") == []
    # CONF_CHANGED: the new value, then the bare name when it went back to its default
    assert seen["events"][:2] == [
        ["CONF_CHANGED", "ExcludeExitNodes={zz}", "OK"],
        ["CONF_CHANGED", "ExcludeExitNodes", "OK"],
    ]


# --- STREAM events -----------------------------------------------------------------------------------
STREAMS = """
import json, subprocess, sys, time
from stem.control import Controller
port, socks, urls = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
events = []
with Controller.from_port(port=port) as c:
    c.authenticate()
    c.add_event_listener(lambda e: events.append(e), "STREAM")
    codes = []
    for url in urls:
        curl = ["curl", "-sS", "--max-time", "40", "--socks5-hostname", socks]
        run = subprocess.run([*curl, url, "-o", "/dev/null"])
        codes.append(run.returncode)
    deadline = time.time() + 10
    while time.time() < deadline and sum(e.status == "CLOSED" for e in events) < len(urls):
        time.sleep(0.1)
print(json.dumps({"codes": codes, "events": [
    {"id": e.id, "status": e.status, "circ": e.circ_id, "target": e.target, "reason": e.reason,
     "remote_reason": e.remote_reason, "source": e.source, "source_addr": e.source_addr,
     "purpose": e.purpose} for e in events]}))
"""


@needs_stem
@needs_curl
def test_stream_events_follow_a_request_from_new_to_closed(
    testnet: dict[str, object], www: tuple[int, bytes]
) -> None:
    closed_port = free_port()  # nothing listens there: the exit's connection is refused
    good, bad = f"127.0.0.1:{www[0]}", f"127.0.0.1:{closed_port}"
    # TEST-NET-1 (RFC 5737): the testnet's exits accept loopback only, so each refuses it by its
    # policy without connecting, and the SOCKS port tries the next exit: DETACHED
    refused = "192.0.2.1:80"
    run = stem(STREAMS, str(control_port(testnet)), str(testnet["socks"]),
               f"http://{good}/page", f"http://{bad}/", f"http://{refused}/", timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["codes"][0] == 0 and seen["codes"][1] != 0 and seen["codes"][2] != 0
    by_id: dict[str, list[dict[str, object]]] = {}
    for event in seen["events"]:
        by_id.setdefault(str(event["id"]), []).append(event)
    ok = next(v for v in by_id.values() if v[0]["target"] == good)
    assert [e["status"] for e in ok] == ["NEW", "SENTCONNECT", "REMAP", "SUCCEEDED", "CLOSED"]
    new, sent, remap, succeeded, closed = ok
    assert new["circ"] is None and str(new["source_addr"]).startswith("127.0.0.1:")  # circuit 0
    assert sent["circ"] == succeeded["circ"] == closed["circ"] and sent["circ"] is not None
    assert remap["source"] == "EXIT" and remap["target"] == good
    assert closed["reason"] == "DONE" and all(e["purpose"] == "USER" for e in ok)
    failed = next(v for v in by_id.values() if v[0]["target"] == bad)
    assert [e["status"] for e in failed][:2] == ["NEW", "SENTCONNECT"]
    assert [e["status"] for e in failed][-2:] == ["FAILED", "CLOSED"]
    assert all(e["reason"] == "END" and e["remote_reason"] == "CONNECTREFUSED" for e in failed[-2:])
    tried = next(v for v in by_id.values() if v[0]["target"] == refused)
    statuses = [e["status"] for e in tried]
    assert statuses[0] == "NEW" and statuses[-2:] == ["FAILED", "CLOSED"]
    middle = statuses[1:-2]  # SENTCONNECT then DETACHED, once per exit tried
    assert len(middle) >= 4 and middle == ["SENTCONNECT", "DETACHED"] * (len(middle) // 2)
    detached = [e for e in tried if e["status"] == "DETACHED"]
    assert all(e["reason"] == "END" and e["remote_reason"] == "EXITPOLICY" for e in detached)
    assert len({e["circ"] for e in detached}) == len(detached)  # each attempt on another circuit


# --- txtorcon ------------------------------------------------------------------------------------------
def _has_txtorcon() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import txtorcon"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _has_txtorcon(), reason="python3-txtorcon is not installed (apt-get install python3-txtorcon)"
)
def test_txtorcon_builds_state_a_circuit_and_an_onion_service(
    testnet: dict[str, object], www: tuple[int, bytes]
) -> None:
    run = subprocess.run(
        [SYSTEM_PYTHON, str(CLIENTS / "txtorcon_session.py"), str(control_port(testnet)), str(www[0])],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    relays = {"$" + r["fingerprint"] for r in testnet["relays"]}  # type: ignore[attr-defined]
    assert seen["version"].startswith("0.4.8.10 (onionmesh-")
    assert set(seen["routers"]) == relays  # TorState's routers are ns/all's, from the relays' descriptors
    assert seen["guards"] and set(seen["guards"]) <= relays
    assert seen["pid"] == testnet["proc"].pid  # type: ignore[attr-defined]
    assert all(len(path) == 3 and set(path) <= relays for path in seen["circuits"].values())
    assert len(seen["built"]["path"]) == 3 and set(seen["built"]["path"]) <= relays
    hostname = seen["hostname"]
    assert hostname.endswith(".onion") and len(hostname) == 62
    assert seen["private_key"] == "ED25519-V3:"
    assert hostname.removesuffix(".onion") in seen["onions"].split()
    assert any("upload" in str(step).lower() for step in seen["progress"])  # it waited for HS_DESC


# --- onion services: HS_DESC for every service, NEWNYM forgets descriptors, permanent client keys ------
HS = """
import json, subprocess, sys, time, urllib.request
from stem.control import Controller
port, socks, api, cookie_path, web_port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
events = []
out = {}

def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.1)
    return predicate()

def hs(action, sid):
    return [e for e in list(events) if e.action == action and e.address == sid]

with Controller.from_port(port=port) as c:
    c.authenticate()
    c.add_event_listener(lambda e: events.append(e), "HS_DESC")
    # a service added through the JSON API after this controller subscribed
    cookie = open(cookie_path, "rb").read().hex()
    request = urllib.request.Request(
        f"http://{api}/onion-services", method="POST",
        data=json.dumps({"ports": [f"80 127.0.0.1:{web_port}"], "discard_pk": True}).encode(),
        headers={"Authorization": f"Cookie {cookie}", "Content-Type": "application/json"},
    )
    sid = json.load(urllib.request.urlopen(request, timeout=30))["service_id"]
    out["sid"] = sid
    out["published"] = bool(wait_for(lambda: hs("UPLOAD", sid) and hs("UPLOADED", sid)))
    out["uploaded_dirs_seen"] = all(
        u.directory in {x.directory for x in hs("UPLOAD", sid)} for u in hs("UPLOADED", sid)
    )
    requested = []
    for step in ("first", "second", "newnym", "third"):
        if step == "newnym":
            c.signal("NEWNYM")
            continue
        url = f"http://{sid}.onion/page"
        for _ in range(4):  # the descriptor may still be on its way to the DHT
            curl = ["curl", "-sS", "--max-time", "60", "--socks5-hostname", socks]
            run = subprocess.run([*curl, url, "-o", "/dev/null"])
            if run.returncode == 0:
                break
            time.sleep(2)
        out[step] = run.returncode
        time.sleep(0.5)
        requested.append(len(hs("REQUESTED", sid)))
    out["requested"] = requested
    out["received"] = len(hs("RECEIVED", sid))
print(json.dumps(out))
"""


@needs_stem
@needs_curl
def test_hs_desc_for_json_api_services_and_newnym_forgets_descriptors(
    testnet: dict[str, object], www: tuple[int, bytes]
) -> None:
    run = stem(HS, str(control_port(testnet)), str(testnet["socks"]), str(testnet["control"]),
               str(testnet["cookie"]), str(www[0]), timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    assert seen["published"] and seen["uploaded_dirs_seen"]  # UPLOAD then UPLOADED, as for ADD_ONION
    assert seen["first"] == seen["second"] == seen["third"] == 0
    # fetched once, reused from the cache for the second fetch, fetched again after NEWNYM
    first, second, third = seen["requested"]
    assert first >= 1 and second == first and third > second
    assert seen["received"] >= 2


AUTH = """
import json, sys
import stem
from stem.control import Controller
port, command = int(sys.argv[1]), sys.argv[2]
with Controller.from_port(port=port) as c:
    c.authenticate()
    out = {}
    if command == "add":
        out["add"] = str(c.msg(sys.argv[3]))
        out["temp"] = str(c.msg(sys.argv[4]))
        try:
            c.save_conf()
        except stem.OperationFailed as exc:
            out["saveconf"] = [exc.code, exc.message]
    out["view"] = str(c.msg("ONION_CLIENT_AUTH_VIEW")).splitlines()
    if command == "remove":
        out["remove"] = str(c.msg(sys.argv[3]))
        out["view_after"] = str(c.msg("ONION_CLIENT_AUTH_VIEW")).splitlines()
print(json.dumps(out))
"""
SERVICE_IDS = (  # two valid v3 addresses (keys from seeds a*32 and b*32)
    "v4dkhyzjc4koj42wygojwfondfi6y3tgmkvhppqhkr7sre4dgqoqsbid",
    "fxyecjpqafnpwr6oqu5o7b3sbfh7ssmmctfrxhqss46csj62b6tiwcid",
)


@needs_stem
def test_permanent_client_keys_survive_a_restart_and_saveconf_without_a_file_is_551(tmp_path: Path) -> None:
    state = tmp_path / "tn"
    key = base64.b64encode(bytes(range(32))).decode()
    permanent, temporary = SERVICE_IDS
    proc, info, _ = run_testnet(state, relays=3)
    try:
        add = f"ONION_CLIENT_AUTH_ADD {permanent} x25519:{key} ClientName=alice Flags=Permanent"
        temp = f"ONION_CLIENT_AUTH_ADD {temporary} x25519:{key}"
        run = stem(AUTH, str(control_port(info)), "add", add, temp)
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout)
    finally:
        stop_testnet(proc)
    assert seen["add"] == seen["temp"] == "OK"
    assert seen["saveconf"][0] == "551" and "Unable to write configuration" in seen["saveconf"][1]
    assert f"CLIENT {permanent} x25519:{key} ClientName=alice Flags=Permanent" in seen["view"]
    assert f"CLIENT {temporary} x25519:{key}" in seen["view"]
    files = list(state.rglob(f"onion_auth/{permanent}.auth_private"))
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"
    assert oct(files[0].parent.stat().st_mode & 0o777) == "0o700"
    assert files[0].read_text().startswith(f"{permanent}:descriptor:x25519:")  # Tor's .auth_private
    proc, info, _ = run_testnet(state, relays=3)  # the same state: the key is loaded at start
    try:
        run = stem(AUTH, str(control_port(info)), "remove", f"ONION_CLIENT_AUTH_REMOVE {permanent}")
        assert run.returncode == 0, run.stderr
        seen = json.loads(run.stdout)
    finally:
        stop_testnet(proc)
    assert f"CLIENT {permanent} x25519:{key} Flags=Permanent" in seen["view"]
    assert not any(temporary in line for line in seen["view"])  # not permanent: gone with the process
    assert seen["remove"] == "OK" and not any(permanent in line for line in seen["view_after"])
    assert not files[0].exists()

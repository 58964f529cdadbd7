"""A stem user's session (circuits, events, NEWNYM) and STREAM events from NEW to CLOSED."""

from __future__ import annotations

import json
import subprocess

from tests.helpers.testnet import free_port
from tests.helpers.torcontrol import CLIENTS, SYSTEM_PYTHON, control_port, needs_curl, needs_stem, stem


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

"""Run by Debian's /usr/bin/python3 with python3-stem (tests/apps/tor_control/test_events.py): a stem
user's session against onionmesh's Tor control port.  Prints one JSON object of what it saw.

usage: stem_session.py CONTROL_PORT SOCKS_HOST:PORT URL
"""

import json
import subprocess
import sys
import threading
import time

from stem.control import Controller, EventType

port, socks, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
events = []
lock = threading.Lock()


def on_event(event):
    with lock:
        events.append((event.type, str(event)))


def fetch():
    body = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--socks5-hostname", socks, url],
        capture_output=True,
        check=True,
    ).stdout
    return len(body)


def stream_circuits():
    """Circuit ids of STREAM SUCCEEDED events seen so far for the URL's port."""
    target_port = url.rsplit(":", 1)[1].split("/")[0]
    with lock:
        return [
            line.split()[3]
            for kind, line in events
            if kind == "STREAM"
            and line.split()[2] == "SUCCEEDED"
            and line.split()[4].endswith(":" + target_port)
        ]


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


with Controller.from_port(address="127.0.0.1", port=port) as controller:
    controller.authenticate()  # no cookie path: stem reads it from PROTOCOLINFO's COOKIEFILE
    out["version"] = str(controller.get_version())
    out["version_info"] = controller.get_info("version")
    out["socks"] = controller.get_info("net/listeners/socks")
    out["bootstrap"] = controller.get_info("status/bootstrap-phase")
    out["circuits"] = [
        {"id": c.id, "status": c.status, "path": [list(hop) for hop in c.path], "purpose": c.purpose}
        for c in controller.get_circuits()
    ]
    controller.add_event_listener(on_event, EventType.CIRC, EventType.STREAM)
    out["first_bytes"] = fetch()
    wait_for(lambda: stream_circuits())
    first = stream_circuits()
    controller.signal("NEWNYM")
    out["second_bytes"] = fetch()
    wait_for(lambda: len(stream_circuits()) > len(first))
    out["stream_circuits"] = stream_circuits()
    out["first_circuit"] = first[0] if first else None
    with lock:
        out["events"] = [line for _kind, line in events]
    out["ns"] = (
        str(controller.get_network_status(out["circuits"][0]["path"][0][0])) if out["circuits"] else ""
    )
    out["traffic_read"] = int(controller.get_info("traffic/read"))
print(json.dumps(out))

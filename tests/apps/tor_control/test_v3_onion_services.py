"""v3 onion services on the control port: HS_DESC for every service, NEWNYM forgets
descriptors, permanent client keys (ONION_CLIENT_AUTH_*) survive a restart."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.helpers.testnet import run_testnet, stop_testnet
from tests.helpers.torcontrol import control_port, needs_curl, needs_stem, stem

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

"""txtorcon builds its TorState, a circuit and an onion service."""

from __future__ import annotations

import json
import subprocess

from tests.helpers.torcontrol import CLIENTS, SYSTEM_PYTHON, control_port, needs_txtorcon


@needs_txtorcon
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

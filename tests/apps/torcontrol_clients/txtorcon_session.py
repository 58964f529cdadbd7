"""Run by Debian's /usr/bin/python3 with python3-txtorcon (tests/apps/tor_control/test_txtorcon.py): a
txtorcon user connects to onionmesh's Tor control port (PROTOCOLINFO, cookie authentication by
itself), builds TorState (ns/all, circuit-status, stream-status, address-mappings/all,
entry-guards, process/pid), builds a circuit with EXTENDCIRCUIT and waits for it, and adds an
ephemeral v3 onion service with create_onion_service (ADD_ONION, then HS_DESC UPLOAD/UPLOADED).
Prints one JSON object of what it saw.

usage: txtorcon_session.py CONTROL_PORT WEB_PORT
"""

import json
import sys

import txtorcon
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import react


async def main(reactor, port, web_port):
    out = {"progress": []}
    tor = await txtorcon.connect(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    out["version"] = tor.version
    state = await tor.create_state()
    out["routers"] = sorted({r.id_hex for r in state.routers.values()})
    out["guards"] = sorted(state.entry_guards)
    out["circuits"] = {str(c.id): [r.id_hex for r in c.path] for c in state.circuits.values()}
    out["pid"] = state.tor_pid
    circ = await state.build_circuit()
    await circ.when_built()
    out["built"] = {"id": circ.id, "path": [r.id_hex for r in circ.path]}
    onion = await tor.create_onion_service(
        [(80, web_port)], version=3, progress=lambda *args: out["progress"].append(list(args))
    )
    out["hostname"] = onion.hostname
    out["private_key"] = onion.private_key[:11]
    out["onions"] = (await tor.protocol.get_info("onions/current"))["onions/current"]
    print(json.dumps(out))


react(lambda r: ensureDeferred(main(r, int(sys.argv[1]), int(sys.argv[2]))))

"""Run by Debian's /usr/bin/python3 with python3-stem (tests/apps/test_onion_tools.py): a stem
user publishes an ephemeral onion service for a local web server, waits for its publication,
fetches a page from it through the proxy with curl, lists circuits, and removes it.  Prints one
JSON object of what it saw.

usage: stem_onion.py CONTROL_PORT SOCKS_HOST:PORT WEB_PORT PATH OUT_FILE
"""

import json
import subprocess
import sys

from stem.control import Controller, EventType

port, socks, web_port, path, out_file = (
    int(sys.argv[1]),
    sys.argv[2],
    int(sys.argv[3]),
    sys.argv[4],
    sys.argv[5],
)
out = {"events": []}

with Controller.from_port(port=port) as c:
    c.authenticate()
    c.add_event_listener(lambda e: out["events"].append(str(e)), EventType.HS_DESC)
    response = c.create_ephemeral_hidden_service(
        {80: web_port}, key_type="NEW", key_content="ED25519-V3", await_publication=True, timeout=120
    )
    out["service_id"] = response.service_id
    out["private_key_type"] = response.private_key_type
    out["private_key"] = response.private_key
    url = f"http://{response.service_id}.onion{path}"
    body = subprocess.run(
        ["curl", "-sS", "--max-time", "90", "--socks5-hostname", socks, url, "-o", out_file],
        capture_output=True,
    )
    out["curl_rc"] = body.returncode
    out["curl_err"] = body.stderr.decode("utf-8", "replace")[-500:]
    out["circuits"] = [
        {"purpose": circ.purpose, "hs_state": circ.hs_state, "rend_query": circ.rend_query}
        for circ in c.get_circuits()
    ]
    detached = c.create_ephemeral_hidden_service({81: web_port}, detached=True, await_publication=False)
    out["listed_ours"] = c.list_ephemeral_hidden_services()
    out["listed_detached"] = c.list_ephemeral_hidden_services(our_services=False, detached=True)
    out["detached"] = detached.service_id
    out["removed_detached"] = c.remove_ephemeral_hidden_service(detached.service_id)
    out["removed"] = c.remove_ephemeral_hidden_service(response.service_id)
    out["removed_again"] = c.remove_ephemeral_hidden_service(response.service_id)

print(json.dumps(out))

"""The JSON control API's onion services (docs/control-api.md): ephemeral services a program
starts and stops at run time, as Tor's ADD_ONION does on the Tor control port.

    POST   /onion-services          {"ports": ["80 127.0.0.1:8080"], "key"?, "client_auth"?, "discard_pk"?}
    GET    /onion-services          every service this proxy runs (configured ones too)
    GET    /onion-services/{id}     one
    DELETE /onion-services/{id}     stop it

An ephemeral service lives until it is deleted or the proxy stops; its key is answered once
(`private_key`, Tor's `ED25519-V3:` blob) unless `discard_pk`, and never again.  Wiring:
`server.extra_routes += onion_api.routes(server)` before `server.start()`.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.directory.hs_files import PortMapping, parse_port_mapping
from onionmesh.errors import ConfigError, NotFound, OnionConfigError
from onionmesh.runtime.client.onion_service import OnionService, OnionServiceSpec, PortMap

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PATH = "/onion-services"
MAX_PORTS = 64
MAX_CLIENTS = 24  # auth-client entries a descriptor holds (docs/protocol.md §16.4)
KEY_PREFIX = "ED25519-V3:"
FIELDS = {"ports", "key", "client_auth", "discard_pk"}


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def service_json(service: OnionService) -> dict[str, Any]:
    return {
        "service_id": service.service_id,
        "address": service.address,
        "state": service.state,
        "ports": [
            {"virt_port": p.virt_port, "target": f"{p.target_host}:{p.target_port}"}
            for p in service.spec.ports
        ],
        "client_auth": len(service.spec.client_auth),
    }


def _x25519(text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 52:
        raise OnionConfigError("a client_auth key is 52 base32 characters (an x25519 public key)")
    try:
        return base64.b32decode(text.upper() + "====")
    except binascii.Error:
        raise OnionConfigError("a client_auth key is 52 base32 characters (an x25519 public key)") from None


def parse_request(body: object) -> tuple[OnionServiceSpec, bool, bool]:
    """(spec, the key is new, discard it) from a POST body; OnionConfigError says what is wrong."""
    if not isinstance(body, dict) or set(body) - FIELDS:
        raise OnionConfigError(
            'body must be an object with "ports" and optional "key", "client_auth", "discard_pk"'
        )
    ports, key, auth, discard = (
        body.get("ports"),
        body.get("key"),
        body.get("client_auth", []),
        body.get("discard_pk"),
    )
    if (
        not isinstance(ports, list)
        or not 1 <= len(ports) <= MAX_PORTS
        or not all(isinstance(p, str) for p in ports)
    ):
        raise OnionConfigError(f'"ports" is a list of 1..{MAX_PORTS} strings "VIRT HOST:PORT"')
    mappings: list[PortMapping] = [parse_port_mapping(p) for p in ports]
    if not isinstance(auth, list) or len(auth) > MAX_CLIENTS:
        raise OnionConfigError(f'"client_auth" is a list of at most {MAX_CLIENTS} keys')
    if discard is not None and not isinstance(discard, bool):
        raise OnionConfigError('"discard_pk" is true or false')
    if key is None:
        identity, new = ExpandedKey.from_seed(os.urandom(32)), True
    else:
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            raise OnionConfigError(f'"key" is Tor\'s "{KEY_PREFIX}<base64 of the 64-byte expanded key>"')
        try:
            raw = base64.b64decode(key.removeprefix(KEY_PREFIX), validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != 64:
            raise OnionConfigError('"key" does not decode to a 64-byte expanded Ed25519 key')
        identity, new = ExpandedKey.from_bytes(raw), False
    spec = OnionServiceSpec(
        key=identity,
        ports=tuple(PortMap(m.virt_port, m.target_host, m.target_port) for m in mappings),
        client_auth=tuple(_x25519(a) for a in auth),
    )
    return spec, new, bool(discard)


def routes(server: Any) -> list[tuple[str, str, Handler]]:
    """The onion-service routes of `server` (a ControlServer whose node is a ClientNode)."""

    def node() -> Any:
        return server.node

    async def create(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, LookupError, RecursionError):
            return _bad("body is not JSON")
        try:
            spec, new, discard = parse_request(body)
        except OnionConfigError as exc:
            return _bad(str(exc))
        try:
            service = await node().add_onion_service(spec)
        except ConfigError as exc:
            text = exc.one_line()
            return _bad(text, 409 if "already running" in text else 400)
        answer = service_json(service)
        if new and not discard:
            answer["private_key"] = KEY_PREFIX + base64.b64encode(spec.key.to_bytes()).decode("ascii")
        return web.json_response(answer, status=201)

    async def listing(_request: web.Request) -> web.Response:
        return web.json_response([service_json(s) for s in node().onion_services.values()])

    def find(request: web.Request) -> OnionService | None:
        sid = request.match_info["service_id"].removesuffix(".onion").lower()
        service: OnionService | None = node().onion_services.get(sid)
        return service

    async def show(request: web.Request) -> web.Response:
        service = find(request)
        return (
            _bad("no such onion service", 404)
            if service is None
            else web.json_response(service_json(service))
        )

    async def delete(request: web.Request) -> web.Response:
        service = find(request)
        if service is None:
            return _bad("no such onion service", 404)
        try:
            await node().remove_onion_service(service.service_id)
        except NotFound:
            return _bad("no such onion service", 404)
        return web.json_response({"ok": True})

    return [
        ("POST", PATH, create),
        ("GET", PATH, listing),
        ("GET", PATH + "/{service_id}", show),
        ("DELETE", PATH + "/{service_id}", delete),
    ]

"""The proxy as a Tor control port sees it (runtime/torcontrol/target.py's ControlTarget).

Circuits and streams in Tor's terms: a circuit built for SOCKS traffic is PURPOSE=GENERAL, one
built through a controller (EXTENDCIRCUIT, the JSON API) CONTROLLER, onion-service circuits
HS_CLIENT_INTRO, HS_CLIENT_REND, HS_SERVICE_INTRO, HS_SERVICE_REND, HS_CLIENT_HSDIR,
HS_SERVICE_HSDIR or HS_VANGUARDS with HS_STATE= and REND_QUERY= (the service id); a stream's id
is its circuit's number * 65536 + its stream id on that circuit.

Onion services: ADD_ONION starts a service through `ClientNode.add_onion_service`, DEL_ONION stops
it, ONION_CLIENT_AUTH_* edit `ClientNode.client_auth`.  HS_DESC events follow each upload: onionmesh
stores a descriptor at four DHT replica keys (docs/protocol.md §16.5), not at named HSDirs, so each
replica stands in for an HSDir: its 20-byte store key of the period, upper-case hex, is the
`$FINGERPRINT` of UPLOAD / UPLOADED / FAILED, and the descriptor id is the blinded key (base64),
as Tor writes it.  stem's `create_ephemeral_hidden_service(await_publication=True)` waits for an
UPLOADED whose directory it saw in an UPLOAD, which is what this gives.  Bootstrap phases: 5 `conn` while the
DHT has given no relay yet, 75 `enough_dirinfo` with relays but no built circuit, 90
`circuit_create` while one is being built, 100 `done` once one is open.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from onionmesh import __version__
from onionmesh.crypto.hs_blinding import ExpandedKey, blind_public
from onionmesh.directory.hs_placement import store_keys
from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.errors import ListenError, NotFound, Unsupported
from onionmesh.proto.torcontrol_onion import AddOnion, ClientAuthAdd
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.node_choice import CONF_OPTIONS, conf_values, prepare_conf
from onionmesh.runtime.torcontrol.server import TorControlServer, cookie_auth
from onionmesh.runtime.torcontrol.target import (
    PURPOSE_CONTROLLER,
    PURPOSE_GENERAL,
    CircuitInfo,
    Event,
    Hop,
    OnionService,
    RelayEntry,
    StreamInfo,
)

CONTROLLER_ISOLATION = ("control",)
NO_ONION_SERVICES = (
    "onion services are not available in this onionmesh yet (the onion-services work lands "
    "separately); the request was valid"
)
_CIRC = {"launched": "LAUNCHED", "extended": "EXTENDED", "built": "BUILT"}
# CircuitHandle.purpose -> Tor's PURPOSE= (control-spec §4.1.1)
HS_PURPOSES = {
    "hs_client_intro": "HS_CLIENT_INTRO",
    "hs_client_rend": "HS_CLIENT_REND",
    "hs_client_hsdir": "HS_CLIENT_HSDIR",
    "hs_service_intro": "HS_SERVICE_INTRO",
    "hs_service_rend": "HS_SERVICE_REND",
    "hs_service_hsdir": "HS_SERVICE_HSDIR",
    "hs_vanguard": "HS_VANGUARDS",
    "hs_vanguards": "HS_VANGUARDS",
}
PERMANENT_AUTH = (
    "Flags=Permanent is not supported: put a <name>.auth_private file in the directory given to "
    "--onion-client-auth-dir (onion_client_auth_dir) to keep a key across restarts"
)


class _Node(Protocol):
    """What the adapter reads from a ClientNode (kept structural: no import of node.py)."""

    circuits: CircuitMgr
    policy: Any
    config: Any
    socks: Any
    directory: Any
    onion_services: dict[str, Any]
    client_auth: dict[str, bytes]

    async def add_onion_service(self, spec: Any) -> Any: ...
    async def remove_onion_service(self, service_id: str) -> None: ...

    @property
    def relays(self) -> list[Any]: ...


def _reason(text: str | None) -> str:
    text = text or ""
    if text.startswith("build failed"):
        return "TIMEOUT" if "Timeout" in text else "CONNECTFAILED"
    if text.startswith("destroyed by relay"):
        return "DESTROYED"
    if text == "closed by user":
        return "REQUESTED"
    if "memory" in text or "queue" in text:
        return "RESOURCELIMIT"
    return "FINISHED"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class ClientControlTarget:
    role = "client"
    version = __version__

    def __init__(self, node: _Node) -> None:
        self.node = node
        self.data_dir = str(Path(node.config.data_dir).resolve())
        self.config_file: str | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._hooked = False
        self._watched: set[str] = set()  # services whose listeners feed HS_DESC
        self._auth_names: dict[str, str] = {}  # service id -> ClientName of ONION_CLIENT_AUTH_ADD
        self._tasks: set[asyncio.Task[None]] = set()

    # --- state ---------------------------------------------------------------------------------
    def socks_listeners(self) -> list[str]:
        host = self.node.config.socks_host
        return [f"{f'[{host}]' if ':' in host else host}:{self.node.socks.port}"]

    def bootstrap(self) -> tuple[int, str, str]:
        circuits = list(self.node.circuits.circuits.values())
        if any(h.built_at and h.closed_reason is None for h in circuits):
            return 100, "done", "Done"
        if circuits:
            return 90, "circuit_create", "Establishing a Tor circuit"
        if self.node.relays:
            return 75, "enough_dirinfo", "Loaded enough directory info to build circuits"
        return 5, "conn", "Connecting to a relay"

    def _circuit(self, handle: CircuitHandle, status: str, reason: str | None = None) -> CircuitInfo:
        iso = handle.isolation
        username = password = None
        if isinstance(iso, tuple) and len(iso) == 2 and iso != (None, None):
            username, password = _text(iso[0]) or "", _text(iso[1]) or ""
        built = len(handle.circ.hops) if status != "BUILT" else len(handle.path)
        purpose = PURPOSE_CONTROLLER if iso == CONTROLLER_ISOLATION else PURPOSE_GENERAL
        hs_purpose = HS_PURPOSES.get(getattr(handle, "purpose", "general"))
        return CircuitInfo(
            id=handle.number,
            status=status,
            path=tuple(Hop(d.fingerprint, d.nickname) for d in handle.path[:built]),
            purpose=hs_purpose or purpose,
            created=time.time() - (time.monotonic() - handle.created_at),
            reason=reason,
            socks_username=None if hs_purpose else username,
            socks_password=None if hs_purpose else password,
            hs_state=getattr(handle, "hs_state", None) if hs_purpose else None,
            rend_query=getattr(handle, "hs_service_id", None) if hs_purpose else None,
        )

    def circuits(self) -> list[CircuitInfo]:
        out = []
        for handle in self.node.circuits.circuits.values():
            if handle.closed_reason is not None:
                continue
            out.append(self._circuit(handle, "BUILT" if handle.built_at else "EXTENDED"))
        return out

    def _stream(self, handle: CircuitHandle, sid: int, status: str) -> StreamInfo:
        circuit = self._circuit(handle, "BUILT")
        return StreamInfo(
            id=handle.number * 65536 + sid,
            status=status,
            circuit=handle.number,
            target=handle.stream_targets.get(sid, "0.0.0.0:0"),
            socks_username=circuit.socks_username,
            socks_password=circuit.socks_password,
        )

    def streams(self) -> list[StreamInfo]:
        return [
            self._stream(h, sid, "SUCCEEDED" if sid in h.bridges else "SENTCONNECT")
            for h in self.node.circuits.circuits.values()
            for sid in list(h.circ.streams)
        ]

    def traffic(self) -> tuple[int, int]:
        return self.node.circuits.totals()

    def relays(self) -> list[RelayEntry]:
        relays = self.node.relays
        guards = set(self.node.policy.primary_guards(relays))
        out = []
        for d in relays:
            flags = ["Fast", "Running", "Stable", "Valid"]
            if d.is_exit:
                flags.append("Exit")
            if d.fingerprint in guards:
                flags.append("Guard")
            ports = [p for p in (80, 443) if exit_accepts_port(d, p)]
            host, port = d.link_addresses[0]
            out.append(
                RelayEntry(
                    nickname=d.nickname,
                    fingerprint=d.fingerprint,
                    address=host,
                    or_port=port,
                    published=float(d.published),
                    bandwidth=d.bandwidth,
                    flags=tuple(flags),
                    exit_summary=f"accept {','.join(map(str, ports))}" if ports else "reject 1-65535",
                )
            )
        return out

    def fingerprint(self) -> str | None:
        return None  # a client is no relay ("Not running in server mode")

    def exit_policy(self) -> list[str]:
        return ["reject *:*"]  # a client carries nobody's traffic out

    # --- options ---------------------------------------------------------------------------------
    def get_conf(self, name: str) -> list[str] | None:
        config = self.node.config
        values: dict[str, list[str]] = {
            "SocksPort": self.socks_listeners(),
            "DataDirectory": [self.data_dir],
            "DisableNetwork": ["0"],
            "Nickname": [],
            "ORPort": ["0"],
            "ExitRelay": ["0"],
            "ExitPolicy": [],
            "BridgeRelay": ["0"],
            "UseBridges": ["1" if config.bridges else "0"],
            "CircuitBuildTimeout": [str(int(self.node.policy.build_timeout()))],
            "NumEntryGuards": ["1"],
            **conf_values(self.node.policy),  # ExitNodes ... GeoIPv6File (runtime/client/node_choice.py)
        }
        if name == "__names__":
            return sorted(values)
        return values.get(name)

    def set_conf(self, values: dict[str, str | None]) -> None:
        apply_node_choice = prepare_conf(self.node.policy, self.node.circuits, values)  # ConfError: refused
        for name, value in values.items():
            if name in CONF_OPTIONS:
                continue
            if name == "DisableNetwork" and value in (None, "0"):
                continue
            current = self.get_conf(name)
            if value is not None and current is not None and [value] == current:
                continue
            raise ValueError(f"{name} cannot be changed at run time (restart the proxy with the new setting)")
        apply_node_choice()

    # --- actions ---------------------------------------------------------------------------------
    def newnym(self) -> None:
        self.node.circuits.retire_all()

    def close_circuit(self, circuit: int) -> bool:
        return self.node.circuits.close_circuit(circuit)

    async def extend_circuit(self, path: list[str] | None, purpose: str) -> int:
        if not path:
            handle = await self.node.circuits.build(isolation=CONTROLLER_ISOLATION)
            return handle.number
        fingerprints = [self._resolve(hop) for hop in path]
        handle = await self.node.circuits.build(
            hops=len(fingerprints),
            via=fingerprints[:-1],
            exit_fp=fingerprints[-1],
            isolation=CONTROLLER_ISOLATION,
        )
        return handle.number

    def _resolve(self, hop: str) -> str:
        wanted = hop.lstrip("$").split("~")[0].split("=")[0]
        for d in self.node.relays:
            if wanted.upper() == d.fingerprint or wanted == d.nickname:
                return str(d.fingerprint)
        raise NotFound(f"No such router {hop[:64]!r}")

    def attach_stream(self, stream: int, circuit: int) -> None:
        raise Unsupported("Connection is not managed by controller.")  # the SOCKS port attaches its streams

    def signal(self, name: str) -> None:
        """RELOAD, DORMANT, ACTIVE, CLEARDNSCACHE, DUMP, DEBUG: nothing to do here (no torrc, no DNS
        cache); SHUTDOWN and HALT are the server's (TorControlServer.on_shutdown)."""

    # --- onion services ----------------------------------------------------------------------------
    def _runtime(self) -> Any:
        try:
            from onionmesh.runtime.client import onion_service
        except ImportError:
            raise Unsupported(NO_ONION_SERVICES) from None
        if not hasattr(self.node, "add_onion_service"):
            raise Unsupported(NO_ONION_SERVICES)
        return onion_service

    async def add_onion(self, request: AddOnion) -> OnionService:
        """ConfigError (from the node) for a key already running here or ports it cannot serve."""
        runtime = self._runtime()
        if request.expanded_key is not None:
            key = ExpandedKey.from_bytes(request.expanded_key)
        else:
            key = ExpandedKey.from_seed(os.urandom(32))
        spec = runtime.OnionServiceSpec(
            key=key,
            ports=tuple(runtime.PortMap(p.virtual, p.host, p.port) for p in request.ports),
            client_auth=tuple(request.client_auth_v3),
            max_streams=request.max_streams,
        )
        service = await self.node.add_onion_service(spec)
        self._watch(service)
        return OnionService(service.service_id, key.to_bytes() if request.new_key else None)

    def del_onion(self, service_id: str) -> None:
        services = getattr(self.node, "onion_services", {})
        if service_id not in services:
            raise NotFound(service_id)
        self._watched.discard(service_id)
        task = asyncio.ensure_future(self.node.remove_onion_service(service_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def client_auth_add(self, request: ClientAuthAdd) -> None:
        self._runtime()
        if request.permanent:
            raise Unsupported(PERMANENT_AUTH)
        self.node.client_auth[request.service_id] = request.private_key
        if request.nickname:
            self._auth_names[request.service_id] = request.nickname
        else:
            self._auth_names.pop(request.service_id, None)

    def client_auth_remove(self, service_id: str) -> None:
        self._runtime()
        if self.node.client_auth.pop(service_id, None) is None:
            raise NotFound(service_id)
        self._auth_names.pop(service_id, None)

    def client_auth_view(self, service_id: str | None) -> list[str]:
        """`CLIENT <id> x25519:<base64 key> [ClientName=...]` lines (control-spec §3.32)."""
        keys = getattr(self.node, "client_auth", {})
        out = []
        for sid in sorted(keys):
            if service_id is not None and sid != service_id:
                continue
            line = f"{sid} x25519:{base64.b64encode(keys[sid]).decode('ascii')}"
            if sid in self._auth_names:
                line += f" ClientName={self._auth_names[sid]}"
            out.append(line)
        return out

    def _watch(self, service: Any) -> None:
        if service.service_id in self._watched:
            return
        self._watched.add(service.service_id)
        public = service.spec.key.public

        def on_event(what: str, info: dict[str, object]) -> None:
            if service.service_id not in self._watched:
                return
            period = info.get("period")
            if not isinstance(period, int):
                return
            blinded = blind_public(public, period)
            keys = store_keys(blinded, period)
            desc_id = base64.b64encode(blinded).decode("ascii").rstrip("=")
            sid = service.service_id
            if what == "desc_upload":
                for key in keys:
                    self._emit(Event("HS_DESC", text=f"UPLOAD {sid} UNKNOWN ${key.hex().upper()} {desc_id}"))
            elif what == "desc_uploaded":
                replica = str(info.get("hsdir", ""))
                index = (
                    int(replica.removeprefix("replica")) if replica.removeprefix("replica").isdigit() else -1
                )
                if 0 <= index < len(keys):
                    self._emit(Event("HS_DESC", text=f"UPLOADED {sid} UNKNOWN ${keys[index].hex().upper()}"))
            elif what == "desc_failed":
                for key in keys:
                    self._emit(
                        Event(
                            "HS_DESC",
                            text=f"FAILED {sid} UNKNOWN ${key.hex().upper()} REASON=UPLOAD_REJECTED",
                        )
                    )

        service.listeners.append(on_event)

    # --- events ----------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        if not self._hooked:
            self._hooked = True
            self.node.circuits.listeners.append(self._on_circuit)
            self.node.circuits.stream_listeners.append(self._on_stream)
            for service in list(getattr(self.node, "onion_services", {}).values()):
                self._watch(service)  # services from the configuration or the JSON API
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _emit(self, event: Event) -> None:
        for callback in list(self._subscribers):
            callback(event)

    def _on_circuit(self, what: str, handle: CircuitHandle) -> None:
        if what == "closed":
            if (handle.closed_reason or "").startswith("build failed"):
                self._emit(
                    Event("CIRC", circuit=self._circuit(handle, "FAILED", _reason(handle.closed_reason)))
                )
            self._emit(Event("CIRC", circuit=self._circuit(handle, "CLOSED", _reason(handle.closed_reason))))
        elif what in _CIRC:
            self._emit(Event("CIRC", circuit=self._circuit(handle, _CIRC[what])))

    def _on_stream(self, what: str, handle: CircuitHandle, sid: int) -> None:
        if what == "attached":
            self._emit(Event("STREAM", stream=self._stream(handle, sid, "SUCCEEDED")))
        elif what == "closed":
            self._emit(Event("STREAM", stream=self._stream(handle, sid, "CLOSED")))

    # --- GeoIP (exit by country: GETINFO ip-to-country/) -----------------------------------------
    def geoip_available(self, version: int) -> bool:
        return bool(self.node.policy.geoip.available(version))

    def ip_to_country(self, ip: str) -> str:
        return str(self.node.policy.geoip.country(ip))


async def start_tor_control(node: _Node, cookie: bytes) -> TorControlServer:
    """Open the proxy's Tor control port (ClientConfig.torcontrol) with the node's cookie."""
    host, port = node.config.torcontrol
    target = ClientControlTarget(node)
    auth = cookie_auth(cookie, Path(node.config.data_dir), tuple(node.config.torcontrol_passwords))
    server = TorControlServer(target, host, port, auth)
    try:
        await server.start()
    except OSError as exc:
        raise ListenError("Tor control", host, port, exc) from None
    return server

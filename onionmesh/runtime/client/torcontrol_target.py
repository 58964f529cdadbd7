"""The proxy as a Tor control port sees it (runtime/torcontrol/target.py's ControlTarget).

Circuits and streams in Tor's terms: a circuit built for SOCKS traffic is PURPOSE=GENERAL, one
built through a controller (EXTENDCIRCUIT, the JSON API) CONTROLLER, onion-service circuits
HS_CLIENT_INTRO, HS_CLIENT_REND, HS_SERVICE_INTRO, HS_SERVICE_REND, HS_CLIENT_HSDIR,
HS_SERVICE_HSDIR or HS_VANGUARDS with HS_STATE= and REND_QUERY= (the service id); a stream's id
is its circuit's number * 65536 + its stream id on that circuit.

Streams: each SOCKS request's life in Tor's terms (runtime/client/stream_status.py), its id
given when it arrives.  Onion services, client authorization and HS_DESC are the other half of
this adapter: runtime/client/torcontrol_onions.py.  Bootstrap phases: 5 `conn` while the
DHT has given no relay yet, 75 `enough_dirinfo` with relays but no built circuit, 90
`circuit_create` while one is being built, 100 `done` once one is open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from onionmesh import __version__
from onionmesh.directory.path_selection import exit_accepts_port
from onionmesh.errors import ListenError, NotFound, Unsupported
from onionmesh.proto.torcontrol_onion import AddOnion, ClientAuthAdd
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.node_choice import CONF_OPTIONS, conf_values, prepare_conf
from onionmesh.runtime.client.stream_status import StreamRecord
from onionmesh.runtime.client.torcontrol_onions import OnionControl
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
        self.onions = OnionControl(node, self._emit)

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

    def _stream(self, record: StreamRecord) -> StreamInfo:
        iso = record.isolation
        username = password = None
        if isinstance(iso, tuple) and len(iso) == 2 and iso != (None, None):
            username, password = _text(iso[0]) or "", _text(iso[1]) or ""
        return StreamInfo(
            id=record.id,
            status=record.status,
            circuit=record.circuit_number,
            target=record.target,
            socks_username=username,
            socks_password=password,
            reason=record.extra.get("REASON"),
            remote_reason=record.extra.get("REMOTE_REASON"),
            source=record.extra.get("SOURCE"),
            source_addr=record.source if record.status in ("NEW", "NEWRESOLVE") else None,
        )

    def streams(self) -> list[StreamInfo]:
        return [self._stream(r) for r in list(self.node.circuits.streams.status.live.values())]

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
        self.onions.newnym()

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

    # --- onion services: runtime/client/torcontrol_onions.py --------------------------------------
    async def add_onion(self, request: AddOnion) -> OnionService:
        return await self.onions.add_onion(request)

    def del_onion(self, service_id: str) -> None:
        self.onions.del_onion(service_id)

    def client_auth_add(self, request: ClientAuthAdd) -> None:
        self.onions.client_auth_add(request)

    def client_auth_remove(self, service_id: str) -> None:
        self.onions.client_auth_remove(service_id)

    def client_auth_view(self, service_id: str | None) -> list[str]:
        return self.onions.client_auth_view(service_id)

    # --- events ----------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        if not self._hooked:
            self._hooked = True
            self.node.circuits.listeners.append(self._on_circuit)
            self.node.circuits.streams.status.listeners.append(self._on_stream)
            self.onions.hook()  # HS_DESC for every service, however it was added
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

    def _on_stream(self, record: StreamRecord) -> None:
        self._emit(Event("STREAM", stream=self._stream(record)))

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

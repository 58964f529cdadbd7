"""What the control port needs from a node, in a neutral form (no client or relay types).

runtime/client/torcontrol_target.py and runtime/relay/torcontrol_target.py adapt a node to this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from onionmesh.proto.torcontrol_onion import AddOnion, ClientAuthAdd

# Tor's circuit purposes (control-spec §4.1.1) the client uses.
PURPOSE_GENERAL = "GENERAL"
PURPOSE_CONTROLLER = "CONTROLLER"


@dataclass(frozen=True)
class Hop:
    fingerprint: str  # 40 hex, upper case (Tor's $FP)
    nickname: str


@dataclass(frozen=True)
class CircuitInfo:
    id: int
    status: str  # LAUNCHED BUILT EXTENDED FAILED CLOSED
    path: tuple[Hop, ...]
    purpose: str = PURPOSE_GENERAL
    created: float | None = None  # unix time
    reason: str | None = None
    socks_username: str | None = None
    socks_password: str | None = None
    hs_state: str | None = None
    rend_query: str | None = None


@dataclass(frozen=True)
class StreamInfo:
    id: int
    status: str  # NEW NEWRESOLVE SENTCONNECT SENTRESOLVE REMAP SUCCEEDED DETACHED FAILED CLOSED
    circuit: int
    target: str  # host:port
    socks_username: str | None = None
    socks_password: str | None = None
    reason: str | None = None
    remote_reason: str | None = None
    source: str | None = None  # REMAP's SOURCE= (EXIT or CACHE)
    source_addr: str | None = None  # NEW/NEWRESOLVE: the application's address:port


@dataclass(frozen=True)
class RelayEntry:
    """One relay as a consensus entry (`ns/id/<fp>`), synthesised from its verified descriptor."""

    nickname: str
    fingerprint: str
    address: str
    or_port: int
    published: float  # unix time
    bandwidth: int
    flags: tuple[str, ...]
    exit_summary: str = "reject 1-65535"


@dataclass(frozen=True)
class Event:
    """An event the node reports: CIRC/STREAM carry info, NOTICE/WARN/ERR/STATUS_CLIENT/HS_DESC text."""

    kind: str
    circuit: CircuitInfo | None = None
    stream: StreamInfo | None = None
    text: str = ""


@dataclass
class OnionService:
    service_id: str
    private_key: bytes | None = None  # 64-byte expanded key, unless DiscardPK
    extra: list[str] = field(default_factory=list)  # more reply lines (ClientAuthV3 ...)


class ControlTarget(Protocol):
    """The node behind a control port."""

    role: str  # "client" or "relay"
    version: str  # onionmesh's version
    data_dir: str
    config_file: str | None

    def socks_listeners(self) -> list[str]: ...
    def bootstrap(self) -> tuple[int, str, str]: ...  # (progress, tag, summary)
    def circuits(self) -> list[CircuitInfo]: ...
    def streams(self) -> list[StreamInfo]: ...
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]: ...
    def traffic(self) -> tuple[int, int]: ...  # bytes read, written
    def relays(self) -> list[RelayEntry]: ...
    def fingerprint(self) -> str | None: ...
    def exit_policy(self) -> list[str]: ...
    def get_conf(self, name: str) -> list[str] | None: ...  # None: not an option of this node
    def set_conf(self, values: dict[str, str | None]) -> None: ...  # ValueError: refused
    def newnym(self) -> None: ...
    def close_circuit(self, circuit: int) -> bool: ...
    async def extend_circuit(self, path: list[str] | None, purpose: str) -> int: ...
    def attach_stream(self, stream: int, circuit: int) -> None: ...
    def signal(self, name: str) -> None: ...  # RELOAD DORMANT ACTIVE CLEARDNSCACHE DUMP DEBUG
    async def add_onion(self, request: AddOnion) -> OnionService: ...
    def del_onion(self, service_id: str) -> None: ...
    def client_auth_add(self, request: ClientAuthAdd) -> None: ...
    def client_auth_remove(self, service_id: str) -> None: ...
    def client_auth_view(self, service_id: str | None) -> list[str]: ...
    def geoip_available(self, version: int) -> bool: ...  # 4 or 6: a database answers that family
    def ip_to_country(self, ip: str) -> str: ...  # upper-case code, "??" unknown

"""ADD_ONION, DEL_ONION and ONION_CLIENT_AUTH_* arguments (control-spec.txt §3.27-§3.32), parsed
fully and refused precisely, before anything reaches the node.

The key blob of `ED25519-V3:<blob>` is Tor's: base64 of the 64-byte *expanded* secret key
(clamped scalar || PRF secret), not a seed.  A blob that is not exactly that is refused, so a
cached key with a CR, LF or space in it (command injection, Bitcoin Core's test) never gets in.
Unsupported options (`PoWDefensesEnabled`, `MaxStreams` beyond its range, unknown flags) get 512:
Bitcoin Core retries without PoW on 512.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from onionmesh.errors import OnionArgError
from onionmesh.proto.torcontrol import parse_args

KNOWN_FLAGS = frozenset(
    {"DiscardPK", "Detach", "BasicAuth", "V3Auth", "NonAnonymous", "MaxStreamsCloseCircuit"}
)
SUPPORTED_FLAGS = frozenset({"DiscardPK", "Detach", "V3Auth"})
MAX_PORTS = 64
MAX_CLIENT_AUTH = 64
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_B32_KEY = re.compile(r"[A-Za-z2-7]{52}")
_SERVICE_ID = re.compile(r"[a-z2-7]{56}")


@dataclass(frozen=True)
class PortMapping:
    virtual: int
    host: str
    port: int


@dataclass
class AddOnion:
    new_key: bool  # NEW:ED25519-V3 / NEW:BEST
    expanded_key: bytes | None  # 64 bytes for ED25519-V3:<blob>
    ports: list[PortMapping]
    flags: set[str] = field(default_factory=set)
    client_auth_v3: list[bytes] = field(default_factory=list)  # x25519 public keys, 32 bytes each
    max_streams: int = 0


def decode_expanded_key(blob: str) -> bytes:
    """The 64-byte expanded ed25519 key of an `ED25519-V3:` blob; OnionArgError if malformed."""
    if len(blob) != 88 or not _B64.fullmatch(blob):
        raise OnionArgError(512, "Failed to decode ED25519-V3 key")
    try:
        key = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise OnionArgError(512, "Failed to decode ED25519-V3 key") from None
    if len(key) != 64:
        raise OnionArgError(512, "Failed to decode ED25519-V3 key")
    return key


def encode_expanded_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise OnionArgError(512, f"Invalid VIRTPORT/TARGET: {text[:32]}")
    return int(text)


def parse_port(value: str) -> PortMapping:
    """`Port=virt[,target]`: target is a port, or IPv4:port on loopback (what we can reach)."""
    virt, sep, target = value.partition(",")
    virtual = _port(virt)
    if not sep:
        return PortMapping(virtual, "127.0.0.1", virtual)
    if target.isdigit():
        return PortMapping(virtual, "127.0.0.1", _port(target))
    host, colon, port = target.rpartition(":")
    if not colon or target.startswith("unix:"):
        raise OnionArgError(512, "Invalid VIRTPORT/TARGET: only PORT or IP:PORT targets are supported")
    host = host.strip("[]")
    if not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+|localhost", host):
        raise OnionArgError(512, "Invalid VIRTPORT/TARGET: the target must be an IP address")
    return PortMapping(virtual, host, _port(port))


def parse_add_onion(args: str) -> AddOnion:
    head, _, rest_args = args.strip(" ").partition(" ")
    try:
        parsed = parse_args(rest_args)
    except ValueError as exc:
        raise OnionArgError(512, f"Invalid argument: {exc}") from None
    kind, colon, rest = head.partition(":")
    if not head:
        raise OnionArgError(512, "Missing argument: KeyType:KeyBlob")
    if not colon:
        raise OnionArgError(512, "Invalid key type/blob")
    request = AddOnion(new_key=False, expanded_key=None, ports=[])
    if kind == "NEW":
        if rest not in ("ED25519-V3", "BEST"):
            raise OnionArgError(513, "Invalid key type")
        request.new_key = True
    elif kind == "ED25519-V3":
        request.expanded_key = decode_expanded_key(rest)
    elif kind == "RSA1024":
        raise OnionArgError(513, "Invalid key type: v2 (RSA1024) onion services no longer exist")
    else:
        raise OnionArgError(513, "Invalid key type")
    for arg in parsed:
        name, value = arg.key, arg.value
        if name is None or value is None:
            raise OnionArgError(512, f"Invalid argument: {(name or value or '')[:32]}")
        if name == "Port":
            if len(request.ports) >= MAX_PORTS:
                raise OnionArgError(512, "Too many Port arguments")
            request.ports.append(parse_port(value))
        elif name == "Flags":
            flags = set(value.split(",")) if value else set()
            unknown = flags - KNOWN_FLAGS
            if unknown:
                raise OnionArgError(512, f"Invalid 'Flags' argument: {sorted(unknown)[0][:32]}")
            unsupported = flags - SUPPORTED_FLAGS
            if unsupported:
                raise OnionArgError(512, f"Unsupported flag: {sorted(unsupported)[0]}")
            request.flags |= flags
        elif name == "MaxStreams":
            if not value.isdigit() or int(value) > 65535:
                raise OnionArgError(512, "Invalid MaxStreams")
            request.max_streams = int(value)
        elif name == "ClientAuthV3":
            if len(request.client_auth_v3) >= MAX_CLIENT_AUTH:
                raise OnionArgError(512, "Too many ClientAuthV3 keys")
            if not _B32_KEY.fullmatch(value):
                raise OnionArgError(512, "Cannot decode v3 client auth key")
            request.client_auth_v3.append(base64.b32decode(value.upper() + "====")[:32])
        elif name == "ClientAuth":
            raise OnionArgError(512, "ClientAuth is v2 client authorization: use ClientAuthV3")
        else:  # PoWDefensesEnabled and anything newer
            raise OnionArgError(512, f"Unrecognized argument: {name[:32]}")
    if not request.ports:
        raise OnionArgError(512, "Missing 'Port' argument")
    if "V3Auth" in request.flags and not request.client_auth_v3:
        raise OnionArgError(512, "V3Auth needs at least one ClientAuthV3 key")
    return request


def parse_service_id(args: str) -> str:
    """DEL_ONION's one argument: a v3 address without ".onion"."""
    words = args.split()
    if len(words) != 1:
        raise OnionArgError(512, "Too many arguments" if words else "Missing argument")
    if not _SERVICE_ID.fullmatch(words[0]):
        raise OnionArgError(512, "Malformed Onion Service id")
    return words[0]


@dataclass(frozen=True)
class ClientAuthAdd:
    service_id: str
    private_key: bytes  # x25519, 32 bytes
    nickname: str | None
    permanent: bool


def parse_client_auth_add(args: str) -> ClientAuthAdd:
    """`ONION_CLIENT_AUTH_ADD <addr> x25519:<b64> [ClientName=..] [Flags=Permanent]`."""
    words = args.strip(" ").split(" ", 2)
    if len(words) < 2:
        raise OnionArgError(512, "Missing arguments")
    service_id = parse_service_id(words[0].removesuffix(".onion"))
    kind, _, blob = words[1].partition(":")
    if kind != "x25519":
        raise OnionArgError(552, "Unrecognized key type")
    try:
        key = base64.b64decode(blob, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise OnionArgError(512, "Failed to decode x25519 private key")
    try:
        parsed = parse_args(words[2] if len(words) > 2 else "")
    except ValueError as exc:
        raise OnionArgError(512, f"Invalid argument: {exc}") from None
    nickname, permanent = None, False
    for arg in parsed:
        if (
            arg.key == "ClientName"
            and arg.value is not None
            and re.fullmatch(r"[A-Za-z0-9+\-_]{1,16}", arg.value)
        ):
            nickname = arg.value
        elif arg.key == "Flags" and arg.value is not None and set(arg.value.split(",")) <= {"Permanent"}:
            permanent = "Permanent" in arg.value
        else:
            raise OnionArgError(512, f"Invalid argument: {(arg.key or arg.value or '')[:32]}")
    return ClientAuthAdd(service_id, key, nickname, permanent)

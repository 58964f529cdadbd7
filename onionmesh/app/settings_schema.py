"""What a setting is: every key of `relay`, `proxy` and `testnet` with its type, default and check,
and how a value from a TOML file, an environment variable or a flag becomes a typed value.

Not in this module: reading files and the precedence between sources (onionmesh.app.config).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1 << 20
HostPort = tuple[str, int]


@dataclass(frozen=True)
class Key:
    """One setting: its type (``kind``), default, one-line doc and constraints."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "path" | "hostport" | "hostports" | "names" | "bridges"
    default: object
    doc: str
    required: bool = False
    optional: bool = False  # may be unset (None); an empty string in the environment unsets it
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    check: Callable[[Any], str | None] | None = None  # more checks of the typed value: a problem or None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "ONIONMESH_" + self.name.upper()

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "path": "a path"}
        what |= {"hostport": "HOST:PORT", "hostports": "a list of HOST:PORT", "names": "a list of NAME=IP"}
        what |= {"keys": "a list of identity keys (64 hex digits)", "bridges": "a list of bridge lines"}
        if self.hi is not None:
            return f"{what[self.kind]} {_num(self.lo)}..{_num(self.hi)}"
        if self.lo is not None:
            return f"{what[self.kind]} >= {_num(self.lo)}"
        return "one of " + ", ".join(self.choices) if self.choices else what.get(self.kind, "a string")


def _check_hashed_password(text: str) -> str | None:
    if re.fullmatch(r"16:[0-9A-Fa-f]{58}", text):
        return None
    return 'a hashed control password is "16:" and 58 hex digits (tor --hash-password PASSWORD)'


def _check_nickname(text: str) -> str | None:
    return (
        None
        if re.fullmatch(r"[A-Za-z0-9]{1,19}", text)
        else f"must be 1..19 letters and digits, got {shown(text)}"
    )


def _num(value: float | None) -> str:
    """A bound as people write it: 1048576, not 1.04858e+06; 0.5 stays 0.5."""
    return str(int(value)) if value is not None and float(value).is_integer() else f"{value:g}"


def _check_loopback(address: HostPort) -> str | None:
    try:
        if address[0] == "localhost" or ipaddress.ip_address(address[0]).is_loopback:
            return None
    except ValueError:
        pass
    return f"must be on loopback (127.0.0.1, [::1] or localhost), got {shown(address[0])}"


def _check_ws_url(text: str) -> str | None:
    if re.fullmatch(r"wss?://[^/\s]+/?", text):
        return None
    return f"must be wss://HOST[:PORT] (or ws://), got {shown(text)}"


def _check_exit_policy(text: str) -> str | None:
    from onionmesh.directory.descriptor import MAX_EXIT_POLICY_LEN
    from onionmesh.directory.exit_policy import ExitPolicy
    from onionmesh.errors import PolicyError

    try:
        if text.strip():
            canonical = str(ExitPolicy.parse(text))
            if len(canonical.encode("utf-8")) > MAX_EXIT_POLICY_LEN:
                return (
                    f"is too long to publish: {len(canonical)} characters once written out, "
                    f"at most {MAX_EXIT_POLICY_LEN} fit a descriptor (use port ranges, fewer rules)"
                )
    except (PolicyError, ValueError) as exc:
        return f"is not a valid exit policy: {exc}"
    return None


def _check_node_list(text: str) -> str | None:
    from onionmesh.directory.node_restrictions import RestrictionError, RouterSet

    try:
        RouterSet.parse(text)
    except RestrictionError as exc:
        return f"is not a node list ({{cc}}, $FINGERPRINT, ADDRESS[/BITS], comma-separated): {exc}"
    return None


_KEYS = {
    k.name: k
    for k in (
        Key("listen", "hostport", None, "TCP address relays and clients connect to", required=True),
        Key("data_dir", "path", None, "keys and state of this relay", required=True),
        Key("nickname", "str", "Unnamed", "1..19 letters and digits, shown to users", check=_check_nickname),
        Key("exit_policy", "str", "", "Tor syntax; empty = middle relay", check=_check_exit_policy),
        Key("exit_policy_udp", "str", "", "UDP: Tor syntax; empty = no UDP", check=_check_exit_policy),
        Key("udp_flows_per_circuit", "int", None, "UDP flows per circuit (none: 32)", optional=True, lo=1),
        Key("udp_datagrams_per_second", "float", None, "per circuit (none: 2000)", optional=True, lo=1),
        Key("allow_private_destinations", "bool", False, "let this exit reach private addresses (tests)"),
        Key("bandwidth", "int", 10_000_000, "advertised bytes per second", lo=1),
        Key(
            "bandwidth_rate",
            "int",
            None,
            "bytes/s this relay carries each way (none: no limit)",
            optional=True,
            lo=1,
        ),
        Key(
            "bandwidth_burst", "int", None, "token bucket size in bytes (none: the rate)", optional=True, lo=1
        ),
        Key(
            "max_mem_in_queues", "int", 128 << 20, "queued bytes before the stalest circuits die", lo=1 << 20
        ),
        Key(
            "max_streams_per_circuit",
            "int",
            None,
            "exit streams per circuit (none: 512)",
            optional=True,
            lo=1,
            hi=512,
        ),
        Key(
            "max_streams_per_link",
            "int",
            None,
            "exit streams per link (none: half the process cap)",
            optional=True,
            lo=1,
        ),
        Key(
            "max_exit_streams",
            "int",
            None,
            "exit streams per process (none: from RLIMIT_NOFILE)",
            optional=True,
            lo=1,
        ),
        Key("advertise", "hostport", None, "address published in the descriptor", optional=True),
        Key("dht", "hostport", None, "UDP address of the DHT node (none: listen host)", optional=True),
        Key("bootstrap", "hostports", (), "DHT contacts: any relays of the network"),
        Key("bootstrap_file", "path", None, "a file of DHT contacts, one HOST:PORT a line", optional=True),
        Key("resolve", "names", (), "names this exit answers itself, before DNS: NAME=IP"),
        Key("family", "keys", (), "identity keys of your other relays (each must list this one too)"),
        Key(
            "metrics", "hostport", None, "Prometheus /metrics (opt-in)", optional=True, check=_check_loopback
        ),
        Key("bridge", "bool", False, "a bridge: not in the DHT; prints a bridge line (needs ws_listen)"),
        Key("ws_listen", "hostport", None, "links over WebSocket behind a decoy web site", optional=True),
        Key(
            "ws_public_url",
            "str",
            None,
            "wss://HOST[:PORT] of a TLS front, for the bridge line",
            optional=True,
            check=_check_ws_url,
        ),
        Key("tls_cert", "path", None, "TLS certificate (PEM) for wss:// on ws_listen", optional=True),
        Key("tls_key", "path", None, "TLS private key (PEM) for wss:// on ws_listen", optional=True),
        Key("bridges", "bridges", (), "bridge lines: webtunnel wss://HOST:PORT/SECRET IDENTITY"),
        Key("dht_over_circuits", "bool", False, "send DHT RPCs through circuits, no UDP (bridges: always)"),
        Key("exit_nodes", "str", "", "exits only from these: {de},$FP,ADDR/BITS", check=_check_node_list),
        Key("exclude_nodes", "str", "", "never use these relays at any position", check=_check_node_list),
        Key("exclude_exit_nodes", "str", "", "never use these relays as exit", check=_check_node_list),
        Key("strict_nodes", "bool", False, "never fall back, even for streams that allowed it"),
        Key("geoip_file", "path", None, "Tor-format IPv4 GeoIP file (INTLOW,INTHIGH,CC)", optional=True),
        Key("geoip6_file", "path", None, "Tor-format IPv6 GeoIP file (LOW,HIGH,CC)", optional=True),
        Key("socks", "hostport", ("127.0.0.1", 9050), "SOCKS5 proxy address (keep it on loopback)"),
        Key("control", "hostport", ("127.0.0.1", 9052), "JSON control API, status page (loopback)"),
        Key(
            "tor_control",
            "hostport",
            ("127.0.0.1", 9051),
            "Tor's control protocol for stem, nyx, OnionShare (docs/control-port.md)",
            optional=True,
        ),
        Key(
            "hashed_control_password",
            "str",
            None,
            "a 16: hash (tor --hash-password) that also opens the Tor control port",
            optional=True,
            check=_check_hashed_password,
        ),
        Key(
            "onion_service",
            "onion_services",
            (),
            "persistent onion services: [[onion_service]] dir, ports, client_auth (client/README.md)",
        ),
        Key(
            "onion_client_auth_dir",
            "path",
            None,
            "Tor's <name>.auth_private files: keys for services that restrict discovery",
            optional=True,
        ),
        Key("dht_refresh", "float", 600.0, "seconds between crawls of the DHT", lo=1),
        Key("hops", "int", 3, "relays per circuit (3 is recommended)", lo=1, hi=8),
        Key("relays", "int", 5, "how many relays the testnet runs", lo=1),
        Key("state_dir", "path", Path("onionmesh-testnet"), "where the testnet keeps its state"),
        Key("log_level", "str", "info", "log verbosity", choices=("debug", "info", "warning", "error")),
        Key("log_format", "str", "console", "logs for people or machines", choices=("console", "json")),
        Key("unsafe_logging", "bool", False, "log destinations and addresses (debugging only)"),
    )
}
_LOG = ("log_level", "log_format", "unsafe_logging")
_RELAY = "listen data_dir nickname exit_policy allow_private_destinations bandwidth advertise dht bootstrap"
_RELAY += " bootstrap_file resolve metrics bandwidth_rate bandwidth_burst max_mem_in_queues"
_RELAY += " max_streams_per_circuit max_streams_per_link max_exit_streams"
_RELAY += " exit_policy_udp udp_flows_per_circuit udp_datagrams_per_second"
_RELAY += " bridge ws_listen ws_public_url tls_cert tls_key"
_TOR_CONTROL = ("tor_control", "hashed_control_password")
_ONION = ("onion_service", "onion_client_auth_dir")
_NODES = ("exit_nodes", "exclude_nodes", "exclude_exit_nodes", "strict_nodes", "geoip_file", "geoip6_file")
_CLIENT_DIR = Path.home() / ".onionmesh" / "client"
SCHEMAS: dict[str, dict[str, Key]] = {
    "relay": {
        **{name: _KEYS[name] for name in (*_RELAY.split(), *_LOG)},
        "tor_control": replace(_KEYS["tor_control"], default=None, doc="Tor's control port (off)"),
        "hashed_control_password": _KEYS["hashed_control_password"],
    },
    "proxy": {
        "socks": _KEYS["socks"],
        "control": _KEYS["control"],
        "data_dir": replace(_KEYS["data_dir"], default=_CLIENT_DIR, required=False, doc="client state"),
        "bootstrap": _KEYS["bootstrap"],
        **{name: _KEYS[name] for name in ("bootstrap_file", "metrics", "dht_refresh", "hops", *_LOG)},
        **{name: _KEYS[name] for name in ("bridges", "dht_over_circuits", *_TOR_CONTROL, *_NODES, *_ONION)},
    },
    "testnet": {
        "relays": _KEYS["relays"],
        "socks": _KEYS["socks"],
        "control": replace(_KEYS["control"], default=("127.0.0.1", 0), doc="control API (0: any port)"),
        "tor_control": replace(_KEYS["tor_control"], default=("127.0.0.1", 0), doc="Tor control (0: any)"),
        "hashed_control_password": _KEYS["hashed_control_password"],
        **{name: _KEYS[name] for name in ("state_dir", "hops", *_NODES, *_ONION, *_LOG)},
    },
}
ALL_KEYS: dict[str, Key] = {name: key for schema in SCHEMAS.values() for name, key in schema.items()}


# --- values --------------------------------------------------------------------------------------
def shown(value: object) -> str:
    """A value as a message shows it: TOML-like, bounded."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, str | list | tuple):
        try:
            text = json.dumps(value, default=str)
        except (ValueError, RecursionError):
            text = "a nested list"
    elif isinstance(value, int) and value.bit_length() > 64:
        text = "a huge number"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_host_port(text: str) -> HostPort:
    """Parse HOST:PORT or [IPv6]:PORT (an empty host means 127.0.0.1); raise ValueError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        raise ValueError("no :PORT")
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError("port must be 0..65535")
    if host.startswith("[") and host.endswith("]") and ":" in host:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("put an IPv6 address in brackets: [::1]:9050")
    if host and not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ValueError("bad host")
    return host or "127.0.0.1", int(port)


def _hostport(value: object) -> HostPort:
    if isinstance(value, str):
        return parse_host_port(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):  # from argparse
        host = f"[{value[0]}]" if ":" in value[0] else value[0]
        return parse_host_port(f"{host}:{value[1]}")
    raise ValueError("not a string")


def _name_ip(value: object) -> str:
    """Check NAME=IP (an exit's own answer for NAME); return it stripped."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    name, sep, ip = value.partition("=")
    if not sep or not name.strip():
        raise ValueError("no NAME=")
    try:
        ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        raise ValueError("not an IP address") from None
    return value.strip()


def _identity_key(value: object) -> str:
    """A relay's Ed25519 identity key as 64 hex digits (as `onionmesh dht lookup` shows it)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{64}", value.strip()):
        raise ValueError("not 64 hex digits")
    return value.strip().lower()


def _onion_service(value: object) -> object:
    """One persistent onion service (app.onion_config.parse_service_table)."""
    from onionmesh.app.onion_config import parse_service_table

    return parse_service_table(value)


def _bridge_line(value: object) -> str:
    """A bridge line as `onionmesh relay --bridge` prints it (directory.bridge_line)."""
    from onionmesh.directory.bridge_line import parse_bridge_line

    if not isinstance(value, str):
        raise ValueError("not a string")
    return str(parse_bridge_line(value))


_ITEMS: dict[str, tuple[Callable[[object], object], str]] = {
    "bridges": (_bridge_line, "a bridge line"),
    "hostports": (_hostport, "HOST:PORT"),
    "names": (_name_ip, "NAME=IP"),
    "keys": (_identity_key, "an identity key (64 hex digits)"),
    "onion_services": (_onion_service, "an onion service {dir, ports, client_auth}"),
}


def _from_text(key: Key, text: str) -> object:
    """A string from the environment or a flag as the value TOML would hold."""
    if key.kind in ("int", "float"):
        try:
            return int(text) if key.kind == "int" else float(text)
        except ValueError:
            return text
    if key.kind == "bool" and text.strip().lower() in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if key.kind in _ITEMS:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool}


def coerce(key: Key, value: object, *, text: bool = False) -> object:
    """Check ``value`` against ``key`` and return the typed value; raise ValueError with a message.

    ``text=True``: a string may stand for any type (environment variables, flags): lists are
    comma-separated, bools 1/0/true/false/yes/no.  Otherwise the types must match (TOML)."""
    if text and isinstance(value, str):
        if key.optional and not value.strip():
            return None
        value = _from_text(key, value)
    if value is None and key.optional:
        return None
    bad = ValueError(f'"{key.name}" must be {key.describe()}, got {shown(value)}')
    typed: object = value
    if key.kind in ("int", "float", "bool"):
        if isinstance(value, bool) != (key.kind == "bool") or not isinstance(value, _TYPES[key.kind]):
            raise bad
        if isinstance(value, float) and not math.isfinite(value):
            raise bad
        if (key.lo is not None and value < key.lo) or (key.hi is not None and value > key.hi):
            raise bad
        typed = float(value) if key.kind == "float" else value
    elif key.kind == "path":
        if not isinstance(value, str | os.PathLike) or not str(value).strip() or "\0" in str(value):
            raise bad
        try:
            typed = Path(value).expanduser()
        except RuntimeError:  # "~user" of an unknown user
            raise ValueError(f"{bad} (unknown user)") from None
    elif key.kind == "hostport":
        try:
            typed = _hostport(value)
        except ValueError as exc:
            raise ValueError(f"{bad} ({exc})") from None
    elif key.kind in _ITEMS:
        parse, what = _ITEMS[key.kind]
        if not isinstance(value, list | tuple):
            raise bad
        items = []
        for i, item in enumerate(value, 1):
            try:
                items.append(parse(item))
            except ValueError as exc:
                raise ValueError(f'"{key.name}" item {i} must be {what}, got {shown(item)} ({exc})') from None
        typed = tuple(items)
    elif not isinstance(value, str) or (key.choices and value not in key.choices):
        raise bad
    problem = key.check(typed) if key.check else None
    if problem:
        raise ValueError(f'"{key.name}" {problem}')
    return typed

"""Which settings each command has: every key of `relay`, `proxy` and `testnet` with its type,
default, doc and check, and the tables that pick each command's keys (SCHEMAS).

What a key is and how a value becomes typed: onionmesh.app.setting_values.  Reading files and the
precedence between sources: onionmesh.app.config.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path

from onionmesh.app.setting_values import HostPort, Key, shown


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
        Key(
            "early_socks_reply",
            "bool",
            True,
            "SOCKS success before CONNECTED for a host:port this circuit reached lately",
        ),
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
        **{
            name: _KEYS[name]
            for name in ("bridges", "dht_over_circuits", "early_socks_reply", *_TOR_CONTROL, *_NODES, *_ONION)
        },
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

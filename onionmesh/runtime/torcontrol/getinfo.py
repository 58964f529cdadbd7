"""GETINFO: the keys stem, nyx, OnionShare, Bitcoin Core and Tor Browser read (control-spec §3.9).

A key this module does not know is `552 Unrecognized key`; one it knows but that makes no sense
for this node (a relay's `fingerprint` on a client) is `551` with the reason, as Tor answers.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import resource
import time
from collections.abc import Callable

from onionmesh.errors import InfoError
from onionmesh.proto.torcontrol import quote
from onionmesh.runtime.torcontrol.lines import circuit_line, ns_entry, stream_status_line, tor_version
from onionmesh.runtime.torcontrol.target import ControlTarget

EVENT_NAMES = (
    "CIRC",
    "CIRC_MINOR",
    "STREAM",
    "ORCONN",
    "BW",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARN",
    "ERR",
    "NEWDESC",
    "ADDRMAP",
    "DESCCHANGED",
    "NS",
    "STATUS_GENERAL",
    "STATUS_CLIENT",
    "STATUS_SERVER",
    "GUARD",
    "STREAM_BW",
    "CLIENTS_SEEN",
    "NEWCONSENSUS",
    "BUILDTIMEOUT_SET",
    "SIGNAL",
    "CONF_CHANGED",
    "TRANSPORT_LAUNCHED",
    "CONN_BW",
    "CIRC_BW",
    "CELL_STATS",
    "HS_DESC",
    "HS_DESC_CONTENT",
    "NETWORK_LIVENESS",
)


class GetInfo:
    """Answers GETINFO keys from a ControlTarget and the control server's own facts."""

    def __init__(
        self,
        target: ControlTarget,
        control_listeners: Callable[[], list[str]],
        option_names: Callable[[], list[str]],
        started: float,
    ) -> None:
        self.target = target
        self.control_listeners = control_listeners
        self.option_names = option_names
        self.started = started
        self.keys: dict[str, Callable[[], str]] = {
            "version": lambda: tor_version(target.version),
            "net/listeners/socks": lambda: " ".join(quote(a) for a in target.socks_listeners()),
            "net/listeners/control": lambda: " ".join(quote(a) for a in control_listeners()),
            "net/listeners/or": self._or_listeners,
            "net/listeners/dir": lambda: "",
            "net/listeners/dns": lambda: "",
            "net/listeners/trans": lambda: "",
            "net/listeners/natd": lambda: "",
            "net/listeners/extor": lambda: "",
            "net/listeners/httptunnel": lambda: "",
            "status/bootstrap-phase": self._bootstrap,
            "status/circuit-established": lambda: "1" if self._established() else "0",
            "status/enough-dir-info": lambda: "1" if target.relays() else "0",
            "status/version/current": lambda: "recommended",
            "network-liveness": lambda: "up" if self._established() else "down",
            "circuit-status": lambda: "\n".join(circuit_line(c) for c in target.circuits()),
            "stream-status": lambda: "\n".join(stream_status_line(s) for s in target.streams()),
            "orconn-status": lambda: "",
            "traffic/read": lambda: str(target.traffic()[0]),
            "traffic/written": lambda: str(target.traffic()[1]),
            "process/pid": lambda: str(os.getpid()),
            "process/uid": lambda: str(os.getuid()),
            "process/user": getpass.getuser,
            "process/descriptor-limit": lambda: str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            "uptime": lambda: str(int(time.time() - started)),
            "config-file": lambda: target.config_file or "",
            "config-defaults-file": lambda: "",
            "config/names": lambda: "\n".join(f"{name} String" for name in option_names()),
            "config/defaults": lambda: "",
            "info/names": lambda: "\n".join(f"{key} --" for key in sorted(self.keys)),
            "events/names": lambda: " ".join(EVENT_NAMES),
            "features/names": lambda: "VERBOSE_NAMES EXTENDED_EVENTS",
            "signal/names": lambda: (
                "RELOAD SHUTDOWN DUMP DEBUG HALT HUP INT USR1 USR2 TERM NEWNYM "
                "CLEARDNSCACHE HEARTBEAT ACTIVE DORMANT"
            ),
            "exit-policy/full": lambda: "\n".join(target.exit_policy()),
            "exit-policy/default": lambda: "reject *:*",
            "fingerprint": self._fingerprint,
            "ns/all": lambda: "".join(ns_entry(r) for r in target.relays()).rstrip("\n"),
            "accounting/enabled": lambda: "0",
            "dormant": lambda: "0",
            "bw-event-cache": lambda: "",
            "ip-to-country/ipv4-available": lambda: "1" if target.geoip_available(4) else "0",
            "ip-to-country/ipv6-available": lambda: "1" if target.geoip_available(6) else "0",
            "entry-guards": self._entry_guards,
            "address-mappings/all": lambda: "",  # no MAPADDRESS, no DNS cache: nothing is mapped
            "address-mappings/config": lambda: "",
            "address-mappings/cache": lambda: "",
            "address-mappings/control": lambda: "",
            "onions/current": lambda: "",
            "onions/detached": lambda: "",
        }

    def _established(self) -> bool:
        return any(c.status == "BUILT" for c in self.target.circuits())

    def _bootstrap(self) -> str:
        progress, tag, summary = self.target.bootstrap()
        return f"NOTICE BOOTSTRAP PROGRESS={progress} TAG={tag} SUMMARY={quote(summary)}"

    def _entry_guards(self) -> str:
        """Tor's `$FP~nickname up` lines: the client's primary guards (a relay has none)."""
        guards = [r for r in self.target.relays() if "Guard" in r.flags and self.target.role == "client"]
        return "\n".join(f"${r.fingerprint}~{r.nickname} up" for r in guards)

    def _fingerprint(self) -> str:
        fp = self.target.fingerprint()
        if fp is None:
            raise InfoError(551, "Not running in server mode")
        return fp

    def _ip_to_country(self, text: str) -> str:
        """Tor's getinfo_helper_geoip: the lower-case code, "??" when no range holds the address,
        551 for a non-address or a family no database covers."""
        try:
            addr = ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text)
        except ValueError:
            raise InfoError(551, "Invalid address family") from None
        if not self.target.geoip_available(addr.version):
            raise InfoError(551, "GeoIP data not loaded")
        return self.target.ip_to_country(str(addr)).lower()

    def _or_listeners(self) -> str:
        return " ".join(quote(a) for a in self.target.get_conf("ORPort") or [] if a and a != "0")

    def get(self, key: str) -> str:
        fixed = self.keys.get(key)
        if fixed is not None:
            return fixed()
        if key.startswith(("ns/id/", "ns/name/")):
            wanted = key.split("/", 2)[2].lstrip("$").split("~")[0]
            for relay in self.target.relays():
                if wanted.upper() == relay.fingerprint or wanted == relay.nickname:
                    return ns_entry(relay).rstrip("\n")
            raise InfoError(552, f"Unrecognized key {quote(key)}")  # Tor's answer for an unknown relay
        if key.startswith("ip-to-country/"):
            return self._ip_to_country(key[len("ip-to-country/") :])
        if key.startswith(("desc/", "md/", "extra-info/", "dir/", "address")):
            raise InfoError(551, f"{key.split('/')[0]} is not available: onionmesh has no Tor directory")
        raise InfoError(552, f"Unrecognized key {quote(key)}")

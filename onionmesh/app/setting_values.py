"""What a setting is (`Key`: its type, default, bounds and check) and how a value from a TOML file,
an environment variable or a flag becomes a typed value (`coerce`).

The tables of which keys each command has are in onionmesh.app.settings_schema; reading files and
the precedence between sources in onionmesh.app.config.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _num(value: float | None) -> str:
    """A bound as people write it: 1048576, not 1.04858e+06; 0.5 stays 0.5."""
    return str(int(value)) if value is not None and float(value).is_integer() else f"{value:g}"


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

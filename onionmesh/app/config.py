"""Settings for `onionmesh relay`, `proxy` and `testnet`: a declared schema, TOML config files and
their precedence.

Every setting has one name, used everywhere: the long flag (``--data-dir``), the environment variable
(``ONIONMESH_DATA_DIR``) and the TOML key (``data_dir``).  Precedence, strongest first: command-line
flags, environment variables, the config file (``--config FILE`` or ``ONIONMESH_CONFIG``), defaults.

A config file holds top-level keys, or one table per command (``[relay]``, ``[proxy]``, ``[testnet]``),
or both: a table's values win over the top-level ones.  Top-level keys must be settings of the command
that reads the file; a file shared by several commands puts the rest in tables.  Paths expand ``~``;
relative paths are relative to the working directory.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1 << 20
HostPort = tuple[str, int]


class ConfigError(ValueError):
    """The settings are unusable; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Key:
    """One setting: its type (``kind``), default, one-line doc and constraints."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "path" | "hostport" | "hostports" | "names" (NAME=IP)
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
        what |= {"keys": "a list of identity keys (64 hex digits)"}
        if self.hi is not None:
            return f"{what[self.kind]} {self.lo:g}..{self.hi:g}"
        if self.lo is not None:
            return f"{what[self.kind]} >= {self.lo:g}"
        return "one of " + ", ".join(self.choices) if self.choices else what.get(self.kind, "a string")


def _check_nickname(text: str) -> str | None:
    return (
        None
        if re.fullmatch(r"[A-Za-z0-9]{1,19}", text)
        else f"must be 1..19 letters and digits, got {_show(text)}"
    )


def _check_loopback(address: HostPort) -> str | None:
    try:
        if address[0] == "localhost" or ipaddress.ip_address(address[0]).is_loopback:
            return None
    except ValueError:
        pass
    return f"must be on loopback (127.0.0.1, [::1] or localhost), got {_show(address[0])}"


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


_KEYS = {
    k.name: k
    for k in (
        Key("listen", "hostport", None, "TCP address relays and clients connect to", required=True),
        Key("data_dir", "path", None, "keys and state of this relay", required=True),
        Key("nickname", "str", "Unnamed", "1..19 letters and digits, shown to users", check=_check_nickname),
        Key("exit_policy", "str", "", "Tor syntax; empty = middle relay", check=_check_exit_policy),
        Key("allow_private_destinations", "bool", False, "let this exit reach private addresses (tests)"),
        Key("bandwidth", "int", 10_000_000, "advertised bytes per second", lo=1),
        Key("advertise", "hostport", None, "address published in the descriptor", optional=True),
        Key("dht", "hostport", None, "UDP address of the DHT node (none: listen host)", optional=True),
        Key("bootstrap", "hostports", (), "DHT contacts: any relays of the network"),
        Key("bootstrap_file", "path", None, "a file of DHT contacts, one HOST:PORT a line", optional=True),
        Key("resolve", "names", (), "names this exit answers itself, before DNS: NAME=IP"),
        Key("family", "keys", (), "identity keys of your other relays (each must list this one too)"),
        Key(
            "metrics", "hostport", None, "Prometheus /metrics (opt-in)", optional=True, check=_check_loopback
        ),
        Key("socks", "hostport", ("127.0.0.1", 9050), "SOCKS5 proxy address (keep it on loopback)"),
        Key("control", "hostport", ("127.0.0.1", 9051), "JSON control API (keep it on loopback)"),
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
_RELAY += " bootstrap_file resolve metrics"
_CLIENT_DIR = Path.home() / ".onionmesh" / "client"
SCHEMAS: dict[str, dict[str, Key]] = {
    "relay": {name: _KEYS[name] for name in (*_RELAY.split(), *_LOG)},
    "proxy": {
        "socks": _KEYS["socks"],
        "control": _KEYS["control"],
        "data_dir": replace(_KEYS["data_dir"], default=_CLIENT_DIR, required=False, doc="client state"),
        "bootstrap": _KEYS["bootstrap"],
        **{name: _KEYS[name] for name in ("bootstrap_file", "metrics", "dht_refresh", "hops", *_LOG)},
    },
    "testnet": {
        "relays": _KEYS["relays"],
        "socks": _KEYS["socks"],
        "control": replace(_KEYS["control"], default=("127.0.0.1", 0), doc="control API (0: any port)"),
        **{name: _KEYS[name] for name in ("state_dir", "hops", *_LOG)},
    },
}
ALL_KEYS: dict[str, Key] = {name: key for schema in SCHEMAS.values() for name, key in schema.items()}


# --- values --------------------------------------------------------------------------------------
def _show(value: object) -> str:
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


_ITEMS: dict[str, tuple[Callable[[object], object], str]] = {
    "hostports": (_hostport, "HOST:PORT"),
    "names": (_name_ip, "NAME=IP"),
    "keys": (_identity_key, "an identity key (64 hex digits)"),
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
    bad = ValueError(f'"{key.name}" must be {key.describe()}, got {_show(value)}')
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
                raise ValueError(f'"{key.name}" item {i} must be {what}, got {_show(item)} ({exc})') from None
        typed = tuple(items)
    elif not isinstance(value, str) or (key.choices and value not in key.choices):
        raise bad
    problem = key.check(typed) if key.check else None
    if problem:
        raise ValueError(f'"{key.name}" {problem}')
    return typed


# --- files ---------------------------------------------------------------------------------------
MAX_PROBLEMS = 200
_PART = r"""(?:"[^"]*"|'[^']*'|[\w-]+)"""
_HEADER = re.compile(r"^\s*\[\[?([^\]]+)\]")
_KEYLINE = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _dotted(text: str) -> str:
    """A TOML dotted key as one string: ' relay . "hops" ' -> 'relay.hops'."""
    return ".".join(part.strip("\"'") for part in re.findall(r""""[^"]*"|'[^']*'|[^.\s]+""", text))


def _key_lines(text: str) -> dict[str, int]:
    """The line of every table and dotted key ("relay", "relay.hops"), found by scanning the text."""
    section = ""
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line[:200]  # keys this long are not ours; bounds the regex work
        if m := _HEADER.match(line):
            section = _dotted(m.group(1))
            seen.setdefault(section, number)
        elif m := _KEYLINE.match(line):
            key = _dotted(m.group(1))
            seen.setdefault(f"{section}.{key}" if section else key, number)
    return seen


def _line_of(seen: dict[str, int], name: str) -> int:
    """The line of ``name``, else of its nearest parent (an inline table), else 1."""
    while name not in seen and "." in name:
        name = name.rpartition(".")[0]
    return seen.get(name, 1)


def _check_data(
    data: dict[str, object], command: str | None
) -> tuple[list[tuple[str, str]], dict[str, object]]:
    """Problems as (dotted name, message), and the typed values ``command`` takes from the file."""
    problems: list[tuple[str, str]] = []
    top: dict[str, object] = {}
    table: dict[str, object] = {}
    allowed = SCHEMAS[command] if command else ALL_KEYS

    def check(
        schema: dict[str, Key], name: str, value: object, section: str, into: dict[str, object]
    ) -> None:
        dotted = f"{section}.{name}" if section else name
        if name not in schema:
            near = difflib.get_close_matches(name, list(schema), n=1)
            where = f" in [{section}]" if section else ""
            hint = f" (did you mean {_show(near[0])}?)" if near else ""
            problems.append((dotted, f"unknown key {_show(name)}{where}{hint}"))
            return
        try:
            into[name] = coerce(schema[name], value)
        except ValueError as exc:
            problems.append((dotted, str(exc)))

    for name, value in data.items():
        if name in SCHEMAS and isinstance(value, dict):
            for key_name, item in value.items():
                check(SCHEMAS[name], key_name, item, name, table if name == command else {})
        elif name in SCHEMAS:
            problems.append((name, f"{_show(name)} must be a table [{name}], got {_show(value)}"))
        elif isinstance(value, dict):
            near = difflib.get_close_matches(name, list(SCHEMAS), n=1)
            hint = f" (did you mean [{near[0]}]?)" if near else " (tables: [relay] [proxy] [testnet])"
            problems.append((name, f"unknown table [{_show(name)[1:-1]}]{hint}"))
        elif name in ALL_KEYS and name not in allowed:
            where = " or ".join(f"[{c}]" for c, schema in SCHEMAS.items() if name in schema)
            problems.append(
                (name, f'"{name}" is not a setting of "onionmesh {command}" (move it to {where})')
            )
        else:
            check(allowed, name, value, "", top)
    return problems, {**top, **table}


def _load(path: Path, command: str | None) -> tuple[list[str], dict[str, object]]:
    """Read and check a config file: (problems, the typed values for ``command``)."""
    label = str(path)
    try:
        size = path.stat().st_size
        if size <= MAX_FILE_BYTES:
            with path.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
            size = len(raw)
    except OSError as exc:
        return [f"{label}: cannot read: {exc.strerror or exc}"], {}
    if size > MAX_FILE_BYTES:
        return [f"{label}: too large ({size} bytes); a config file is at most 1 MiB"], {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return [f"{label}:{line}: not UTF-8 text"], {}
    for number, line in enumerate(text.splitlines(), 1):  # tomllib is quadratic in a key's depth
        if (line if line.lstrip().startswith("[") else line.partition("=")[0]).count(".") > 64:
            return [f"{label}:{number}: a key with more than 64 dots"], {}
    try:
        data = tomllib.loads(text)
    except RecursionError:
        return [f"{label}:1: invalid TOML: nested too deeply"], {}
    except ValueError as exc:  # TOMLDecodeError, or an integer of over 4300 digits
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
        at = re.search(r"[0-9a-fA-F_]{4000}", text) if not isinstance(exc, tomllib.TOMLDecodeError) else None
        line = int(m.group(1)) if m else text.count("\n", 0, at.start() if at else len(text)) + 1
        msg = msg.replace(m.group(0), f" (column {m.group(2)})") if m else msg
        return [f"{label}:{line}: invalid TOML: {msg}"], {}
    found, values = _check_data(data, command)
    seen = _key_lines(text)
    located = sorted(((_line_of(seen, name), msg) for name, msg in found), key=lambda p: p[0])
    problems = [f"{label}:{line}: {msg}" for line, msg in located[:MAX_PROBLEMS]]
    if len(located) > MAX_PROBLEMS:
        problems.append(f"{label}: ... and {len(located) - MAX_PROBLEMS} more problems")
    return problems, values


def check_file(path: Path | str, command: str | None = None) -> list[str]:
    """Every problem of config file ``path`` as "FILE:LINE: message"; empty means the file is fine.
    With ``command``, top-level keys must be its settings; with None, settings of any command."""
    if command is not None and command not in SCHEMAS:
        raise ValueError(f"unknown command {command!r}")
    return _load(Path(path), command)[0]


def main_check(path: Path | str, command: str | None = None) -> int:
    """`onionmesh config check FILE`: print ``FILE: OK`` or each problem; return 0 or 1."""
    problems = check_file(path, command)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{path}: OK")
    return 1 if problems else 0


def resolve(
    command: str, flags: Mapping[str, object], environ: Mapping[str, str], config_path: Path | None = None
) -> dict[str, object]:
    """Every setting of ``command`` with its final typed value: flags > environment > file > defaults.

    ``flags`` holds only the flags given on the command line (None values are ignored); ``environ`` is
    searched for ``ONIONMESH_<KEY>``; without ``config_path``, ``ONIONMESH_CONFIG`` names the config file.
    Raise ConfigError listing every problem (in the file, the environment and the flags)."""
    if command not in SCHEMAS:
        raise ConfigError([f"unknown command {command!r}; one of {', '.join(SCHEMAS)}"])
    schema = SCHEMAS[command]
    values = {name: key.default for name, key in schema.items()}
    problems: list[str] = []
    if config_path is None and environ.get("ONIONMESH_CONFIG", "").strip():
        config_path = Path(environ["ONIONMESH_CONFIG"]).expanduser()
    if config_path is not None:
        file_problems, file_values = _load(Path(config_path), command)
        problems += file_problems
        values.update(file_values)
    for key in schema.values():
        if key.env in environ:
            try:
                values[key.name] = coerce(key, environ[key.env], text=True)
            except ValueError as exc:
                problems.append(f"{key.env}: {exc}")
    for name, value in flags.items():
        key = schema.get(name.replace("-", "_"))
        if key is None:
            problems.append(f"onionmesh {command} has no setting {name!r}")
        elif value is not None:
            try:
                values[key.name] = coerce(key, value, text=True)
            except ValueError as exc:
                problems.append(f"{key.flag}: {exc}")
    for key in schema.values():
        if key.required and values[key.name] is None:
            problems.append(f'"{key.name}" is required: give {key.flag}, set {key.env} or put it in --config')
    if problems:
        raise ConfigError(problems)
    return values

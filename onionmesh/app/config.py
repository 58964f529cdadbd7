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
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from onionmesh.app.setting_values import Key, coerce, shown
from onionmesh.app.settings_schema import ALL_KEYS, SCHEMAS
from onionmesh.errors import ConfigError

# --- files ---------------------------------------------------------------------------------------
MAX_FILE_BYTES = 1 << 20
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
            hint = f" (did you mean {shown(near[0])}?)" if near else ""
            problems.append((dotted, f"unknown key {shown(name)}{where}{hint}"))
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
            problems.append((name, f"{shown(name)} must be a table [{name}], got {shown(value)}"))
        elif isinstance(value, dict):
            near = difflib.get_close_matches(name, list(SCHEMAS), n=1)
            hint = f" (did you mean [{near[0]}]?)" if near else " (tables: [relay] [proxy] [testnet])"
            problems.append((name, f"unknown table [{shown(name)[1:-1]}]{hint}"))
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

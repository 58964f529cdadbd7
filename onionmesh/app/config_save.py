"""SAVECONF: the settings a controller changed at run time, written back to the --config TOML file.

Tor rewrites its whole torrc on SAVECONF; onionmesh edits the file in place instead, so that what a
person wrote stays as written: only the keys whose value changed since the node started (or since
the last SAVECONF) are touched, each on its own line, keeping that line's indentation and trailing
comment; every other line, comment and blank line is kept byte for byte.  A key the file does not
have yet goes at the end of the command's table (``[proxy]``/``[testnet]``) if the file has one,
else among the top-level keys.  A setting back at "unset" (a GeoIP file) loses its line.

The new text is checked before it is written (it must parse, and give the command exactly the
saved values); then written atomically: a fresh temporary file in the same directory, the old
file's mode (and owner, where allowed), fsync, rename.  Refusals raise ConfigSaveError, which the
control port answers with `551 Unable to write configuration to disk`, as Tor does when it cannot
write; the file is then unchanged.  A multi-line value (a triple-quoted string, an array over
several lines) or an inline table for the command is not edited: the refusal says so.

`SAVECONF FORCE`: Tor's FORCE writes even when the torrc uses %include; TOML has no includes, so
onionmesh's FORCE covers its one case of the same kind: the file was changed on disk since the node
read it (someone edited it); without FORCE that is refused rather than mixing the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onionmesh.app.config import _HEADER, _KEYLINE, _check_data, _dotted
from onionmesh.errors import ConfigSaveError

MAX_CONFIG = 1 << 20


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's


def _split_comment(rest: str) -> tuple[str, str] | None:
    """`value  # comment` -> (value, "  # comment"); None when the value does not end on this line."""
    candidates = [i for i, ch in enumerate(rest) if ch == "#"] + [len(rest)]
    for cut in candidates:
        try:
            tomllib.loads(f"v = {rest[:cut]}")
        except tomllib.TOMLDecodeError:
            continue
        value = rest[:cut].rstrip()
        return value, rest[len(value) :]
    return None


def edit_toml(text: str, table: str, changes: dict[str, object | None]) -> str:
    """`text` with each key of `changes` set (None: removed) for `table`'s command."""
    lines = text.splitlines(keepends=True)
    section = ""
    found: dict[str, tuple[int, str]] = {}  # key -> (line index, section it was in)
    section_end: dict[str, int] = {}  # section -> index after its last non-blank line
    first_header: int | None = None
    for i, line in enumerate(lines):
        head = line[:300]
        if m := _HEADER.match(head):
            section = _dotted(m.group(1))
            first_header = i if first_header is None else first_header
            section_end[section] = i + 1
            continue
        if head.strip() and not head.lstrip().startswith("#"):
            section_end[section] = i + 1
        if m := _KEYLINE.match(head):
            key = _dotted(m.group(1))
            if section == "" and key.startswith(f"{table}."):
                key, where = key[len(table) + 1 :], table
            elif section == "" and key == table:
                raise ConfigSaveError(f"[{table}] is an inline table: edit it by hand")
            else:
                where = section
            # the table's value wins over the top level's
            if key in changes and where in ("", table) and (key not in found or where == table):
                found[key] = (i, where)
    inserts: dict[int, list[str]] = {}
    removals: set[int] = set()
    for key, value in changes.items():
        if key in found:
            index = found[key][0]
            line = lines[index]
            ending = "\n" if line.endswith("\n") else ""
            body = line[: len(line) - len(ending)]
            name, _, rest = body.partition("=")
            split = _split_comment(rest)
            if split is None:
                raise ConfigSaveError(f"{key} has a value over several lines: edit it by hand")
            if value is None:
                removals.add(index)
                continue
            lead = rest[: len(rest) - len(rest.lstrip())] or " "
            lines[index] = f"{name}={lead}{toml_value(value)}{split[1]}{ending}"
        elif value is not None:
            if table in section_end:
                at = section_end[table]
            elif first_header is not None:
                at = section_end.get("", 0) if "" in section_end else 0
            else:
                at = len(lines)
            inserts.setdefault(at, []).append(f"{key} = {toml_value(value)}\n")
    out: list[str] = []
    for i in range(len(lines) + 1):
        for new in inserts.get(i, []):
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.append(new)
        if i < len(lines) and i not in removals:
            out.append(lines[i])
    return "".join(out)


def check_saved(text: str, command: str, changes: dict[str, object | None]) -> None:
    """The edited file must parse and give `command` exactly the saved values."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigSaveError(f"the edited file would not parse: {exc}") from None
    problems, values = _check_data(data, command)
    if problems:
        raise ConfigSaveError(f"the edited file would not check: {problems[0][1]}")
    for key, value in changes.items():
        got = values.get(key)
        if value is None and key not in values:
            continue
        if got != value and str(got) != str(value):
            raise ConfigSaveError(f"the edited file would not give {key} its new value")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a new file in the same directory, the old mode and owner, fsync, rename."""
    old = os.stat(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), old.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):
                os.fchown(f.fileno(), old.st_uid, old.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class ConfSaver:
    """What the control port's SAVECONF calls (TorControlServer.save_conf)."""

    def __init__(self, path: Path, command: str, current: Callable[[], dict[str, object | None]]) -> None:
        self.path = Path(path).resolve()
        self.command = command
        self.current = current  # the settings a controller may change, as TOML keys and values
        self.saved = dict(current())  # what the file (or flags) gave at start
        self.digest = self._digest()

    def _read(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_CONFIG + 1)
        except OSError as exc:
            raise ConfigSaveError(f"cannot read {self.path.name}: {exc.strerror or exc}") from None
        if len(raw) > MAX_CONFIG:
            raise ConfigSaveError(f"{self.path.name} is larger than {MAX_CONFIG} bytes")
        return raw

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self._read()).hexdigest()
        except ConfigSaveError:
            return None

    def __call__(self, force: bool) -> int:
        """Write the changed settings; how many keys were written."""
        now = dict(self.current())
        changes = {k: v for k, v in now.items() if self.saved.get(k) != v}
        if not changes:
            return 0
        raw = self._read()
        if not force and hashlib.sha256(raw).hexdigest() != self.digest:
            raise ConfigSaveError(
                f"{self.path.name} was changed on disk since onionmesh read it (SAVECONF FORCE writes anyway)"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigSaveError(f"{self.path.name} is not UTF-8") from None
        new = edit_toml(text, self.command, changes)
        check_saved(new, self.command, changes)
        data = new.encode("utf-8")
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise ConfigSaveError(f"cannot write {self.path.name}: {exc.strerror or exc}") from None
        self.saved = now
        self.digest = hashlib.sha256(data).hexdigest()
        return len(changes)


def config_path(args_config: Path | None) -> Path | None:
    """The file the settings came from: --config, else ONIONMESH_CONFIG (as app.config.resolve)."""
    if args_config is not None:
        return Path(args_config)
    named = os.environ.get("ONIONMESH_CONFIG", "").strip()
    return Path(named).expanduser() if named else None


def attach(
    server: Any, path: Path | None, command: str, current: Callable[[], dict[str, object | None]]
) -> None:
    """Give a Tor control server its config file: `GETINFO config-file` and SAVECONF."""
    if server is None or path is None:
        return
    server.target.config_file = str(Path(path).resolve())
    server.save_conf = ConfSaver(path, command, current)

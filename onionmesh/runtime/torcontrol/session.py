"""One control connection's commands (control-spec §3): what each answers, in Tor's words.

The server (server.py) does the I/O; a `Session` turns one `Command` into reply bytes and says
whether to close.  Authentication is proto/torcontrol_auth.py's state machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from onionmesh.errors import ConfError, ConfigError, ConfigSaveError, InfoError, NotFound, Unsupported
from onionmesh.proto.torcontrol import Command, DataLine, format_reply, parse_args, quote, simple
from onionmesh.proto.torcontrol_auth import AuthConfig, AuthSession
from onionmesh.proto.torcontrol_onion import (
    OnionArgError,
    encode_expanded_key,
    parse_add_onion,
    parse_client_auth_add,
    parse_service_id,
)
from onionmesh.runtime.torcontrol.conf import Options
from onionmesh.runtime.torcontrol.getinfo import EVENT_NAMES, GetInfo
from onionmesh.runtime.torcontrol.lines import tor_version
from onionmesh.runtime.torcontrol.target import ControlTarget


class _Server(Protocol):
    """What a session uses of TorControlServer (structural: server.py imports this module)."""

    target: ControlTarget
    auth: AuthConfig
    info: GetInfo
    options: Options
    auth_failures: int
    detached_onions: set[str]
    save_conf: Callable[[bool], object] | None

    async def signal(self, name: str, session: Session) -> None: ...
    def conf_changed(self, changed: list[tuple[str, list[str]]]) -> None: ...


MAX_KEYS = 256  # GETINFO/GETCONF keys in one command
SIGNALS = {
    "RELOAD": "RELOAD", "HUP": "RELOAD", "SHUTDOWN": "SHUTDOWN", "INT": "SHUTDOWN", "HALT": "HALT",
    "TERM": "HALT", "DUMP": "DUMP", "USR1": "DUMP", "DEBUG": "DEBUG", "USR2": "DEBUG", "NEWNYM": "NEWNYM",
    "CLEARDNSCACHE": "CLEARDNSCACHE", "HEARTBEAT": "HEARTBEAT", "DORMANT": "DORMANT", "ACTIVE": "ACTIVE",
}  # fmt: skip
OK = simple(250, "OK")


class Session:
    def __init__(self, server: _Server, write: Callable[[bytes], None]) -> None:
        self.server = server
        self.write = write
        self.auth = AuthSession(server.auth)
        self.events: set[str] = set()
        self.owner = False  # TAKEOWNERSHIP: the node stops when this connection closes
        self.onions: set[str] = set()  # services this connection added without Detach

    async def handle(self, command: Command) -> tuple[bytes, bool]:
        """(reply, close after it)."""
        if command.looks_like_http and not self.auth.authenticated:
            return self._http_refusal(), True
        refusal = self.auth.gate(command.keyword)
        if refusal is not None:
            return format_reply(refusal.code, refusal.lines), refusal.close
        handler = getattr(self, "cmd_" + command.keyword.lower(), None)
        if handler is None or not command.keyword.replace("_", "").isalpha():
            return simple(510, f"Unrecognized command {quote(command.keyword[:64])}"), False
        try:
            return await handler(command), False
        except _Close as done:
            return done.reply, True
        except ValueError as exc:  # a malformed argument (e.g. an unterminated quoted string)
            return simple(512, f"Invalid argument: {exc}"), False

    def _http_refusal(self) -> bytes:
        body = (
            "This is onionmesh's Tor control port, not an HTTP server: the JSON control API and "
            "status page are on --control (see docs/control-port.md).\n"
        )
        return (
            "HTTP/1.0 501 Tor ControlPort is not an HTTP proxy\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    # --- authentication ------------------------------------------------------------------------
    async def cmd_protocolinfo(self, command: Command) -> bytes:
        verdict = self.auth.protocolinfo(command.args, tor_version(self.server.target.version))
        return format_reply(verdict.code, verdict.lines)

    async def cmd_authchallenge(self, command: Command) -> bytes:
        verdict = self.auth.authchallenge(command.args, os.urandom(32))
        if verdict.close:
            raise _Close(format_reply(verdict.code, verdict.lines))
        return format_reply(verdict.code, verdict.lines)

    async def cmd_authenticate(self, command: Command) -> bytes:
        verdict = self.auth.authenticate(command.args)
        if verdict.close:
            self.server.auth_failures += 1
            raise _Close(format_reply(verdict.code, verdict.lines))
        return format_reply(verdict.code, verdict.lines)

    async def cmd_quit(self, _command: Command) -> bytes:
        raise _Close(simple(250, "closing connection"))

    # --- information -------------------------------------------------------------------------------
    async def cmd_getinfo(self, command: Command) -> bytes:
        keys = command.args.split()
        if not keys:
            return simple(512, "Missing argument")
        if len(keys) > MAX_KEYS:
            return simple(512, "Too many keys")
        lines: list[str] = []
        body: list[tuple[str, str]] = []
        for key in keys:
            if key in ("onions/current", "onions/detached"):  # this connection's / the detached ones
                owned = self.onions if key == "onions/current" else self.server.detached_onions
                body.append((key, "\n".join(sorted(owned))))
                continue
            try:
                body.append((key, self.server.info.get(key)))
            except InfoError as exc:
                return simple(exc.code, str(exc))
        items: list[str | DataLine] = []
        for key, value in body:
            items.append(DataLine(f"{key}=", value) if "\n" in value else f"{key}={value}")
        return format_reply(250, [*items, *lines, "OK"])

    async def cmd_getconf(self, command: Command) -> bytes:
        names = command.args.split()
        if len(names) > MAX_KEYS:
            return simple(512, "Too many keys")
        lines: list[str] = []
        try:
            for name in names:
                key = self.server.options.canonical(name)
                values = self.server.options.get(key)
                lines += [f"{key}={v}" for v in values] if values else [key]
        except ConfError as exc:
            return simple(exc.code, str(exc))
        return format_reply(250, lines or ["OK"])

    async def cmd_setconf(self, command: Command) -> bytes:
        return self._set(command, reset=False)

    async def cmd_resetconf(self, command: Command) -> bytes:
        return self._set(command, reset=True)

    def _set(self, command: Command, *, reset: bool) -> bytes:
        args = parse_args(command.args)
        if not args or len(args) > MAX_KEYS:
            return simple(512, "Missing argument" if not args else "Too many options")
        values = [(a.key or "", None if reset and a.value is None else a.value) for a in args]
        options = self.server.options
        try:
            before = {options.canonical(key): options.get(key) for key, _ in values}
            options.set(values)
        except ConfError as exc:
            return simple(exc.code, str(exc))
        after = [(key, options.get(key)) for key in before]
        changed = [(key, now) for key, now in after if now != before[key]]
        if changed:
            self.server.conf_changed(changed)
        return OK

    async def cmd_saveconf(self, command: Command) -> bytes:
        words = command.args.split()
        if len(words) > 1 or (words and words[0].upper() != "FORCE"):
            return simple(512, "SAVECONF takes no argument but FORCE")
        save = self.server.save_conf
        if save is None:
            return simple(551, "Unable to write configuration to disk: no --config file to write")
        try:
            save(bool(words))
        except (ConfigSaveError, OSError) as exc:  # the file was not written: say why
            return simple(551, f"Unable to write configuration to disk: {str(exc)[:200]}")
        return OK

    async def cmd_loadconf(self, _command: Command) -> bytes:
        return simple(551, "LOADCONF is not supported: onionmesh reads a TOML file (onionmesh config check)")

    async def cmd_usefeature(self, command: Command) -> bytes:
        for feature in command.args.split():
            if feature.upper() not in ("EXTENDED_EVENTS", "VERBOSE_NAMES"):
                return simple(552, f"Unrecognized feature {quote(feature[:64])}")
        return OK

    async def cmd_setevents(self, command: Command) -> bytes:
        wanted = {word.upper() for word in command.args.split()} - {"EXTENDED"}
        unknown = wanted - set(EVENT_NAMES)
        if unknown:
            return simple(552, f'Unrecognized event "{sorted(unknown)[0][:64]}"')
        self.events = wanted
        return OK

    async def cmd_takeownership(self, _command: Command) -> bytes:
        self.owner = True
        return OK

    async def cmd_dropownership(self, _command: Command) -> bytes:
        self.owner = False
        return OK

    # --- circuits and streams ----------------------------------------------------------------------
    async def cmd_signal(self, command: Command) -> bytes:
        words = command.args.split()
        if len(words) != 1:
            return simple(512, "Wrong number of arguments")
        name = SIGNALS.get(words[0].upper())
        if name is None:
            return simple(552, f"Unrecognized signal code {quote(words[0][:32])}")
        await self.server.signal(name, self)
        return OK

    async def cmd_closecircuit(self, command: Command) -> bytes:
        words = command.args.split()
        if not words or not words[0].isdigit():
            return simple(552, f"Unknown circuit {quote(words[0][:32]) if words else ''}")
        if not self.server.target.close_circuit(int(words[0])):
            return simple(552, f'Unknown circuit "{words[0]}"')
        return OK

    async def cmd_extendcircuit(self, command: Command) -> bytes:
        words = command.args.split()
        if not words or not words[0].isdigit():
            return simple(552, "Unknown circuit")
        if words[0] != "0":
            return simple(551, "onionmesh cannot extend a built circuit: EXTENDCIRCUIT 0 builds a new one")
        path = [w for w in words[1:] if "=" not in w]
        path = [hop for chunk in path for hop in chunk.split(",")]
        purpose = "general"
        for word in words[1:]:
            if word.lower().startswith("purpose="):
                purpose = word.split("=", 1)[1].lower()
        if purpose not in ("general", "controller"):
            return simple(552, "Unknown purpose")
        try:
            number = await self.server.target.extend_circuit(path or None, purpose.upper())
        except NotFound as exc:
            return simple(552, str(exc))
        except Unsupported as exc:
            return simple(551, str(exc))
        except (OSError, TimeoutError) as exc:
            return simple(551, f"Couldn't build the circuit: {type(exc).__name__}")
        return simple(250, f"EXTENDED {number}")

    async def cmd_attachstream(self, command: Command) -> bytes:
        words = command.args.split()
        if len(words) < 2 or not words[0].isdigit() or not words[1].isdigit():
            return simple(512, "Syntax: ATTACHSTREAM StreamID CircuitID")
        try:
            self.server.target.attach_stream(int(words[0]), int(words[1]))
        except NotFound as exc:
            return simple(552, str(exc))
        except Unsupported as exc:
            return simple(555, str(exc))
        return OK

    async def cmd_closestream(self, command: Command) -> bytes:
        return simple(552, f"Unknown stream {quote(command.args.split()[0][:32]) if command.args else ''}")

    async def cmd_mapaddress(self, _command: Command) -> bytes:
        return simple(551, "MAPADDRESS is not supported by onionmesh")

    # --- onion services ---------------------------------------------------------------------------
    async def cmd_add_onion(self, command: Command) -> bytes:
        try:
            request = parse_add_onion(command.args)
        except OnionArgError as exc:
            return simple(exc.code, str(exc))
        try:
            service = await self.server.target.add_onion(request)
        except Unsupported as exc:
            return simple(551, str(exc))
        except ConfigError as exc:  # the node refused the spec: Tor's words for a key already running
            text = exc.one_line()
            already = "already running" in text
            return simple(550 if already else 512, "Onion address collision" if already else text)
        lines = [f"ServiceID={service.service_id}"]
        if service.private_key is not None and "DiscardPK" not in request.flags:
            lines.append(f"PrivateKey=ED25519-V3:{encode_expanded_key(service.private_key)}")
        lines += service.extra
        if "Detach" not in request.flags:
            self.onions.add(service.service_id)
        else:
            self.server.detached_onions.add(service.service_id)
        return format_reply(250, [*lines, "OK"])

    async def cmd_del_onion(self, command: Command) -> bytes:
        try:
            service_id = parse_service_id(command.args)
            self.server.target.del_onion(service_id)
        except OnionArgError as exc:
            return simple(exc.code, str(exc))
        except NotFound:
            return simple(552, "Unknown Onion Service id")
        except Unsupported as exc:
            return simple(551, str(exc))
        self.onions.discard(service_id)
        self.server.detached_onions.discard(service_id)
        return OK

    async def cmd_onion_client_auth_add(self, command: Command) -> bytes:
        try:
            self.server.target.client_auth_add(parse_client_auth_add(command.args))
        except OnionArgError as exc:
            return simple(exc.code, str(exc))
        except Unsupported as exc:
            return simple(551, str(exc))
        except OSError as exc:  # Flags=Permanent: the key file could not be written
            return simple(551, f"Unable to store the client's credentials: {exc.strerror or exc}")
        return OK

    async def cmd_onion_client_auth_remove(self, command: Command) -> bytes:
        try:
            self.server.target.client_auth_remove(parse_service_id(command.args.removesuffix(".onion")))
        except OnionArgError as exc:
            return simple(exc.code, str(exc))
        except NotFound:
            return simple(251, "Client credentials for this service did not exist")
        except Unsupported as exc:
            return simple(551, str(exc))
        return OK

    async def cmd_onion_client_auth_view(self, command: Command) -> bytes:
        try:
            service_id = (
                parse_service_id(command.args.removesuffix(".onion")) if command.args.strip() else None
            )
            credentials = self.server.target.client_auth_view(service_id)
        except OnionArgError as exc:
            return simple(exc.code, str(exc))
        except Unsupported as exc:
            return simple(551, str(exc))
        return format_reply(250, ["ONION_CLIENT_AUTH_VIEW" + (f" {service_id}" if service_id else ""),
                                  *[f"CLIENT {c}" for c in credentials], "OK"])  # fmt: skip


class _Close(Exception):
    def __init__(self, reply: bytes) -> None:
        super().__init__("close")
        self.reply = reply

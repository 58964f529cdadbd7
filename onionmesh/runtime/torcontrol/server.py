"""The control port's listener: connections, limits, events (control-spec §2-§4 on asyncio).

Bounded everywhere, because anything on the machine can connect: at most `max_connections`
connections and `max_unauthenticated` of them before AUTHENTICATE (which must come within
`auth_timeout`), a line at most MAX_LINE bytes, commands at most `rate` a second per connection
(past the burst the server stops reading: the peer's own socket buffer fills), and at most
`max_output` bytes queued for a controller that does not read its events (then it is closed).
A connection that sends binary or an over-long line gets one `500` line and is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onionmesh.errors import ControlSyntaxError, NotFound, Unsupported
from onionmesh.proto.torcontrol import CommandReader, format_event, simple
from onionmesh.proto.torcontrol_auth import AuthConfig
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.torcontrol.conf import Options
from onionmesh.runtime.torcontrol.getinfo import GetInfo
from onionmesh.runtime.torcontrol.lines import circuit_line, stream_event
from onionmesh.runtime.torcontrol.session import Session
from onionmesh.runtime.torcontrol.target import ControlTarget, Event

log = get_logger("onionmesh.torcontrol")
warn = limited(log)

BW_INTERVAL = 1.0
OWNER_CHECK = 1.0


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    max_unauthenticated: int = 16
    auth_timeout: float = 30.0
    max_line: int = 8192
    max_data: int = 64 * 1024
    rate: float = 100.0  # commands per second per connection, after the burst
    burst: float = 200.0
    max_output: int = 1 << 20  # bytes queued for one controller


class _Conn:
    def __init__(self, server: TorControlServer, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.session = Session(server, self.send)
        self.tokens = server.limits.burst
        self.last = time.monotonic()
        self.closed = False
        self.max_output = server.limits.max_output

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() + len(data) > self.max_output:
            self.closed = True  # a controller that does not read: drop it, never buffer without end
            transport.abort()
            return
        self.writer.write(data)


class TorControlServer:
    def __init__(
        self,
        target: ControlTarget,
        host: str,
        port: int,
        auth: AuthConfig,
        limits: Limits | None = None,
    ) -> None:
        self.target = target
        self.host, self.port = host, port
        self.auth = auth
        self.limits = limits or Limits()
        self.started = time.time()
        self.info = GetInfo(target, self.listeners, lambda: self.options.names(), self.started)
        self.options = Options(target, self._own_options, self._set_own)
        self.owning_pid: int | None = None
        self.conns: set[_Conn] = set()
        self.detached_onions: set[str] = set()  # ADD_ONION Flags=Detach: they outlive their connection
        self.auth_failures = 0
        self.refused_connections = 0
        self.closed_for_syntax = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        # What SIGNAL SHUTDOWN/HALT, TAKEOWNERSHIP and __OwningControllerProcess end: the command
        # (proxy, testnet, relay) sets it to stop its own process; unset, they only log.
        self.on_shutdown: Callable[[], None] | None = None
        # What SAVECONF [FORCE] calls (the command sets it when it read a --config file): writes the
        # options changed at run time back to that file; raises with the reason when it cannot.
        self.save_conf: Callable[[bool], object] | None = None

    # --- life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=self.limits.max_line
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._unsubscribe = self.target.subscribe(self._on_event)
        self._tasks.append(asyncio.create_task(self._bw_loop(), name="torcontrol-bw"))
        self._tasks.append(asyncio.create_task(self._owner_loop(), name="torcontrol-owner"))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.closed = True
            conn.writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    def listeners(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"{host}:{self.port}"]

    # --- options of the control port itself ----------------------------------------------------------
    def _own_options(self) -> dict[str, list[str]]:
        return {
            "ControlPort": self.listeners(),
            "CookieAuthentication": ["1" if self.auth.cookie is not None else "0"],
            "CookieAuthFile": [self.auth.cookie_path] if self.auth.cookie_path else [],
            "HashedControlPassword": list(self.auth.hashed_passwords),
            "__OwningControllerProcess": [str(self.owning_pid)] if self.owning_pid else [],
        }

    def _set_own(self, key: str, value: str | None) -> None:
        if key == "__OwningControllerProcess":
            if value is not None and not value.isdigit():
                raise ValueError("__OwningControllerProcess must be a process id")
            self.owning_pid = int(value) if value else None

    # --- connections -------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unauthenticated = sum(1 for c in self.conns if not c.session.auth.authenticated)
        if (
            len(self.conns) >= self.limits.max_connections
            or unauthenticated >= self.limits.max_unauthenticated
        ):
            self.refused_connections += 1
            warn.warning("control port: too many connections, refusing one")
            writer.transport.abort()
            return
        conn = _Conn(self, writer)
        self.conns.add(conn)
        commands = CommandReader(self.limits.max_line, self.limits.max_data)
        try:
            await self._read_loop(conn, reader, commands)
        except (ConnectionError, OSError):
            pass
        finally:
            self.conns.discard(conn)
            conn.closed = True
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()
            self._closed(conn)

    async def _read_loop(self, conn: _Conn, reader: asyncio.StreamReader, commands: CommandReader) -> None:
        while not conn.closed:
            timeout = None if conn.session.auth.authenticated else self.limits.auth_timeout
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(4096)
            except TimeoutError:
                conn.send(simple(514, "Authentication required."))  # as Tor: not in time
                return
            if not data:
                return
            try:
                batch = commands.feed(data)
            except ControlSyntaxError as exc:
                self.closed_for_syntax += 1
                conn.send(simple(500, f"Protocol error: {exc}"))
                return
            for command in batch:
                await self._take_token(conn)
                reply, close = await conn.session.handle(command)
                conn.send(reply)
                if close or conn.closed:
                    return
            await conn.writer.drain()

    async def _take_token(self, conn: _Conn) -> None:
        now = time.monotonic()
        conn.tokens = min(self.limits.burst, conn.tokens + (now - conn.last) * self.limits.rate)
        conn.last = now
        if conn.tokens < 1.0:
            await asyncio.sleep((1.0 - conn.tokens) / self.limits.rate)
            conn.tokens = 1.0
            conn.last = time.monotonic()
        conn.tokens -= 1.0

    def _closed(self, conn: _Conn) -> None:
        session = conn.session
        for service_id in list(session.onions):  # ADD_ONION without Detach lives as long as its connection
            with contextlib.suppress(NotFound, Unsupported):  # already removed (DEL_ONION), or none here
                self.target.del_onion(service_id)
        if session.owner:
            log.info("control port: the owning controller closed its connection: shutting down")
            self.shutdown()

    # --- events ----------------------------------------------------------------------------------------
    def _broadcast(self, kind: str, text: str) -> None:
        data: bytes | None = None
        for conn in list(self.conns):
            if kind in conn.session.events and conn.session.auth.authenticated:
                data = data or format_event(f"{kind} {text}")
                conn.send(data)

    def conf_changed(self, changed: list[tuple[str, list[str]]]) -> None:
        """`650-CONF_CHANGED` / `650-Key=Value` ... / `650 OK` (control-spec §4.1.18): an option
        set back to its default is its bare name."""
        lines: list[str] = ["CONF_CHANGED"]
        for key, values in changed:
            lines += [f"{key}={v}" for v in values] if values else [key]
        data = format_event([*lines, "OK"])
        for conn in list(self.conns):
            if "CONF_CHANGED" in conn.session.events and conn.session.auth.authenticated:
                conn.send(data)

    def _on_event(self, event: Event) -> None:
        if event.circuit is not None:
            self._broadcast("CIRC", circuit_line(event.circuit))
        elif event.stream is not None:
            self._broadcast("STREAM", stream_event(event.stream))
        else:
            self._broadcast(event.kind, event.text)

    async def signal(self, name: str, session: Session) -> None:
        if name == "NEWNYM":
            self.target.newnym()
        elif name == "HEARTBEAT":
            read, written = self.target.traffic()
            circuits = len(self.target.circuits())
            uptime = int(time.time() - self.started)
            self._broadcast(
                "NOTICE",
                f"Heartbeat: onionmesh has been up for {uptime} seconds, with {circuits} circuits open. "
                f"I've sent {written} bytes and received {read} bytes.",
            )
        elif name in ("SHUTDOWN", "HALT"):
            # after the reply is out, as Tor: the controller reads 250 OK, then the node goes away
            asyncio.get_running_loop().call_later(0.1, self.shutdown)
        else:
            self.target.signal(name)
        self._broadcast("SIGNAL", name)

    def shutdown(self) -> None:
        if self.on_shutdown is None:
            log.warning("control port: shutdown requested, but this process is not stopped from here")
            return
        self.on_shutdown()

    async def _bw_loop(self) -> None:
        last = self.target.traffic()
        while True:
            await asyncio.sleep(BW_INTERVAL)
            now = self.target.traffic()
            if any("BW" in c.session.events for c in self.conns):
                self._broadcast("BW", f"{max(0, now[0] - last[0])} {max(0, now[1] - last[1])}")
            last = now

    async def _owner_loop(self) -> None:
        """__OwningControllerProcess: when that process is gone, the node stops (as Tor)."""
        while True:
            await asyncio.sleep(OWNER_CHECK)
            pid = self.owning_pid
            if pid is None:
                continue
            try:
                os.kill(pid, 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                log.info("control port: the owning controller process is gone: shutting down")
                self.owning_pid = None
                self.shutdown()
            except PermissionError:
                pass


def cookie_auth(cookie: bytes, data_dir: Path, hashed_passwords: tuple[str, ...] = ()) -> AuthConfig:
    """Cookie (and password) authentication with the node's control_auth_cookie."""
    return AuthConfig(
        cookie=cookie, cookie_path=str((Path(data_dir) / "control_auth_cookie").resolve()),
        hashed_passwords=hashed_passwords,
    )  # fmt: skip

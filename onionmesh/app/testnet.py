"""`onionmesh testnet`: a whole mesh on loopback in one command.

N relay processes on distinct loopback addresses (127.1.0.1, 127.2.0.1, ...), at least three of
them exits that accept loopback destinations and nothing else, and a SOCKS proxy in this
process.  The relays form a DHT (the first starts the network, the others bootstrap from it)
and the proxy knows nothing but the bootstrap contacts: it discovers the relays in the DHT.
Writes DIR/testnet.json, prints one line when the mesh carries traffic, and on Ctrl-C, SIGTERM
or SIGHUP (the terminal closed) stops every relay it started (by PID) before it exits.  Killed
outright, it still takes its relays with it: each gets SIGTERM when its parent dies
(PR_SET_PDEATHSIG on Linux) and watches its parent's PID besides (PARENT_ENV).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from onionmesh.app.run import PARENT_ENV
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.geoip import GeoIP
from onionmesh.directory.node_restrictions import NodeRestrictions
from onionmesh.errors import PublicListenerRefused
from onionmesh.runtime.client.node import ClientConfig, ClientNode, public_listeners
from onionmesh.runtime.keystore import private_dir

TESTNET_EXIT_POLICY = "accept 127.0.0.0/8:*; accept [::1]:*; reject *:*"
START_TIMEOUT = 60.0
TESTNET_DHT_REFRESH = 30.0
TESTNET_DIR_EPOCH = 3.0  # the directory's epoch on a testnet (3600 in a real network; --dir-epoch)
BOOTSTRAP_CONTACTS = 3


def relay_host(i: int) -> str:
    """Relay i listens on 127.(i+1).0.1: each relay has its own /16, so path rules apply as elsewhere."""
    return f"127.{i + 1}.0.1"


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when its parent dies (Linux PR_SET_PDEATHSIG).

    Relays run in their own sessions (Ctrl-C in the terminal must not hit them before the testnet
    stops them in order), so nothing else would end them when the testnet is killed or its
    terminal closes.  Elsewhere the relay's own watchdog on PARENT_ENV is the fallback."""

    prctl = None
    if sys.platform.startswith("linux"):  # looked up here: the child between fork and exec only calls
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would tell us
            os._exit(1)

    return preexec


def exits_for(relays: int) -> int:
    return min(relays, max(3, (relays + 1) // 2))


class Testnet:
    def __init__(
        self,
        state_dir: Path,
        relays: int,
        socks: tuple[str, int],
        control: tuple[str, int],
        hops: int = 3,
        log_level: str = "warning",
        relay_args: tuple[str, ...] = (),
        allow_public_listeners: bool = False,
        tor_control: tuple[str, int] | None = ("127.0.0.1", 0),
        hashed_control_password: str | None = None,
        relay_metrics_port: int | None = None,
        dir_epoch: float = TESTNET_DIR_EPOCH,
    ) -> None:
        if not 1 <= relays <= 250:
            raise ValueError("a testnet has 1 to 250 relays")
        self.state_dir = private_dir(Path(state_dir))
        self.n = relays
        self.socks = socks
        self.control = control
        self.hops = min(hops, relays)
        self.log_level = log_level
        self.relay_args = relay_args  # more `onionmesh relay` options for every relay (benchmarks, tests)
        # each relay's /metrics on its own host (relay_host) at this port, so tests can scrape each
        self.relay_metrics_port = relay_metrics_port
        self.allow_public_listeners = allow_public_listeners
        self.tor_control = tor_control
        self.passwords = (hashed_control_password,) if hashed_control_password else ()
        # Short by default so that a proxy with --directory=guards can be tried against the testnet;
        # the testnet's own proxy crawls, so tests that need no directory source pass a long one.
        self.dir_epoch = dir_epoch
        exposed = public_listeners(
            ClientConfig(self.state_dir, socks[0], socks[1], control[0], control[1], torcontrol=tor_control)
        )
        if exposed and not allow_public_listeners:  # before any relay starts
            raise PublicListenerRefused(
                f"refusing to listen on {' and '.join(exposed)}: keep it on loopback, "
                "or pass --allow-public-listeners"
            )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client: ClientNode | None = None
        # The proxy's GeoIP database and node restrictions (--geoip-file, --exit-nodes, ...).
        self.geoip: GeoIP | None = None
        self.restrictions = NodeRestrictions()

    def _relay_args(self, i: int, bootstrap: tuple[str, int] | None) -> list[str]:
        data = self.state_dir / f"relay{i}"
        args = [
            sys.executable, "-m", "onionmesh", "relay",
            "--listen", f"{relay_host(i)}:0",
            "--dht", f"{relay_host(i)}:0",
            "--data-dir", str(data),
            "--nickname", f"testrelay{i}",
            "--log-level", self.log_level,
            "--dir-epoch", str(self.dir_epoch),
        ]  # fmt: skip
        if bootstrap is not None:
            args += ["--bootstrap", f"{bootstrap[0]}:{bootstrap[1]}"]
        if i < exits_for(self.n):
            args += ["--exit-policy", TESTNET_EXIT_POLICY, "--allow-private-destinations"]
            args += ["--exit-policy-udp", TESTNET_EXIT_POLICY]  # UDP, too, to loopback only
        if self.relay_metrics_port is not None:
            args += ["--metrics", f"{relay_host(i)}:{self.relay_metrics_port}"]
        return args + list(self.relay_args)

    async def _wait_descriptors(self, indices: range) -> list[RelayDescriptor]:
        """Wait until the relays have started (each leaves its descriptor in its data directory)."""
        deadline = time.monotonic() + START_TIMEOUT
        paths = [self.state_dir / f"relay{i}" / "descriptor" for i in indices]
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"relay process {proc.pid} exited with {proc.returncode}; see its log")
            if all(p.exists() for p in paths):
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError("relays did not start in time")
        return [RelayDescriptor.decode(base64.b64decode(p.read_text())) for p in paths]

    def _spawn_relay(self, i: int, bootstrap: tuple[str, int] | None) -> None:
        (self.state_dir / f"relay{i}" / "descriptor").unlink(missing_ok=True)
        log = open(self.state_dir / f"relay{i}.log", "ab")  # noqa: SIM115 - handed to the child
        args = self._relay_args(i, bootstrap)
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self.procs.append(
            subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
                preexec_fn=die_with_parent(os.getpid()),
            )
        )
        log.close()

    async def start(self) -> dict[str, object]:
        self._spawn_relay(0, None)  # the first relay starts a new network
        first = (await self._wait_descriptors(range(1)))[0]
        assert first.dht_contact is not None
        for i in range(1, self.n):
            self._spawn_relay(i, first.dht_contact)
        descriptors = [first, *await self._wait_descriptors(range(1, self.n))]
        bootstrap = tuple(d.dht_contact for d in descriptors[:BOOTSTRAP_CONTACTS] if d.dht_contact)
        self.client = ClientNode(
            ClientConfig(
                data_dir=self.state_dir / "client",
                socks_host=self.socks[0],
                socks_port=self.socks[1],
                control_host=self.control[0],
                control_port=self.control[1],
                bootstrap=bootstrap,
                dht_refresh=TESTNET_DHT_REFRESH,
                dir_epoch=self.dir_epoch,
                hops=self.hops,
                allow_public_listeners=self.allow_public_listeners,
                torcontrol=self.tor_control,
                torcontrol_passwords=self.passwords,
            )
        )
        if self.geoip is not None:
            self.client.policy.geoip = self.geoip
        self.client.policy.restrictions = self.restrictions
        await self.client.start()
        await self.client.directory.wait_for(self.n, START_TIMEOUT)
        assert self.client.control is not None
        info = {
            "socks": f"{self.socks[0]}:{self.client.socks.port}",
            "control": f"{self.control[0]}:{self.client.control.port}",
            "cookie": str(self.state_dir / "client" / "control_auth_cookie"),
            # Tor's control protocol (docs/control-port.md); its cookie is the same file
            "torcontrol": self.client.torcontrol.listeners()[0] if self.client.torcontrol else None,
            "bootstrap": [f"{h}:{p}" for h, p in bootstrap],
            "hops": self.hops,
            "relays": [
                {
                    "nickname": d.nickname,
                    "fingerprint": d.fingerprint,
                    "address": f"{d.link_addresses[0][0]}:{d.link_addresses[0][1]}",
                    "exit": d.is_exit,
                    "dht": f"{d.dht_contact[0]}:{d.dht_contact[1]}" if d.dht_contact else None,
                    "pid": proc.pid,
                }
                for d, proc in zip(descriptors, self.procs, strict=True)
            ],
        }
        tmp = self.state_dir / "testnet.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.state_dir / "testnet.json")
        await self.client.wait_ready(START_TIMEOUT)
        return info

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

"""A censor between a client and the onionmesh network, with real hosts in network namespaces.

Topology (namespaces made by this test, removed by it whatever happens; private addresses only):

    client ns  10.240.0.2 --c0/c1-- censor ns (router) --p1/p0-- public ns: relays 10.211-10.213.0.1,
                                        |                                   the bridge 10.214.0.1
                                        +---------w1/w0-------- web ns: 10.230.0.2:8000

The censor crawls the DHT from the public side (`onionmesh dht relays --json`), then drops, on
the client's side only, every listed relay address and every UDP packet to a DHT port (nftables).
Without a bridge the client cannot build a circuit; with the bridge line it fetches the page,
and tcpdump on the censor's client-facing interface sees nothing but TCP between the client
and the bridge's WebSocket port.

Runs as root with `ip`, `nft`, `tcpdump` and `curl`; skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

RELAYS = ("10.211.0.1", "10.212.0.1", "10.213.0.1")
BRIDGE = "10.214.0.1"
BRIDGE_WS_PORT = 8443
CLIENT = "10.240.0.2"
WEB = "10.230.0.2"
WEB_PORT = 8000
DHT_PORT = 4000
EXIT_POLICY = "accept 10.230.0.0/24:*; reject *:*"  # the test's web subnet and nothing else
MARKER = "onionmesh-netns-page"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft", "tcpdump", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install -y iproute2 nftables tcpdump curl; .ci/run does)"
    probe = f"om9probe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    try:
        nft = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"],
            capture_output=True,
            text=True,
        )
        if nft.returncode != 0:
            return f"nftables does not work here: {nft.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Net:
    """The namespaces and processes of one run; `close` removes all of them (processes by PID)."""

    def __init__(self, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {name: f"om9{tag}{name}" for name in ("cli", "cen", "pub", "web")}
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(
        self, ns: str, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns[ns], *cmd], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {ns}: {result.stderr.strip()}")
        return result

    def spawn(self, ns: str, name: str, *cmd: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[ns], *cmd], stdout=log, stderr=subprocess.STDOUT
        )  # `ip netns exec` execs the command: this PID is the command's
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def setup(self) -> None:
        sh = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True)  # noqa: E731
        for ns in self.ns.values():
            sh("netns", "add", ns)
        links = (("cli", "c0", "cen", "c1"), ("pub", "p0", "cen", "p1"), ("web", "w0", "cen", "w1"))
        for a, ia, b, ib in links:
            sh(
                "link",
                "add",
                ia,
                "netns",
                self.ns[a],
                "type",
                "veth",
                "peer",
                "name",
                ib,
                "netns",
                self.ns[b],
            )
        for ns in self.ns:
            self.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            self.run(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            self.run(ns, "ip", "link", "set", "lo", "up")
        addrs = {
            ("cli", "c0"): [f"{CLIENT}/24"],
            ("cen", "c1"): ["10.240.0.1/24"],
            ("cen", "p1"): ["10.250.0.1/24"],
            ("cen", "w1"): ["10.230.0.1/24"],
            ("pub", "p0"): ["10.250.0.2/24", *(f"{a}/32" for a in (*RELAYS, BRIDGE))],
            ("web", "w0"): [f"{WEB}/24"],
        }
        for (ns, dev), items in addrs.items():
            for item in items:
                self.run(ns, "ip", "addr", "add", item, "dev", dev)
            self.run(ns, "ip", "link", "set", dev, "up")
        self.run("cli", "ip", "route", "add", "default", "via", "10.240.0.1")
        self.run("pub", "ip", "route", "add", "default", "via", "10.250.0.1")
        self.run("web", "ip", "route", "add", "default", "via", "10.230.0.1")
        self.run("cen", "ip", "route", "add", "10.208.0.0/12", "via", "10.250.0.2")
        self.run("cen", "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def close(self) -> None:
        for _name, proc in reversed(self.procs):
            self.stop(proc)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def logs(self) -> str:
        out = []
        for name, _proc in self.procs:
            with contextlib.suppress(OSError):
                out.append(
                    f"--- {name}\n" + (self.workdir / f"{name}.log").read_text(errors="replace")[-1500:]
                )
        return "\n".join(out)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    reason = _missing()
    if reason:
        pytest.skip(f"censorship test skipped: {reason}")
    n = Net(tmp_path)
    try:
        n.setup()
        yield n
    finally:
        n.close()


def onionmesh(*args: str) -> list[str]:
    return [sys.executable, "-m", "onionmesh", *args, "--log-level", "warning"]


def wait_for(path: Path, what: str, net: Net, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start\n{net.logs()}")
        time.sleep(0.1)


def wait_for_text(path: Path, text: str, net: Net, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in {path.name}\n{net.logs()}")
        time.sleep(0.1)


def curl(net: Net, max_time: int) -> subprocess.CompletedProcess[str]:
    url = f"http://{WEB}:{WEB_PORT}/"
    args = ("curl", "-sS", "--max-time", str(max_time), "--socks5-hostname", "127.0.0.1:9050", url)
    return net.run("cli", *args, check=False, timeout=max_time + 10)


def start_public_side(net: Net, tmp_path: Path) -> str:
    """Relays (two exits for the web subnet only), a bridge and the web server; the bridge line."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(f"<html><body>{MARKER}</body></html>\n")
    net.spawn("web", "web", sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", WEB, "-d", str(www))
    first = f"{RELAYS[0]}:{DHT_PORT}"
    for i, addr in enumerate(RELAYS):
        args = ["relay", "--listen", f"{addr}:9001", "--dht", f"{addr}:{DHT_PORT}"]
        args += ["--data-dir", str(tmp_path / f"relay{i}"), "--nickname", f"pub{i}"]
        if i:
            args += ["--bootstrap", first]
        if i < 2:
            args += ["--exit-policy", EXIT_POLICY, "--allow-private-destinations"]
        net.spawn("pub", f"relay{i}", *onionmesh(*args))
        if i == 0:
            wait_for(tmp_path / "relay0" / "descriptor", "the first relay", net)
    bridge = ["relay", "--bridge", "--listen", f"{BRIDGE}:9001", "--dht", f"{BRIDGE}:0"]
    bridge += ["--ws-listen", f"{BRIDGE}:{BRIDGE_WS_PORT}", "--data-dir", str(tmp_path / "bridge")]
    bridge += ["--nickname", "bridge", "--bootstrap", first]
    if shutil.which("openssl"):  # wss:// with a self-signed certificate, as a bridge without a front
        cert, key = tmp_path / "bridge-cert.pem", tmp_path / "bridge-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=allotment", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        bridge += ["--tls-cert", str(cert), "--tls-key", str(key)]
    net.spawn("pub", "bridge", *onionmesh(*bridge))
    for i in range(len(RELAYS)):
        wait_for(tmp_path / f"relay{i}" / "descriptor", f"relay {i}", net)
    wait_for(tmp_path / "bridge" / "bridge-line", "the bridge", net)
    return (tmp_path / "bridge" / "bridge-line").read_text().strip()


def censor(net: Net) -> tuple[set[str], set[int]]:
    """What a censor learns by crawling the DHT, turned into nftables rules on the client's side."""
    args = ("dht", "relays", "--bootstrap", f"{RELAYS[0]}:{DHT_PORT}", "--json")
    crawl = net.run("pub", sys.executable, "-m", "onionmesh", *args)
    listed = json.loads(crawl.stdout)
    addresses = {d["address"].rpartition(":")[0] for d in listed} | {
        d["dht"].rpartition(":")[0] for d in listed if d["dht"]
    }
    ports = {int(d["dht"].rpartition(":")[2]) for d in listed if d["dht"]}
    rules = f"""
table inet om_censor {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "c1" udp dport {{ {", ".join(str(p) for p in sorted(ports))} }} counter drop
    iifname "c1" ip daddr {{ {", ".join(sorted(addresses))} }} counter drop
    oifname "c1" ip saddr {{ {", ".join(sorted(addresses))} }} counter drop
  }}
}}
"""
    (net.workdir / "censor.nft").write_text(rules)
    net.run("cen", "nft", "-f", str(net.workdir / "censor.nft"))
    return addresses, ports


def captured_packets(net: Net, pcap: Path) -> list[str]:
    read = subprocess.run(["tcpdump", "-nn", "-r", str(pcap)], capture_output=True, text=True, check=True)
    return [line for line in read.stdout.splitlines() if line.strip()]


def test_a_censor_blocks_the_public_network_but_not_a_bridge(net: Net, tmp_path: Path) -> None:
    started = time.monotonic()
    line = start_public_side(net, tmp_path)
    tls = shutil.which("openssl") is not None
    assert line.startswith(f"webtunnel {'wss' if tls else 'ws'}://{BRIDGE}:{BRIDGE_WS_PORT}/")
    secret = line.split()[1].rpartition("/")[2]
    wait_for_text(tmp_path / "bridge.log", line, net)  # the bridge prints its line once it has started
    blocked, ports = censor(net)
    # The censor probes the bridge actively: no onionmesh port, and a web site, never a handshake.
    scan = f"import socket; socket.create_connection(('{BRIDGE}', 9001), 3)"
    assert net.run("cen", sys.executable, "-c", scan, check=False).returncode != 0, (
        "a bridge has no TCP link port"
    )
    scheme = "https" if tls else "http"
    for path, status in (("/", "200"), ("/" + uuid.uuid4().hex, "404"), ("/" + secret, "404")):
        probe = net.run(
            "cen",
            "curl",
            "-sk",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            f"{scheme}://{BRIDGE}:{BRIDGE_WS_PORT}{path}",
        )
        assert probe.stdout.endswith(status) and "html" in probe.stdout.lower(), (path, probe.stdout[-200:])
    assert set(RELAYS) <= blocked and BRIDGE not in blocked, "the crawl lists the relays, never the bridge"
    assert ports == {DHT_PORT}

    # Without a bridge: the client knows a DHT contact, but nothing it sends gets past the censor.
    plain = ["proxy", "--socks", "127.0.0.1:9050", "--control", "127.0.0.1:9052"]
    plain += ["--data-dir", str(tmp_path / "client-plain"), "--bootstrap", f"{RELAYS[0]}:{DHT_PORT}"]
    proxy = net.spawn("cli", "proxy-plain", *onionmesh(*plain))
    wait_for_text(tmp_path / "proxy-plain.log", "SOCKS5 at", net)
    blocked_try = curl(net, 12)
    assert MARKER not in blocked_try.stdout, "fetched past the censor?"
    # 97: the SOCKS proxy answered but could not connect (no circuit); 28: timed out waiting for one.
    assert blocked_try.returncode in (28, 97), (blocked_try.returncode, blocked_try.stderr)
    net.stop(proxy)
    counters = net.run("cen", "nft", "list", "table", "inet", "om_censor").stdout
    dropped = [int(n) for n in re.findall(r"counter packets (\d+)", counters)]
    assert dropped[0] > 0, f"the censor dropped the client's DHT packets (UDP to DHT ports):\n{counters}"
    (tmp_path / "censor-counters.txt").write_text(counters)

    # With the bridge line: capture the client's side of the censor while it fetches the page.
    pcap = tmp_path / "censor-c1.pcap"
    dump = net.spawn("cen", "tcpdump", "tcpdump", "-i", "c1", "-nn", "-U", "-w", str(pcap))
    time.sleep(1.0)
    bridged = ["proxy", "--socks", "127.0.0.1:9050", "--control", "127.0.0.1:9052"]
    bridged += ["--data-dir", str(tmp_path / "client-bridge"), "--bridge", line]
    net.spawn("cli", "proxy-bridge", *onionmesh(*bridged))
    deadline = time.monotonic() + 45
    page = None
    while time.monotonic() < deadline:
        attempt = curl(net, 15)
        if attempt.returncode == 0 and MARKER in attempt.stdout:
            page = attempt.stdout
            break
        time.sleep(0.5)
    time.sleep(0.5)
    net.stop(dump)
    assert page is not None, f"no page through the bridge\n{net.logs()}"

    packets = captured_packets(net, pcap)
    ip_packets = [p for p in packets if " IP " in p]
    assert ip_packets, "tcpdump saw the bridged fetch"
    bridge_end = f"{BRIDGE}.{BRIDGE_WS_PORT}"
    strays = [
        p for p in ip_packets
        if not ((f"> {bridge_end}:" in p and f" IP {CLIENT}." in p) or (f" IP {bridge_end} > {CLIENT}." in p))
        or "UDP" in p
    ]  # fmt: skip
    assert not strays, "traffic past the censor other than TCP to the bridge's WebSocket port:\n" + "\n".join(
        strays[:20]
    )
    if tls:  # with TLS the censor never sees the secret path, the upgrade or any onionmesh bytes
        raw = pcap.read_bytes()
        assert secret.encode() not in raw and b"websocket" not in raw.lower() and b"Upgrade" not in raw
    non_ip = [p for p in packets if " IP " not in p and " ARP" not in p]
    assert not non_ip, "unexpected non-IP frames: " + "\n".join(non_ip[:10])
    (tmp_path / "capture-summary.txt").write_text(
        f"{len(ip_packets)} IP packets, all {CLIENT} <-> {bridge_end}\n"
    )
    print(counters)
    print("\n".join([*ip_packets[:6], "...", *ip_packets[-3:]]))
    took = time.monotonic() - started
    print(f"capture: {len(ip_packets)} IP packets, all TCP {CLIENT} <-> {bridge_end}; took {took:.1f}s")

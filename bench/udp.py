"""UDP through the mesh (issue 22): round-trip time and datagram loss through 3 hops, as
`name value unit` lines.

Starts `onionmesh testnet`'s relays as separate processes (their exits accept UDP to loopback
only), the proxy in this process (as `onionmesh testnet` runs it), a UDP echo server in its own
process, and a SOCKS5 UDP ASSOCIATE client in its own process (raw RFC 1928, standard library):

  - udp.rtt_ms_*: one datagram of --size bytes at a time, echoed (--pings of them)
  - udp.window<W>_*: --count datagrams of --size bytes with at most W unanswered: loss, RTT
    under that load, datagrams per second
  - udp.blast_*: --count datagrams sent as fast as the client can: loss (what the circuit window,
    the bounded queues and the exit's per-circuit rate (2,000 datagrams/s) let through)

    python bench/udp.py [--relays 5] [--count 10000] [--size 1200] [--window 64] [--pings 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onionmesh.app.run import run
from onionmesh.app.testnet import Testnet
from onionmesh.runtime import safelog

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""


def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
    print(f"udp.{name} {value:{fmt}} {unit}", flush=True)


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# --- the client (its own process) ------------------------------------------------------------------
def associate(socks_port: int, user: str) -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    """UDP ASSOCIATE by hand: (control TCP socket, UDP socket, the proxy's relay address)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind(("127.0.0.1", 0))
    control = socket.create_connection(("127.0.0.1", socks_port), timeout=30)
    raw_user = user.encode()
    control.sendall(b"\x05\x01\x02")
    assert control.recv(2) == b"\x05\x02"
    control.sendall(b"\x01" + bytes([len(raw_user)]) + raw_user + b"\x01x")
    assert control.recv(2) == b"\x01\x00"
    control.sendall(b"\x05\x03\x00\x01\x7f\x00\x00\x01" + udp.getsockname()[1].to_bytes(2, "big"))
    reply = control.recv(10)
    assert reply[1] == 0, f"UDP ASSOCIATE refused: {reply[1]}"
    return control, udp, (socket.inet_ntoa(reply[4:8]), int.from_bytes(reply[8:10], "big"))


def run_client(socks_port: int, echo_port: int, mode: str, count: int, size: int, window: int) -> dict:
    control, udp, relay = associate(socks_port, f"udp-{mode}")
    head = b"\x00\x00\x00\x01\x7f\x00\x00\x01" + echo_port.to_bytes(2, "big")
    pad = os.urandom(max(0, size - 12))
    sent_at: dict[int, float] = {}
    rtts: list[float] = []
    corrupt = 0

    def send(seq: int) -> None:
        sent_at[seq] = time.monotonic()
        udp.sendto(head + seq.to_bytes(4, "big") + b"\x00" * 8 + pad, relay)

    def receive(timeout: float) -> bool:
        nonlocal corrupt
        if not select.select([udp], [], [], timeout)[0]:
            return False
        data = udp.recv(65535)
        seq = int.from_bytes(data[10:14], "big")
        if len(data) != 10 + size or data[22:] != pad or seq not in sent_at:
            corrupt += 1
            return True
        rtts.append(time.monotonic() - sent_at.pop(seq))
        return True

    # the flow opens (a circuit is built, CONNECT_UDP answered) before anything is timed
    send(0xFFFFFFF0)
    while not receive(30):
        send(0xFFFFFFF0)
    rtts.clear()
    sent_at.clear()
    start = time.monotonic()
    if mode == "ping":
        for seq in range(count):
            send(seq)
            receive(2.0)
    elif mode == "window":
        seq = 0
        while seq < count:
            while seq < count and len(sent_at) < window:
                send(seq)
                seq += 1
            if not receive(2.0):
                sent_at.clear()  # nothing for 2 s: what is out is lost
    else:  # blast
        for seq in range(count):
            send(seq)
            while receive(0):
                pass
    last = time.monotonic()
    while sent_at and receive(2.0):
        last = time.monotonic()
    elapsed = last - start
    control.close()
    udp.close()
    return {"sent": count, "received": len(rtts), "corrupt": corrupt, "rtts": rtts, "elapsed": elapsed}


# --- the harness ----------------------------------------------------------------------------------
async def client(socks_port: int, echo_port: int, mode: str, args: argparse.Namespace) -> dict:
    count = args.pings if mode == "ping" else args.count
    cmd = [sys.executable, __file__, "--client", str(socks_port), str(echo_port), mode, str(count),
           str(args.size), str(args.window)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE)
    stdout, _ = await proc.communicate()
    return json.loads(stdout)


async def measure(args: argparse.Namespace) -> None:
    safelog.configure("error")
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        echo_port = int(echo.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="onionmesh-udp-bench-") as tmp:
            net = Testnet(
                Path(tmp) / "net", args.relays, ("127.0.0.1", 0), ("127.0.0.1", 0), log_level="error"
            )
            try:
                info = await net.start()
                socks_port = int(str(info["socks"]).rsplit(":", 1)[1])
                out("hops", 3, "relays", "d")
                ping = await client(socks_port, echo_port, "ping", args)
                rtt = [r * 1000 for r in ping["rtts"]]
                out("rtt_ms_median", statistics.median(rtt), "ms")
                out("rtt_ms_p90", p(rtt, 0.9), "ms")
                out("rtt_loss", ping["sent"] - ping["received"], "datagrams", "d")
                win = await client(socks_port, echo_port, "window", args)
                w = f"window{args.window}"
                rtt = [r * 1000 for r in win["rtts"]]
                out(f"{w}_sent", win["sent"], "datagrams", "d")
                out(f"{w}_lost", win["sent"] - win["received"], "datagrams", "d")
                out(f"{w}_loss_pct", 100 * (win["sent"] - win["received"]) / win["sent"], "%")
                out(f"{w}_corrupt", win["corrupt"], "datagrams", "d")
                out(f"{w}_rtt_ms_median", statistics.median(rtt), "ms")
                out(f"{w}_rtt_ms_p90", p(rtt, 0.9), "ms")
                out(f"{w}_rate", win["received"] / win["elapsed"], "datagrams/s", ".0f")
                out(f"{w}_goodput_MBps", win["received"] * args.size / win["elapsed"] / 1e6, "MB/s")
                assert net.client is not None
                stats = net.client.socks.udp_stats
                dropped = stats.dropped_full
                blast = await client(socks_port, echo_port, "blast", args)
                out("blast_sent", blast["sent"], "datagrams", "d")
                out("blast_lost", blast["sent"] - blast["received"], "datagrams", "d")
                out("blast_loss_pct", 100 * (blast["sent"] - blast["received"]) / blast["sent"], "%")
                out("blast_corrupt", blast["corrupt"], "datagrams", "d")
                # where they went: the proxy's bounded queue (256 per flow) behind the circuit window
                out("blast_dropped_at_proxy", stats.dropped_full - dropped, "datagrams", "d")
            finally:
                await net.stop()
    finally:
        echo.kill()
        echo.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        socks_port, echo_port, mode, count, size, window = sys.argv[2:8]
        print(
            json.dumps(run_client(int(socks_port), int(echo_port), mode, int(count), int(size), int(window)))
        )
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relays", type=int, default=5)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--pings", type=int, default=200)
    run(measure(ap.parse_args()))


if __name__ == "__main__":
    main()

"""Exit streams under a cap (issue 15, item 6): one client cannot take the exit's descriptors.

The exit runs as its own process (`python -m onionmesh relay`, testnet policy, on 127.1.0.1) with
a real RLIMIT_NOFILE of 2,048, so its process and link caps are the defaults derived from that
limit: 1,536 streams per process, 768 per link; the per-circuit cap is set to 300 (the default,
512, is also the client's own limit, so only a hostile client could pass it).  Two clients in
this process reach it over one-hop circuits; the destination is a server on 127.0.0.1 that holds
every connection open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.runtime.client.circuit_handle import StreamFailed
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.relay.exit_limits import StreamCaps, StreamLedger, process_stream_cap
from onionmesh.wire.relay_msg import EndReason

NOFILE = 2048
PER_CIRCUIT = 300
PER_LINK = 768  # half of 2,048 less a quarter
LOOPBACK_POLICY = "accept 127.0.0.0/8:*; accept [::1]:*; reject *:*"


def test_default_caps_follow_the_descriptor_limit() -> None:
    assert process_stream_cap(2048) == 1536 and process_stream_cap(256) == 128
    assert process_stream_cap(65536) == 49152  # a systemd LimitNOFILE: a quarter kept for links
    caps = StreamCaps.derive(per_process=1536)
    assert (caps.per_circuit, caps.per_link, caps.per_process) == (512, 768, 1536)
    assert StreamCaps.derive(per_circuit=10_000, per_process=100).per_circuit == 512


def test_the_ledger_refuses_past_each_cap_and_releases_once() -> None:
    ledger = StreamLedger(StreamCaps(2, 3, 4))
    slots = [ledger.admit("c1", "l1"), ledger.admit("c1", "l1")]
    assert ledger.admit("c1", "l1") == "circuit"
    slots.append(ledger.admit("c2", "l1"))
    assert ledger.admit("c3", "l1") == "link"
    slots.append(ledger.admit("c4", "l2"))
    assert ledger.admit("c5", "l3") == "process"
    for slot in slots:
        assert not isinstance(slot, str)
        slot.release()
        slot.release()  # idempotent
    assert ledger.total == 0 and ledger.by_circuit == {} and ledger.by_link == {}


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def exit_process(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "exit"
    log = open(tmp_path / "exit.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "onionmesh", "relay", "--listen", "127.1.0.1:0", "--data-dir", str(data),
         "--exit-policy", LOOPBACK_POLICY, "--allow-private-destinations", "--log-level", "warning",
         "--max-streams-per-circuit", str(PER_CIRCUIT)],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_descriptors,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 60
        while not (data / "descriptor").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "exit.log").read_text()
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written whole (write_secret renames), but let the DHT settle
        desc = RelayDescriptor.decode(base64.b64decode((data / "descriptor").read_bytes()))
        yield proc, desc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _client(tmp_path: Path, name: str, desc: RelayDescriptor) -> ClientNode:
    client = ClientNode(
        ClientConfig(
            data_dir=tmp_path / name, socks_port=0, control_port=0, bootstrap=(desc.dht_contact,),
            prebuilt_circuits=0, hops=1,
        )
    )  # fmt: skip
    await client.start()
    assert await client.directory.wait_for(1, 30) == 1
    return client


async def _open(client: ClientNode, handle, port: int, n: int) -> list[EndReason | None]:  # type: ignore[no-untyped-def]
    async def one() -> EndReason | None:
        try:
            await client.circuits.streams.open_stream(handle, "127.0.0.1", port, 60)
        except StreamFailed as failed:
            return failed.reason
        return None

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_one_client_gets_resourcelimit_past_the_caps_and_others_keep_working(
    tmp_path: Path, exit_process
) -> None:  # type: ignore[no-untyped-def]
    proc, desc = exit_process
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    baseline = _descriptors(proc.pid)
    greedy = await _client(tmp_path, "greedy", desc)
    other = await _client(tmp_path, "other", desc)
    try:
        first, second, third = [await greedy.circuits.build(hops=1) for _ in range(3)]
        assert first.link is second.link is third.link  # one link from the greedy client to the exit
        results = [await _open(greedy, handle, port, 400) for handle in (first, second, third)]
        # 300 per circuit; 768 per link: the third circuit gets what the link has left
        assert [r.count(None) for r in results] == [PER_CIRCUIT, PER_CIRCUIT, PER_LINK - 2 * PER_CIRCUIT]
        assert {reason for r in results for reason in r} == {None, EndReason.RESOURCELIMIT}
        # another client is served as before: its link, its circuit, every one of its streams
        mine = await other.circuits.build(hops=1)
        assert await _open(other, mine, port, 50) == [None] * 50
        opened = _descriptors(proc.pid) - baseline
        assert opened <= PER_LINK + 50 + 16, opened  # streams held, two links, nothing more
        # The greedy client closes a circuit: its slots come back.
        greedy.circuits.close_circuit(first.number)
        for _ in range(200):
            again = await _open(greedy, third, port, 1)  # was at the link cap
            if again == [None]:
                break
            await asyncio.sleep(0.05)  # the DESTROY is on its way (bounded wait, liveness only)
        assert again == [None]
    finally:
        await greedy.stop()
        await other.stop()
        server.close()
        for w in held:
            with contextlib.suppress(Exception):
                w.close()

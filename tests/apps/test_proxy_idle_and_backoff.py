"""A proxy that knows no relays sleeps (it spun at 100 % of a core) and ends on SIGTERM; builds
against a dead exit back off; guards.json and cbt.json are not rewritten on every failure."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from onionmesh.rng import SystemRng
from onionmesh.runtime.client.path_policy import SAVE_INTERVAL, PathPolicy
from tests.helpers.mesh import start_mesh, stop_mesh

ROOT = Path(__file__).resolve().parents[2]


def _status(control: str, cookie: bytes) -> dict[str, object]:
    headers = {"Authorization": "Cookie " + cookie.hex()}
    req = urllib.request.Request(f"http://{control}/status", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_proxy_that_knows_no_relays_sleeps_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "client"
    proc = subprocess.Popen(
        [sys.executable, "-m", "onionmesh", "proxy", "--bootstrap", "127.0.0.1:1",
         "--socks", "127.0.0.1:0", "--control", "127.0.0.1:0", "--data-dir", str(data),
         "--dht-refresh", "600", "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://([\d.]+:\d+)/login", line)
        assert match, line
        control, cookie = match.group(1), (data / "control_auth_cookie").read_bytes()
        deadline = time.monotonic() + 60
        while _status(control, cookie)["directory_last_crawl"] is None:  # the first crawl finds nothing
            assert time.monotonic() < deadline, "the first crawl never ended"
            time.sleep(0.2)
        first = _status(control, cookie)
        time.sleep(3.0)
        then = _status(control, cookie)
        assert then["relays_known"] == 0
        # About one wake-up a second; the spinning loop made ~20,000 a second.
        assert int(then["prebuild_wakeups"]) - int(first["prebuild_wakeups"]) <= 10, (first, then)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)  # bounded: before the fix SIGTERM was lost and this timed out
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_builds_against_a_dead_exit_back_off(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=3, exits=1)
    try:
        exit_relay = mesh.relays[0]
        await exit_relay.stop()
        client = mesh.client
        client.config.prebuilt_circuits = 2  # the pre-build loop now wants circuits it cannot build
        start = client.prebuild_attempts
        await asyncio.sleep(4.0)
        attempts = client.prebuild_attempts - start
        # Backoff 0.25-0.5 s, doubling: at most ~5 tries in 4 s (without it: 20 a second, 80).
        assert 1 <= attempts <= 8, attempts
    finally:
        mesh.relays.remove(exit_relay)
        await stop_mesh(mesh, extras)


def test_state_files_are_written_only_when_changed_and_at_a_bounded_rate(tmp_path: Path) -> None:
    now = [1000.0]
    policy = PathPolicy(tmp_path, SystemRng(), clock=lambda: now[0])

    class FakeDesc:  # the path entries build_failed reads: a fingerprint
        def __init__(self, fp: str) -> None:
            self.fingerprint = fp

    path = [FakeDesc("A" * 64), FakeDesc("B" * 64), FakeDesc("C" * 64)]
    inodes: set[tuple[int, int]] = set()

    def seen() -> None:
        for name in ("guards.json", "cbt.json"):
            p = tmp_path / name
            if p.exists():
                inodes.add((hash(name), os.stat(p).st_ino))

    for _ in range(50):  # 50 failures in the same instant: one write of each file at most
        policy.build_failed(path, 0, timed_out=True)  # type: ignore[arg-type]
        seen()
    assert len(inodes) <= 2, len(inodes)
    now[0] += SAVE_INTERVAL
    policy.build_failed(path, 0, timed_out=True)  # type: ignore[arg-type]
    seen()
    assert 2 < len(inodes) <= 4
    before = set(inodes)
    now[0] += SAVE_INTERVAL
    policy.save()  # nothing changed since: nothing written
    seen()
    assert inodes == before

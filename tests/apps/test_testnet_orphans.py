"""A testnet takes its relays with it: killed outright (SIGKILL) or its terminal closed (SIGHUP),
no relay process it started stays alive (issue 15, item 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; whoever adopted it reaps it


def _start(state: Path) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "onionmesh", "testnet", "--relays", "3", "--state-dir", str(state),
         "--socks", "127.0.0.1:0", "--control", "127.0.0.1:0", "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "testnet ready" in line, line + proc.stdout.read()
    pids = [r["pid"] for r in json.loads((state / "testnet.json").read_text())["relays"]]
    assert len(pids) == 3 and all(_alive(p) for p in pids)
    return proc, pids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_no_relay_outlives_its_testnet(tmp_path: Path, sig: signal.Signals) -> None:
    proc, pids = _start(tmp_path / "net")
    try:
        proc.send_signal(sig)
        proc.wait(timeout=30)  # bounded: SIGHUP stops it as SIGTERM does
        if sig is signal.SIGHUP:
            assert proc.returncode == 0
        left = _wait_gone(pids, 20)
        assert left == [], f"relays {left} outlived the testnet"
    finally:
        for pid in pids:  # only the relays this test started, by PID
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

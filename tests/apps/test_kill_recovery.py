"""A relay process killed with SIGKILL in the middle of a download, twenty times over.

Each time: the download ends with a clean close (no hang), and new requests succeed again, after at
most one failed try (the recovery time is printed, a figure for the README, not asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.mesh import CRAWL_DIR_EPOCH, http_get_via_socks, socks5_connect
from tests.helpers.testnet import ONIONMESH, free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")

RELAYS = 30
ROUNDS = 20


def control(info: dict, path: str) -> object:
    cookie = Path(info["cookie"]).read_bytes().hex()
    req = urllib.request.Request(
        f"http://{info['control']}{path}", headers={"Authorization": "Cookie " + cookie}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_sigkilled_relays_are_survived(tmp_path: Path, www: tuple[int, Path]) -> None:
    wport, root = www
    port = free_port()
    state = tmp_path / "tn"
    proc = subprocess.Popen(
        [*ONIONMESH, "testnet", "--relays", str(RELAYS), "--socks", f"127.0.0.1:{port}", "--state-dir",
         str(state), "--log-level", "warning", "--dir-epoch", str(CRAWL_DIR_EPOCH)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "ready" in proc.stdout.readline()
        info = json.loads((state / "testnet.json").read_text())
        pid_of = {r["fingerprint"]: r["pid"] for r in info["relays"]}
        bootstrap_fp = info["relays"][0]["fingerprint"]
        small = (root / "m1").read_bytes()
        recoveries: list[float] = []
        failed_tries: list[int] = []
        for round_no in range(ROUNDS):
            result: dict[str, object] = {}

            def download(result: dict[str, object] = result) -> None:
                got = 0
                try:
                    s = socks5_connect(port, "localhost", wport, timeout=20)
                    s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
                    while chunk := s.recv(65536):
                        got += len(chunk)
                    result["end"] = "eof"
                except OSError as exc:
                    result["end"] = type(exc).__name__
                result["bytes"] = got

            thread = threading.Thread(target=download)
            thread.start()
            victim = None
            deadline = time.monotonic() + 10
            while victim is None and time.monotonic() < deadline:
                for circ in control(info, "/circuits"):  # type: ignore[union-attr]
                    if circ["streams"] and circ["bytes_in"] > 200_000:
                        hops = [h["fingerprint"] for h in circ["hops"]]
                        alive = [
                            fp for fp in (hops[1], hops[0], hops[2]) if fp != bootstrap_fp and fp in pid_of
                        ]
                        victim = alive[0] if alive else None
                        break
                time.sleep(0.02)
            assert victim is not None, f"round {round_no}: no download in flight"
            os.kill(pid_of.pop(victim), signal.SIGKILL)
            killed_at = time.monotonic()
            thread.join(15)
            assert not thread.is_alive(), f"round {round_no}: the download hung"
            assert result["bytes"] < 50 * 1024 * 1024 + 1024  # it was cut, not completed after the kill
            # New requests succeed again: counted in failed tries, the wait bounded for liveness only
            # (how long recovery takes is a figure, printed below, not asserted).
            failures, deadline = 0, time.monotonic() + 60
            while True:
                try:
                    if http_get_via_socks(port, "localhost", wport, "/m1", 5) == small:
                        break
                except (OSError, AssertionError):
                    pass
                failures += 1
                assert time.monotonic() < deadline, f"round {round_no}: no recovery"
                time.sleep(0.05)
            recoveries.append(time.monotonic() - killed_at)
            failed_tries.append(failures)
        assert len(recoveries) == ROUNDS
        print(
            f"recovery after SIGKILL: max {max(recoveries):.2f} s, all {[round(r, 2) for r in recoveries]}; "
            f"failed tries before it {failed_tries}"
        )
        # The proxy retries a stream elsewhere itself: a user sees an occasional failed request (a
        # stream attached in the instant before the dead hop's DESTROY arrives), never a run of them.
        # Counts, not times: one run under CI load saw [0 x 18, 1, 2].
        assert max(failed_tries) <= 3 and sum(failed_tries) <= ROUNDS // 4, failed_tries
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

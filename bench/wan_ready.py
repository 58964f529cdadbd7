"""Run inside a delayed network namespace (bench/wan.py --ready does it): how long `onionmesh
testnet --relays 5` takes to become ready, then N fetches of SIZE through it, each checked
byte for byte (SHA-256 against the origin's file), each on a fresh circuit (SOCKS isolation).

Prints `key value` lines: ready.bootstrap_s, ready.fetch_ok (k/N), ready.fetch_s (median, max),
ready.fetch_fail (reasons).  Env: READY_FETCHES (20), READY_MIB (1), READY_TIMEOUT (180).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FETCHES = int(os.environ.get("READY_FETCHES", "20"))
MIB = int(os.environ.get("READY_MIB", "1"))
TIMEOUT = float(os.environ.get("READY_TIMEOUT", "180"))
LOG_LEVEL = os.environ.get("READY_LOG_LEVEL", "info")
CURL_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="omready."))
    www = tmp / "www"
    www.mkdir()
    body = os.urandom(MIB << 20)
    (www / "f.bin").write_bytes(body)
    want = hashlib.sha256(body).hexdigest()
    http_port, socks_port = free_port(), free_port()
    children: list[subprocess.Popen[str]] = []
    try:
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1",
                 "--directory", str(www)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )
        )  # fmt: skip
        t0 = time.monotonic()
        err = (tmp / "testnet.err").open("w")  # kept open for the testnet.s whole life
        testnet = subprocess.Popen(
            [sys.executable, "-m", "onionmesh", "testnet", "--relays", "5", "--socks",
             f"127.0.0.1:{socks_port}", "--state-dir", str(tmp / "net"), "--log-level", LOG_LEVEL],
            stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True,
        )  # fmt: skip
        children.append(testnet)
        ready = threading.Event()

        def reader() -> None:
            assert testnet.stdout is not None
            for line in testnet.stdout:
                if line.startswith("onionmesh testnet ready"):
                    ready.set()

        threading.Thread(target=reader, daemon=True).start()
        while not ready.wait(0.1):
            if testnet.poll() is not None or time.monotonic() - t0 > TIMEOUT:
                print(f"ready.bootstrap_s none (gave up after {time.monotonic() - t0:.0f} s)")
                print("# " + (tmp / "testnet.err").read_text()[-1500:].replace("\n", "\n# "))
                return 1
        print(f"ready.bootstrap_s {time.monotonic() - t0:.1f}", flush=True)
        ok, times, fails = 0, [], []
        for i in range(FETCHES):
            t = time.monotonic()
            r = subprocess.run(
                ["curl", "-s", "--max-time", "120", "--socks5-hostname", f"127.0.0.1:{socks_port}",
                 "--proxy-user", f"fetch{i}:x", f"http://127.0.0.1:{http_port}/f.bin"],
                capture_output=True, env=CURL_ENV,
            )  # fmt: skip
            times.append(time.monotonic() - t)
            if r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == want:
                ok += 1
            else:
                fails.append(f"#{i}: curl rc={r.returncode} got {len(r.stdout)} bytes")
        print(f"ready.fetch_ok {ok}/{FETCHES}")
        print(f"ready.fetch_s {statistics.median(times):.1f} (max {max(times):.1f})")
        print(f"ready.fetch_fail {'; '.join(fails) or 'none'}")
        return 0 if ok == FETCHES else 1
    finally:
        for child in children:
            if child.poll() is None:
                if child is children[-1]:
                    os.killpg(child.pid, signal.SIGTERM)
                else:
                    child.terminate()
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()


if __name__ == "__main__":
    sys.exit(main())

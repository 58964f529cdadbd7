"""The acceptance path as a user walks it: `onionmesh testnet` in a subprocess, curl and pysocks through it,
`onionmesh circuit build/list`, then SIGTERM and no process left behind."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.mesh import CRAWL_DIR_EPOCH, http_get_via_socks
from tests.helpers.testnet import ONIONMESH, free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, subprocess.Popen[str]]]:
    state = tmp_path_factory.mktemp("tn")
    port = free_port()
    proc = subprocess.Popen(
        [*ONIONMESH, "testnet", "--relays", "5", "--socks", f"127.0.0.1:{port}", "--state-dir", str(state),
         "--log-level", "warning", "--dir-epoch", str(CRAWL_DIR_EPOCH)],  # its proxy crawls
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "ready" in line or proc.poll() is not None:
            break
    assert "onionmesh testnet ready" in lines[-1], "".join(lines)
    yield port, state, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_testnet_json_describes_the_mesh(testnet: tuple[int, Path, subprocess.Popen[str]]) -> None:
    port, state, _ = testnet
    info = json.loads((state / "testnet.json").read_text())
    assert info["socks"] == f"127.0.0.1:{port}"
    assert len(info["relays"]) == 5
    assert sum(r["exit"] for r in info["relays"]) >= 3
    assert len({r["address"].rsplit(":", 1)[0] for r in info["relays"]}) == 5  # distinct loopback addresses
    cookie = Path(info["cookie"])
    assert cookie.stat().st_mode & 0o777 == 0o600
    assert (state / "relay0" / "keys").stat().st_mode & 0o777 == 0o700
    assert (state / "relay0" / "keys" / "identity_ed25519").stat().st_mode & 0o777 == 0o600


def test_the_dir_epoch_reaches_every_relay(testnet: tuple[int, Path, subprocess.Popen[str]]) -> None:
    """`onionmesh testnet --dir-epoch` is its relays' epoch (one network, one epoch)."""
    _, _, proc = testnet
    children = [
        int(pid)
        for task in Path(f"/proc/{proc.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    relays = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
    relays = [argv for argv in relays if b"relay" in argv]
    assert len(relays) == 5
    assert all(argv[argv.index(b"--dir-epoch") + 1] == str(CRAWL_DIR_EPOCH).encode() for argv in relays)


def test_curl_50_mib_byte_identical(
    testnet: tuple[int, Path, subprocess.Popen[str]], www: tuple[int, Path]
) -> None:
    port, _, _ = testnet
    wport, root = www
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "120", "--socks5-hostname", f"127.0.0.1:{port}",
         f"http://localhost:{wport}/blob"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert hashlib.sha256(out).digest() == hashlib.sha256((root / "blob").read_bytes()).digest()


def test_pysocks_and_100_concurrent_fetches(
    testnet: tuple[int, Path, subprocess.Popen[str]], www: tuple[int, Path]
) -> None:
    port, _, _ = testnet
    wport, root = www
    assert http_get_via_socks(port, "localhost", wport, "/blob", timeout=120) == (root / "blob").read_bytes()
    want = (root / "m1").read_bytes()
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        bodies = list(
            pool.map(lambda _: http_get_via_socks(port, "localhost", wport, "/m1", 120), range(100))
        )
    assert sum(b == want for b in bodies) == 100


def test_circuit_build_and_list(testnet: tuple[int, Path, subprocess.Popen[str]]) -> None:
    _, state, _ = testnet
    built = subprocess.run(
        [*ONIONMESH, "circuit", "--testnet", str(state), "--json", "build", "--hops", "4"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    circuit = json.loads(built.stdout)
    assert len(circuit["hops"]) == 4
    listed = subprocess.run(
        [*ONIONMESH, "circuit", "--testnet", str(state), "list"], capture_output=True, text=True, check=True
    )
    assert f"\n{circuit['id']:>4}  open" in listed.stdout
    closed = subprocess.run(
        [*ONIONMESH, "circuit", "--testnet", str(state), "close", str(circuit["id"])],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "closed" in closed.stdout
    # Without a cookie, the control API answers 401 and the CLI says so.
    info = json.loads((state / "testnet.json").read_text())
    bad = subprocess.run(
        [*ONIONMESH, "circuit", "--control", info["control"], "--data-dir", str(state), "list"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "cookie" in bad.stderr


def _carriers(state: Path) -> set[int]:
    """Circuits that have carried at least a megabyte."""
    listed = subprocess.run(
        [*ONIONMESH, "circuit", "--testnet", str(state), "--json", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {c["id"] for c in json.loads(listed.stdout) if c["bytes_in"] >= 1024 * 1024}


def test_circuit_new_moves_the_next_fetch_to_a_new_circuit(
    testnet: tuple[int, Path, subprocess.Popen[str]], www: tuple[int, Path]
) -> None:
    port, state, _ = testnet
    wport, root = www
    assert http_get_via_socks(port, "localhost", wport, "/m1", 30) == (root / "m1").read_bytes()
    before = _carriers(state)
    assert before
    new = subprocess.run(
        [*ONIONMESH, "circuit", "--testnet", str(state), "new"], capture_output=True, text=True, check=True
    )
    assert "new identity" in new.stdout
    assert http_get_via_socks(port, "localhost", wport, "/m1", 30) == (root / "m1").read_bytes()
    assert _carriers(state) - before  # a circuit that did not carry the first fetch carried this one


def test_a_second_proxy_uses_the_same_relays(
    testnet: tuple[int, Path, subprocess.Popen[str]], www: tuple[int, Path], tmp_path: Path
) -> None:
    _, state, _ = testnet
    wport, root = www
    port, control = free_port(), free_port()
    proxy = subprocess.Popen(
        [*ONIONMESH, "proxy", "--socks", f"127.0.0.1:{port}", "--control", f"127.0.0.1:{control}",
         "--data-dir", str(tmp_path / "p2"),
        "--bootstrap", json.loads((state / "testnet.json").read_text())["bootstrap"][0],
         "--log-level", "warning"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                body = http_get_via_socks(port, "localhost", wport, "/m1", 30)
            except OSError:
                time.sleep(0.2)
        assert body == (root / "m1").read_bytes()
        assert (tmp_path / "p2").stat().st_mode & 0o777 == 0o700
    finally:
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(20) == 0


def test_relay_with_a_bad_exit_policy_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ONIONMESH, "relay", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "r"),
         "--exit-policy", "accept *:99999"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--exit-policy" in result.stderr and "99999" in result.stderr and "Traceback" not in result.stderr


def test_a_twenty_relay_testnet_finds_its_relays_only_in_the_dht(
    tmp_path: Path, www: tuple[int, Path]
) -> None:
    wport, root = www
    port = free_port()
    state = tmp_path / "tn20"
    proc = subprocess.Popen(
        [*ONIONMESH, "testnet", "--relays", "20", "--socks", f"127.0.0.1:{port}", "--state-dir", str(state),
         "--log-level", "warning", "--dir-epoch", str(CRAWL_DIR_EPOCH)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "onionmesh testnet ready" in line, line
        info = json.loads((state / "testnet.json").read_text())
        assert len(info["bootstrap"]) >= 1
        assert not (state / "descriptors.json").exists()  # no relay list is handed to the proxy
        status = subprocess.run(
            [*ONIONMESH, "circuit", "--testnet", str(state), "--json", "list"], capture_output=True, text=True
        )
        assert status.returncode == 0
        assert http_get_via_socks(port, "localhost", wport, "/m1", 60) == (root / "m1").read_bytes()
        relays = subprocess.run(
            [*ONIONMESH, "dht", "relays", "--bootstrap", info["bootstrap"][0], "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = {r["fingerprint"] for r in json.loads(relays.stdout)}
        assert found == {r["fingerprint"] for r in info["relays"]}
        one = info["relays"][7]["fingerprint"]
        looked = subprocess.run(
            [*ONIONMESH, "dht", "lookup", one, "--bootstrap", info["bootstrap"][1], "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(looked.stdout)["fingerprint"] == one
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_circuit_show_and_test(
    testnet: tuple[int, Path, subprocess.Popen[str]], www: tuple[int, Path]
) -> None:
    _, state, _ = testnet
    wport, _root = www
    base = [*ONIONMESH, "circuit", "--testnet", str(state)]
    result = subprocess.run([*base, "--json", "build", "--hops", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    shown = subprocess.run(
        [*base, "show", str(built["id"])], capture_output=True, text=True, check=True
    ).stdout
    assert "hop 1 guard" in shown and "hop 3 exit" in shown and " ms" in shown
    shown_json = json.loads(
        subprocess.run(
            [*base, "--json", "show", str(built["id"])], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [h["fingerprint"] for h in shown_json["hops"]] == [h["fingerprint"] for h in built["hops"]]
    tested = subprocess.run(
        [*base, "--json", "test", "--url", f"http://localhost:{wport}/m1"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(tested.stdout)
    assert report["bytes"] > 1024 * 1024 and report["throughput_MBps"] > 0 and report["circuit"]["hops"]
    table = subprocess.run([*base, "test"], capture_output=True, text=True, check=True).stdout
    assert "hop 1" in table and "give --url" in table
    missing = subprocess.run([*base, "show", "99999"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no such circuit" in missing.stderr


def test_relay_metrics_endpoint_parses_and_moves(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port, metrics = free_port(), free_port()
    relay = subprocess.Popen(
        [*ONIONMESH, "relay", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "r"),
         "--metrics", f"127.0.0.1:{metrics}", "--log-level", "warning"],
    )  # fmt: skip
    try:

        def scrape() -> dict[str, float]:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                        text = r.read().decode()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "no metrics endpoint"
                    time.sleep(0.1)
            return {s.name + str(sorted(s.labels.items())): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip

        before = scrape()
        assert before["onionmesh_up[]"] == 1
        with socket.create_connection(("127.0.0.1", port)) as s:  # garbage on the link port
            s.sendall(b"not a link handshake" * 10)
            s.recv(10)
        after = scrape()
        assert (
            after["onionmesh_process_cpu_seconds_total[]"] >= before["onionmesh_process_cpu_seconds_total[]"]
        )
        key = "onionmesh_relay_link_bytes_total[('direction', 'in')]"
        assert after[key] >= before[key] + 64  # the junk link's bytes were counted, and stay counted
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(20)


def test_sigterm_leaves_no_process_behind(testnet: tuple[int, Path, subprocess.Popen[str]]) -> None:
    _, state, proc = testnet
    pids = [r["pid"] for r in json.loads((state / "testnet.json").read_text())["relays"]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

"""nyx, under tmux, draws its bandwidth graph and its connection list from the control port."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.torcontrol import control_port, needs_curl


def _relay_in(line: str) -> tuple[str, str]:
    """(fingerprint, nickname) as a line of nyx's connection page shows a relay."""
    words = line.split()
    at = next((i for i, w in enumerate(words) if re.fullmatch(r"[0-9A-F]{40}", w)), None)
    return (words[at], words[at + 1]) if at is not None and at + 1 < len(words) else ("", "")


@pytest.mark.skipif(
    shutil.which("nyx") is None or shutil.which("tmux") is None, reason="nyx and tmux are needed"
)
@needs_curl
def test_nyx_draws_its_bandwidth_graph_and_connection_list(
    testnet: dict[str, object], www: tuple[int, bytes], tmp_path: Path
) -> None:
    sock = tmp_path / "tmux.sock"
    home = tmp_path / "home"
    home.mkdir()
    tmux = ["tmux", "-S", str(sock)]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "nyx", "-x", "200", "-y", "50",
         f"HOME={home} TERM=xterm COLUMNS=200 LINES=50 nyx -i 127.0.0.1:{control_port(testnet)}"],
        check=True,
    )  # fmt: skip
    # nyx drops the purpose, fingerprint and nickname columns in a window narrower than ~150
    # columns, and curses may read the detached session's first size (80x24): COLUMNS/LINES (above)
    # pin it, as the window's own size
    subprocess.run([*tmux, "resize-window", "-t", "nyx", "-x", "200", "-y", "50"], check=True)
    try:
        url = f"http://127.0.0.1:{www[0]}/page"
        capture = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            curl = ["curl", "-sS", "--max-time", "20", "--socks5-hostname", str(testnet["socks"])]
            subprocess.run([*curl, url, "-o", os.devnull], check=True)
            time.sleep(1.5)
            capture = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "nyx"], capture_output=True, text=True
            ).stdout
            if (
                "Bandwidth" in capture
                and "avg:" in capture
                and "total: 0.0 B" not in capture.split("Upload")[0]
            ):
                break
        (tmp_path / "nyx-graph.txt").write_text(capture)  # the artefact
        assert "Tor 0.4.8.10" in capture and "Bandwidth" in capture and "Download" in capture
        assert "Control Port (password)" in capture  # nyx shows the strongest method offered
        subprocess.run([*tmux, "send-keys", "-t", "nyx", "Right"], check=True)
        relays = {r["fingerprint"]: r["nickname"] for r in testnet["relays"]}  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        listing = ""
        while time.monotonic() < deadline:
            time.sleep(1)
            listing = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "nyx"], capture_output=True, text=True
            ).stdout
            if "(CIRCUIT)" in listing and "3 / End" in listing and any(n in listing for n in relays.values()):
                break
        (tmp_path / "nyx-connections.txt").write_text(listing)  # the artefact
        assert "Connections (" in listing and "(CONTROL)" in listing
        # the circuits, each with its relays as fingerprint and nickname, guard to exit ...
        assert "(CIRCUIT)" in listing and "Purpose: General, Circuit ID: " in listing, listing
        hops = [
            _relay_in(line) for line in listing.splitlines() if line.rstrip().endswith(("/ Guard", "/ End"))
        ]
        assert hops and all(relays.get(fp) == nick for fp, nick in hops), listing
        # ... and the proxy's own connections to its guards, found through ns/all (relay ORPorts)
        ours = [
            _relay_in(line)
            for line in listing.splitlines()
            if line.rstrip().endswith("(OUTBOUND)") and line.lstrip().startswith("127.0.0.1:")
        ]
        assert ours and all(relays.get(fp) == nick for fp, nick in ours), listing
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)

"""What the Tor control port tests (tests/apps/tor_control/) share: Debian's stem and txtorcon run
under /usr/bin/python3 as subprocesses; each test skips with the reason when its client is missing
(.ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENTS = Path(__file__).resolve().parents[1] / "apps" / "torcontrol_clients"
STEM_PW_HASH = "16:8C423A41EF4A542C6078985270AE28A4E04D056FB63F9F201505DB8E06"  # "pw", stem's test torrc


def _has(module: str) -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0


needs_stem = pytest.mark.skipif(
    not _has("stem"), reason="python3-stem is not installed (apt-get install python3-stem)"
)
needs_txtorcon = pytest.mark.skipif(
    not _has("txtorcon"), reason="python3-txtorcon is not installed (apt-get install python3-txtorcon)"
)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")


def control_port(info: dict[str, object]) -> int:
    return int(str(info["torcontrol"]).rsplit(":", 1)[1])


def stem(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` under Debian's python3 (with stem) with `args`."""
    return subprocess.run([SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=timeout)

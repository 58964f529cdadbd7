"""The client's layer-2 vanguards on disk: DATA_DIR/vanguards.json (0600), as guards.json.

directory.vanguards decides; this file only loads and saves, so that a restart keeps the same
layer-2 set (a fresh set on every restart would let whoever can crash a service rotate them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from onionmesh.directory.vanguards import VanguardSet
from onionmesh.rng import Rng
from onionmesh.runtime.keystore import write_secret

STATE_NAME = "vanguards.json"


def load_vanguards(data_dir: Path | None, rng: Rng) -> VanguardSet:
    """The saved set, or an empty one (no file, unreadable, junk)."""
    text = ""
    if data_dir is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (Path(data_dir) / STATE_NAME).read_text(encoding="utf-8")
    return VanguardSet.from_json(text, rng=rng)


def save_vanguards(data_dir: Path | None, vanguards: VanguardSet) -> None:
    if data_dir is not None:
        write_secret(Path(data_dir) / STATE_NAME, vanguards.to_json().encode())

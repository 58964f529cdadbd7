"""The client's view of the relays, read from a file of signed descriptors.

Until the DHT directory lands, the testnet writes every relay's descriptor into one file;
the client verifies each (signature, onion-key certificate, freshness) and ignores the bad ones.
"""

from __future__ import annotations

import time
from pathlib import Path

from onionmesh.directory.descriptor import RelayDescriptor, decode_descriptor_file
from onionmesh.runtime.safelog import get_logger

log = get_logger("onionmesh.directory")


def load_directory_file(path: Path, now: float | None = None) -> list[RelayDescriptor]:
    text = Path(path).read_text(encoding="utf-8")
    descriptors, errors = decode_descriptor_file(text, time.time() if now is None else now)
    for error in errors[:10]:
        log.warning("descriptor rejected", error=error)
    return descriptors

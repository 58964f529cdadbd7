"""The directory file: a JSON list of signed relay descriptors (base64), as the local testnet
shares them before the DHT exists and as a client caches what it knows.  Each entry is checked
like a descriptor from the DHT (`decode_and_verify`); a bad entry is skipped, not fatal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN, RelayDescriptor, decode_and_verify
from onionmesh.errors import DirectoryError, OnionmeshError

DIRECTORY_FILE_VERSION = 1
MAX_DIRECTORY_FILE_LEN = 4 * 1024 * 1024
MAX_DIRECTORY_ENTRIES = 10_000
_MAX_B64_LEN = 4 * ((MAX_DESCRIPTOR_LEN + 2) // 3)


def encode_descriptor_file(descs: Iterable[RelayDescriptor]) -> str:
    entries = [base64.b64encode(d.encode()).decode("ascii") for d in descs]
    if len(entries) > MAX_DIRECTORY_ENTRIES:
        raise ValueError("too many descriptors for one directory file")
    return json.dumps({"version": DIRECTORY_FILE_VERSION, "descriptors": entries}, indent=1) + "\n"


def decode_descriptor_file(text: str, now: float) -> tuple[list[RelayDescriptor], list[str]]:
    """Valid descriptors (newest per identity, file order) and one short error per bad entry.

    Bad entries are skipped; only an unreadable file as a whole raises DirectoryError.
    """
    if len(text) > MAX_DIRECTORY_FILE_LEN:
        raise DirectoryError("directory file too large")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DirectoryError("directory file is not JSON") from exc
    if (
        not isinstance(doc, dict)
        or doc.get("version") is True
        or doc.get("version") != DIRECTORY_FILE_VERSION
    ):
        raise DirectoryError("unknown directory file version")
    entries = doc.get("descriptors")
    if not isinstance(entries, list):
        raise DirectoryError("directory file has no descriptor list")
    if len(entries) > MAX_DIRECTORY_ENTRIES:
        raise DirectoryError("too many descriptors in directory file")
    kept: dict[bytes, tuple[int, RelayDescriptor]] = {}
    errors: list[str] = []
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, str) or len(entry) > _MAX_B64_LEN:
                raise DirectoryError("not a descriptor string")
            try:
                raw = base64.b64decode(entry, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DirectoryError("bad base64") from exc
            desc = decode_and_verify(raw, now)
        except OnionmeshError as exc:
            errors.append(f"entry {i}: {exc}")
            continue
        old = kept.get(desc.identity_pk)
        if old is None or desc.newer_than(old[1]):
            if old is not None:
                errors.append(f"entry {old[0]}: superseded by a newer descriptor for {desc.fingerprint}")
            kept[desc.identity_pk] = (i, desc)
        else:
            errors.append(f"entry {i}: not newer than entry {old[0]} for {desc.fingerprint}")
    return [desc for _, desc in sorted(kept.values(), key=lambda item: item[0])], errors

"""Key files in a data directory: created on first start, private to the operator.

Layout: DATA_DIR (0700) / keys / identity_ed25519 (the 32-byte seed), onion_x25519 and
onion_x25519.old (32-byte secret + u64 creation time), all 0600.  The onion key rotates every
`rotation` seconds; the previous one stays accepted for `grace` seconds so that clients holding
an older descriptor can still build circuits.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.errors import InsecurePermissions
from onionmesh.rng import Rng

ONION_ROTATION = 7 * 24 * 3600
ONION_GRACE = 7 * 24 * 3600


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; refuse an existing one that others may use."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise InsecurePermissions(
                f"{path} has mode {mode:04o}; others may read it. Fix it with: chmod 700 {path}"
            )
        return path
    try:
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:  # one line for the user, not a traceback
        raise OSError(exc.errno, f"cannot create the data directory {path}: {exc.strerror or exc}") from None
    return path


def check_secret(path: Path) -> None:
    """Refuse a secret file that group or others may read or write, or that someone else owns."""
    st = path.stat()
    mode = st.st_mode & 0o777
    if mode & 0o077:
        raise InsecurePermissions(
            f"{path} has mode {mode:04o}; it must be 0600. Fix it with: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InsecurePermissions(f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()})")


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600 from the first byte on.

    The temporary file has a fresh random name and is created with O_EXCL|O_NOFOLLOW: a file or
    a symlink planted in the directory (say a 0644 `NAME.tmp`, or one pointing elsewhere) is never
    written through, and the mode is 0600 whatever the umask or an earlier file said.
    """
    path = Path(path)
    legacy = path.with_name(path.name + ".tmp")  # what older versions left behind: never reuse it
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        if not stat.S_ISDIR(os.lstat(legacy).st_mode):
            os.unlink(legacy)  # unlink removes a symlink itself, never its target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # rename replaces a symlink at `path` itself, not its target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class OnionKeyEntry:
    key: OnionKey
    since: int  # the current key: when it was created; the previous key: when it was retired


class KeyStore:
    def __init__(
        self, data_dir: Path, rng: Rng, *, rotation: int = ONION_ROTATION, grace: int = ONION_GRACE
    ) -> None:
        private_dir(Path(data_dir))
        self.dir = private_dir(Path(data_dir) / "keys")
        self.rng = rng
        self.rotation = rotation
        self.grace = grace
        self.identity = self._load_identity()
        self.current, self.previous = self._load_onion()

    def _load_identity(self) -> IdentityKey:
        path = self.dir / "identity_ed25519"
        if path.exists():
            check_secret(path)
            return IdentityKey(path.read_bytes())
        key = IdentityKey.generate(self.rng)
        write_secret(path, key.seed)
        return key

    def _read_onion(self, path: Path) -> OnionKeyEntry | None:
        if not path.exists():
            return None
        check_secret(path)
        raw = path.read_bytes()
        if len(raw) != 40:
            return None
        return OnionKeyEntry(OnionKey(raw[:32]), int.from_bytes(raw[32:], "big"))

    def _save_onion(self, path: Path, entry: OnionKeyEntry) -> None:
        write_secret(path, entry.key.secret + entry.since.to_bytes(8, "big"))

    def _load_onion(self) -> tuple[OnionKeyEntry, OnionKeyEntry | None]:
        current = self._read_onion(self.dir / "onion_x25519")
        if current is None:
            current = OnionKeyEntry(OnionKey.generate(self.rng), int(time.time()))
            self._save_onion(self.dir / "onion_x25519", current)
        return current, self._read_onion(self.dir / "onion_x25519.old")

    def maybe_rotate(self, now: float) -> bool:
        """Rotate the onion key when it is due; True if it changed (the descriptor must be republished).

        The retired key stays accepted for `grace` seconds from its retirement, so that clients
        holding the previous descriptor can still build circuits.
        """
        if self.previous and now - self.previous.since > self.grace:
            self.previous = None
            (self.dir / "onion_x25519.old").unlink(missing_ok=True)
        if now - self.current.since < self.rotation:
            return False
        self.previous = OnionKeyEntry(self.current.key, int(now))
        self._save_onion(self.dir / "onion_x25519.old", self.previous)
        self.current = OnionKeyEntry(OnionKey.generate(self.rng), int(now))
        self._save_onion(self.dir / "onion_x25519", self.current)
        return True

    def onion_secret_for(self, onion_pk: bytes) -> bytes | None:
        """The secret for a public onion key we still accept (current, or previous within grace)."""
        for entry in (self.current, self.previous):
            if entry is not None and entry.key.public == onion_pk:
                return entry.key.secret
        return None

    def onion_cert(self) -> OnionKeyCert:
        created = self.current.since
        return OnionKeyCert.issue(
            self.identity, self.current.key.public, created - 3600, created + self.rotation + self.grace
        )

"""Who is who: the users file (UNET3D_USERS_FILE), one `name:hash` per line, hashed with scrypt (RFC 7914).

Hashes are PHC strings, `$scrypt$ln=17,r=8,p=1$<salt>$<key>` (base64 without padding): OWASP's minimum for scrypt
(N=2^17, r=8, p=1: about 128 MiB and a few tenths of a second per check, which is the point). The parameters travel
with each hash, so a later cost change leaves old lines valid. The file is re-read when it changes; a successful
check is remembered for a few minutes under a keyed digest, so that a reviewer's every click does not pay the KDF.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from unet3d.errors import ParameterError

from .schemas import MAX_NAME

LOG2_N, BLOCK_SIZE, PARALLELISM, KEY_BYTES, SALT_BYTES = 17, 8, 1, 32, 16
MAX_LOG2_N = 20  # a hash asking for more memory than 1 GiB is refused, not computed
REMEMBER_S = 300.0
_NAME = re.compile(r"^[^\x00-\x1f\x7f:]+$")
_PHC = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


class UsersFileError(ParameterError):
    """The users file cannot be read or has a malformed line."""


def check_user_name(name: str) -> str:
    """A user or reviewer name: 1 to 100 characters, no colon (the file's separator), no control characters.

    Raises:
        ParameterError: the name breaks one of those rules.
    """
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME or not _NAME.match(cleaned):
        raise ParameterError(
            f"a name must be 1 to {MAX_NAME} characters without ':' or control characters, got {name[:60]!r}"
        )
    return cleaned


def hash_password(password: str, *, log2_n: int = LOG2_N) -> str:
    """A PHC-format scrypt hash of `password` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, log2_n, BLOCK_SIZE, PARALLELISM)
    return f"$scrypt$ln={log2_n},r={BLOCK_SIZE},p={PARALLELISM}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches a hash from `hash_password` (constant-time comparison)."""
    match = _PHC.match(encoded)
    if match is None:
        return False
    log2_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    expected = _unb64(match.group(5))
    return hmac.compare_digest(_scrypt(password, _unb64(match.group(4)), log2_n, r, p, len(expected)), expected)


def add_user(path: Path, name: str, password: str) -> bool:
    """Add `name` to the users file, or replace its password; returns True when the name was new.

    The file is rewritten atomically (temp file, fsync, rename) with mode 0600.
    """
    name = check_user_name(name)
    if not password:
        raise ParameterError("the password is empty: choose one")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    entry = f"{name}:{hash_password(password)}"
    kept = [line for line in lines if line.partition(":")[0].strip() != name]
    is_new = len(kept) == len(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write("\n".join([*kept, entry]) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return is_new


@dataclass
class UserDirectory:
    """The users file, re-read when it changes; `verify` is the one password check (HTTP and the UI login)."""

    path: Path
    _hashes: dict[str, str] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _remembered: dict[bytes, float] = field(default_factory=dict)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, name: str, password: str) -> bool:
        """Whether `name` is in the file with this password."""
        hashes = self._current()
        token = hmac.new(self._secret, f"{name}\0{password}\0{hashes.get(name, '')}".encode(), "sha256").digest()
        now = time.monotonic()
        with self._lock:
            if self._remembered.get(token, 0.0) > now:
                return True
        encoded = hashes.get(name)
        # An unknown name costs the same KDF as a known one: timing does not tell which names exist.
        valid = verify_password(password, encoded or _DUMMY_HASH) and encoded is not None
        if valid:
            with self._lock:
                if len(self._remembered) > 4096:
                    self._remembered = {k: t for k, t in self._remembered.items() if t > now}
                self._remembered[token] = now + REMEMBER_S
        return valid

    def names(self) -> list[str]:
        """The users in the file, in file order."""
        return list(self._current())

    def _current(self) -> dict[str, str]:
        try:
            status = self.path.stat()
        except OSError as e:
            raise UsersFileError(f"cannot read UNET3D_USERS_FILE {self.path}: {e.strerror}") from e
        stamp = (status.st_mtime_ns, status.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._hashes = _parse(self.path)
                self._stamp = stamp
            return self._hashes


def _parse(path: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, encoded = line.partition(":")
        if not colon or not _PHC.match(encoded.strip()):
            raise UsersFileError(
                f"{path} line {number} is not 'name:$scrypt$...': add users with `unet3d users add NAME`"
            )
        hashes[name.strip()] = encoded.strip()
    return hashes


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int = KEY_BYTES) -> bytes:
    memory = 128 * r * (2**log2_n) * p + 1024 * 1024  # what scrypt needs, plus OpenSSL's bookkeeping
    return hashlib.scrypt(password.encode(), salt=salt, n=2**log2_n, r=r, p=p, maxmem=memory * 2, dklen=length)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


_DUMMY_HASH = f"$scrypt$ln={LOG2_N},r={BLOCK_SIZE},p={PARALLELISM}${_b64(bytes(SALT_BYTES))}${_b64(bytes(KEY_BYTES))}"

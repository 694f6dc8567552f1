"""TCP-MD5 keys for the BGP sessions (RFC 2385, issue 19 defect 10): one per session, derived
from a per-lab secret that the lab generates into its run directory at prepare time, so that
no key is ever committed and every lab run has its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

SECRET_FILE = "bgp.secret"
SECRET_LEN = 32
KEY_CHARS = 32  # RFC 2385 keys are at most 80 octets in Linux; 32 base64 characters is 192 bits


class BgpKeyError(Exception):
    """The lab's BGP secret is missing or malformed."""


def session_key(secret: bytes, a: str, b: str) -> str:
    """The key of the session between nodes ``a`` and ``b``: the same from either end."""
    low, high = sorted((a, b))
    digest = hmac.new(secret, f"bgp|{low}|{high}".encode("ascii"), hashlib.sha256).digest()
    # URL-safe: no '/' or '+' that a config parser might treat specially; 32 of the 44
    # characters carry no padding.
    return base64.urlsafe_b64encode(digest).decode("ascii")[:KEY_CHARS]


def new_lab_secret(directory: Path) -> bytes:
    """A fresh secret for this lab run, written to ``directory`` (mode 0600)."""
    path = directory / SECRET_FILE
    path.unlink(missing_ok=True)
    secret = os.urandom(SECRET_LEN)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret


def read_lab_secret(directory: Path) -> bytes:
    """The secret a running lab made in ``directory`` (for tools that check its sessions)."""
    path = directory / SECRET_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BgpKeyError(f"{path}: {exc.strerror}") from None
    if len(data) != SECRET_LEN:
        raise BgpKeyError(f"{path}: {len(data)} octets, not {SECRET_LEN}")
    return data

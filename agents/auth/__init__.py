"""One-message public-key authentication (draft-mccann-dmm-flatarch sections 3 and 4).

Public surface: suites and published keys, the key store (secure environment), the
authenticator UDP service, the peer client, and the typed errors.
"""

from . import errors
from .authenticator import DEFAULT_PORT, Authenticator, AuthResult, Limits, OnAuthenticated
from .errors import *  # noqa: F403 - every typed error is public, as errors.__all__ lists
from .keys import (
    KeyChangeSource,
    KeyResolver,
    PublishedKey,
    StaticDirectory,
    Suite,
    load_public_key,
    normalize_name,
)
from .keystore import KeyStore, Role
from .messages import AddressLike, MsgType, Prefix
from .peer import Peer, PeerSession

__all__ = [
    "DEFAULT_PORT", "AddressLike", "AuthResult", "Authenticator", "KeyChangeSource",
    "KeyResolver", "KeyStore", "Limits", "MsgType", "OnAuthenticated", "Peer", "PeerSession",
    "Prefix", "PublishedKey", "Role", "StaticDirectory", "Suite", "load_public_key",
    "normalize_name",
]
__all__ += errors.__all__

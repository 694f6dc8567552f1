"""One-message public-key authentication (draft-mccann-dmm-flatarch sections 3 and 4).

Public surface: suites and published keys, the key store (secure environment), the
authenticator UDP service, the peer client, and the typed errors.
"""

from .authenticator import DEFAULT_PORT, Authenticator, AuthResult, Limits, OnAuthenticated
from .errors import (
    AuthError,
    AuthRejected,
    AuthTimeout,
    BadCookie,
    BadMac,
    BadNonce,
    BadVersion,
    KeyMismatch,
    KeyResolutionError,
    MalformedMessage,
    Oversized,
    RateLimited,
    Replay,
    StaleMessage,
    Truncated,
    UnknownSession,
    UnknownType,
    UnsupportedSuite,
    WrongAuthenticator,
)
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
    "DEFAULT_PORT", "AddressLike", "AuthError", "AuthRejected", "AuthResult", "AuthTimeout",
    "Authenticator", "BadCookie", "BadMac", "BadNonce", "BadVersion",
    "KeyChangeSource", "KeyMismatch", "KeyResolutionError", "KeyResolver", "KeyStore", "Limits",
    "MalformedMessage", "MsgType", "OnAuthenticated", "Oversized", "Peer", "PeerSession",
    "Prefix", "PublishedKey", "RateLimited", "Replay", "Role", "StaleMessage",
    "StaticDirectory", "Suite", "Truncated", "UnknownSession", "UnknownType",
    "UnsupportedSuite", "WrongAuthenticator", "load_public_key", "normalize_name",
]

"""Typed errors of the one-message authentication protocol.

Every failure the library can detect is an ``AuthError`` subclass so that the service can log
a precise reason while answering the network with one generic failure reply.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base class of every authentication failure."""


class MalformedMessage(AuthError):
    """The bytes do not form a valid message (bad field, bad encoding, trailing bytes)."""


class Truncated(MalformedMessage):
    """The message is shorter than its fields require."""


class Oversized(MalformedMessage):
    """The message is longer than any valid message of its type."""


class UnknownType(MalformedMessage):
    """The message type code is not one this endpoint accepts."""


class BadVersion(AuthError):
    """The protocol version byte is not 1."""


class UnsupportedSuite(AuthError):
    """The cipher suite is unknown or differs from the one this identity uses."""


class BadMac(AuthError):
    """The HMAC does not verify."""


class Replay(AuthError):
    """The message was already accepted, or is older than one already accepted."""


class StaleMessage(Replay):
    """The replay-protection timestamp lies outside the accepted window."""


class BadNonce(AuthError):
    """The authenticator nonce is not one this authenticator published."""


class WrongAuthenticator(AuthError):
    """The message names a different authenticator."""


class KeyResolutionError(AuthError):
    """The name has no valid published key."""


class KeyMismatch(AuthError):
    """A published key does not belong to the name, or does not fit the suite."""


class RateLimited(AuthError):
    """The source exceeded its rate, or the service is saturated."""


class BadCookie(AuthError):
    """The message carries a cookie that does not verify for its source."""


class UnknownSession(AuthError):
    """The session id is not known (expired, evicted, or never created)."""


class AuthTimeout(AuthError):
    """No valid answer arrived before the deadline."""


class AuthRejected(AuthError):
    """The other side answered with the generic (unauthenticated) failure message."""


__all__ = [
    "AuthError", "AuthRejected", "AuthTimeout", "BadCookie", "BadMac", "BadNonce", "BadVersion",
    "KeyMismatch", "KeyResolutionError", "MalformedMessage", "Oversized", "RateLimited",
    "Replay", "StaleMessage", "Truncated", "UnknownSession", "UnknownType", "UnsupportedSuite",
    "WrongAuthenticator",
]

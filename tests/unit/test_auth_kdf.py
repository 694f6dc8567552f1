"""The hashlib KDF and truncated HMAC are byte-identical to cryptography's ConcatKDFHash and
the hmac module, and every calling function has its own label.
"""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.auth import kdf


@settings(max_examples=200, deadline=None)
@given(z=st.binary(min_size=1, max_size=64),
       label=st.sampled_from(kdf.LABELS),
       ctx=st.binary(max_size=600))
def test_hashlib_kdf_equals_concat_kdf(z: bytes, label: bytes, ctx: bytes) -> None:
    assert kdf.kdf(z, kdf.algorithm_id(label), ctx) == kdf.reference_kdf(z, label, ctx)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=130), data=st.binary(max_size=1000))
def test_tag_is_truncated_hmac_sha256(key: bytes, data: bytes) -> None:
    assert kdf.tag(key, data) == hmac.new(key, data, hashlib.sha256).digest()[:16]


def test_labels_unique_and_prefix_free() -> None:
    labels = kdf.LABELS
    assert len(set(labels)) == len(labels)
    for a in labels:
        for b in labels:
            assert a == b or not b.startswith(a)
    assert kdf.ALG_MSK == b"\x0fFLATARCH-v1 MSK"


def test_context_layout() -> None:
    ctx = kdf.context(b"mn", b"\x01" * 16, b"ar1", b"\x02" * 16, 1)
    assert ctx == b"\x02mn" + b"\x01" * 16 + b"\x03ar1" + b"\x02" * 16 + b"\x01\x01\x00"
    assert kdf.with_auth_nonce(ctx, b"\x03" * 16) == kdf.context(b"mn", b"\x01" * 16, b"ar1",
                                                                 b"\x03" * 16, 1)
    assert kdf.with_nonces(ctx, 2, b"\x04" * 16, b"\x05" * 16) == kdf.context(
        b"mn", b"\x04" * 16, b"ar1", b"\x05" * 16, 1)

"""Provisioning of the lab's identities: one key pair per AR, HA and MN name.

Private keys are written once, 0600, into the owning node's run directory (the lab's
stand-in for a SIM or an AR's HSM); only the SPKI goes to the DNS plane. A population's
keys are made in one pass into one 0600 file for the one process that runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agents.auth.keys import Suite, spki_of
from topologies.model import Role, Topology, fqdn

NONCE_VALIDITY_S = 3600

Roles = Literal["ar", "ha", "mn"]


@dataclass(frozen=True)
class Identity:
    """A named entity whose bare public key the DNS publishes (draft 3)."""

    name: str  # FQDN without trailing dot
    suite: Suite
    spki: bytes  # DER SubjectPublicKeyInfo
    role: Roles
    nonce: bytes | None = None  # authenticators' session nonce (draft 5, item 1)
    nonce_expires: int | None = None
    address: IPv4Address | None = None  # MNs' initial A record; ARs/HAs default from topo
    # A population MN (issue 15): published in its home domain's one zone, not a zone of
    # its own, so that the DNS plane signs one zone however many MNs there are.
    bulk: bool = False

POPULATION_DIR = "population"  # the population agent's run directory (agents/population.py)
POPULATION_KEYS = "keys.json"  # every population MN's private key: {name: PEM}


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_secret(path, _pem(key))


def population_keys_path(labdir: Path) -> Path:
    return labdir / POPULATION_DIR / POPULATION_KEYS


def provision_population(topo: Topology, labdir: Path) -> list[Identity]:
    """One key pair per population MN, generated in one pass; the private halves go into
    one file (population_keys_path), the public ones to the DNS plane as bulk identities."""
    private: dict[str, str] = {}
    out: list[Identity] = []
    for mn, mobile in topo.population_nodes.items():
        key = ec.generate_private_key(ec.SECP256R1())
        name = fqdn("mn", mn)
        private[name] = _pem(key).decode()
        out.append(Identity(name=name, suite=Suite.P256, spki=spki_of(key.public_key()),
                            role="mn", address=mobile.address, bulk=True))
    if private:
        _write_secret(population_keys_path(labdir), json.dumps(private).encode())
    return out


def key_path(node_dir: Path) -> Path:
    return node_dir / "identity.pem"


def nonce_path(node_dir: Path) -> Path:
    """The published session nonce, so the authenticator serves the one DNS publishes."""
    return node_dir / "identity.nonce"


def provision(topo: Topology, labdir: Path) -> list[Identity]:
    """Generate a P-256 key per AR, HA and MN; return what DNS must publish."""
    out: list[Identity] = []
    entities: list[tuple[str, Roles]] = [(n.name, "ar") for n in topo.by_role(Role.AR)]
    entities += [(n.name, "ha") for n in topo.nodes.values() if n.service == "ha"]
    entities += [(mn, "mn") for mn in topo.mobiles]
    expires = int(time.time()) + NONCE_VALIDITY_S
    first_address = {mn: topo.mobile(mn).address for mn in topo.mobiles}
    for node, role in entities:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(key_path(labdir / node), key)
        spki = spki_of(key.public_key())
        name = fqdn(role, node)
        authenticator = role in ("ar", "ha")
        nonce = secrets.token_bytes(16) if authenticator else None
        if nonce is not None:
            nonce_path(labdir / node).write_text(f"{nonce.hex()} {expires}\n")
        out.append(
            Identity(
                name=name, suite=Suite.P256, spki=spki, role=role,
                nonce=nonce,
                nonce_expires=expires if authenticator else None,
                address=first_address.get(node),
            )
        )
    return out + provision_population(topo, labdir)


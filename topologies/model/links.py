"""Link attributes (delay, jitter, loss, rate) from the topology YAML: per link (the mapping
form of a `links:` entry), per role pair (`link_profiles:`), per named profile (`profiles:`,
used as `distance: NAME`) and per service attachment (`services.X.link`); the home network's
distance (`home:`) and named distance sets (`distances:`, laid over a document by
`with_distance`).

Every bad value is named with its path, all of them at once, in one TopologyError.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import TopologyError

ATTRS = ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")
_LIMITS = {"delay_ms": (0.0, 10_000.0), "jitter_ms": (0.0, 10_000.0),
           "loss_pct": (0.0, 100.0), "rate_mbit": (0.001, 100_000.0)}


@dataclass(frozen=True)
class LinkAttributes:
    """What one direction of a link does to its packets; None: not configured. The delay is
    one-way: a link with delay_ms 5 adds 10 ms to a round trip over it."""

    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None
    rate_mbit: float | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in ATTRS)

    @property
    def delayed(self) -> bool:
        return bool(self.delay_ms) or bool(self.jitter_ms)

    def over(self, base: LinkAttributes) -> LinkAttributes:
        """These attributes, each unset one taken from ``base``."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def as_dict(self) -> dict[str, float]:
        return {f: v for f in ATTRS if (v := getattr(self, f)) is not None}


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def raise_any(self) -> None:
        if self.items:
            raise TopologyError("; ".join(self.items))


def _attrs(raw: Any, where: str, profiles: Mapping[str, LinkAttributes], errs: _Errors,
           extra: Iterable[str] = ()) -> LinkAttributes:
    """Attributes from a mapping: the four numbers and `distance: PROFILE`; keys in
    ``extra`` belong to the caller and are skipped."""
    if not isinstance(raw, dict):
        errs.add(f"{where}: expected a mapping of {', '.join(ATTRS)} or distance")
        return LinkAttributes()
    base = LinkAttributes()
    values: dict[str, float] = {}
    for key, val in raw.items():
        path = f"{where}.{key}"
        if key in extra:
            continue
        if key == "distance":
            if not isinstance(val, str) or val not in profiles:
                known = ", ".join(sorted(profiles)) or "none defined"
                errs.add(f"{path}: unknown profile {val!r} (profiles: {known})")
            else:
                base = profiles[val]
            continue
        if key not in _LIMITS:
            errs.add(f"{path}: unknown key (expected {', '.join(ATTRS)} or distance)")
            continue
        lo, hi = _LIMITS[key]
        if isinstance(val, bool) or not isinstance(val, int | float) or not lo <= val <= hi:
            errs.add(f"{path}: expected a number in [{lo:g}, {hi:g}], got {val!r}")
            continue
        values[key] = float(val)
    if "loss_pct" in values and values["loss_pct"] >= 100.0:
        errs.add(f"{where}.loss_pct: 100 would cut the link; use at most 99.9")
    out = LinkAttributes(**values).over(base)
    if (out.jitter_ms or 0.0) > (out.delay_ms or 0.0):
        errs.add(f"{where}.jitter_ms: {out.jitter_ms:g} exceeds delay_ms {out.delay_ms or 0:g}"
                 " (a packet cannot leave before it arrives)")
    return out


def link_between(entry: Any, where: str) -> tuple[Any, dict[str, Any] | None]:
    """A `links:` entry: a pair of names, or a mapping {between: [a, b], ...attributes}.
    Returns the pair (for the caller's own checks) and the mapping, if any."""
    if isinstance(entry, dict):
        if "between" not in entry:
            raise TopologyError(f"{where}: a mapping entry needs 'between: [a, b]'")
        return entry["between"], entry
    return entry, None


@dataclass(frozen=True)
class LinkSpec:
    """The attributes the YAML asks for, before they are laid on interfaces."""

    profiles: dict[str, LinkAttributes]
    role_pairs: dict[frozenset[str], LinkAttributes]
    per_link: dict[frozenset[str], LinkAttributes]  # explicit links and service attachments
    home: LinkAttributes = LinkAttributes()  # between the ISP and the MNs' home network


def parse(doc: Mapping[str, Any], roles: Iterable[str]) -> LinkSpec:
    """Profiles, role pairs, per-link and per-service attributes of a topology document;
    ``roles`` are the names a role pair may use (roles and service names)."""
    errs = _Errors()
    profiles: dict[str, LinkAttributes] = {}
    raw_profiles = doc.get("profiles") or {}
    if not isinstance(raw_profiles, dict):
        errs.add("profiles: expected a mapping of name -> attributes")
        raw_profiles = {}
    for name, raw in raw_profiles.items():
        profiles[str(name)] = _attrs(raw, f"profiles.{name}", {}, errs)
    known = set(roles)
    role_pairs: dict[frozenset[str], LinkAttributes] = {}
    raw_pairs = doc.get("link_profiles") or {}
    if not isinstance(raw_pairs, dict):
        errs.add("link_profiles: expected a mapping of ROLE-ROLE -> attributes")
        raw_pairs = {}
    for key, raw in raw_pairs.items():
        where = f"link_profiles.{key}"
        parts = str(key).split("-")
        if len(parts) != 2 or not set(parts) <= known:
            errs.add(f"{where}: expected ROLE-ROLE with roles from {', '.join(sorted(known))}")
            continue
        pair = frozenset(parts)
        if pair in role_pairs:
            errs.add(f"{where}: the pair is given twice")
        role_pairs[pair] = _attrs(raw, where, profiles, errs)
    per_link: dict[frozenset[str], LinkAttributes] = {}
    for i, entry in enumerate(doc.get("links") or []):
        if isinstance(entry, dict) and isinstance(entry.get("between"), list):
            pair = frozenset(str(n) for n in entry["between"])
            per_link[pair] = _attrs(entry, f"links[{i}]", profiles, errs, extra=("between",))
    services = doc.get("services") or {}
    if isinstance(services, dict):
        for svc, sdoc in services.items():
            if isinstance(sdoc, dict) and "link" in sdoc:
                host, attach = str(sdoc.get("name", svc)), str(sdoc.get("attach"))
                per_link[frozenset((host, attach))] = _attrs(
                    sdoc["link"], f"services.{svc}.link", profiles, errs)
    home = _home(doc.get("home"), profiles, errs)
    errs.raise_any()
    return LinkSpec(profiles, role_pairs, per_link, home)


HOME_ATTRS = ("delay_ms", "jitter_ms")


def _home(raw: Any, profiles: Mapping[str, LinkAttributes], errs: _Errors) -> LinkAttributes:
    """`home:`: how far the MNs' home network (their home zones' server, the anchored
    baseline's HSS) is from the ISP. Delay and jitter only: the home servers share nodes
    with the ISP's own, so their packets are told apart by flow, not by interface."""
    if raw is None:
        return LinkAttributes()
    out = _attrs(raw, "home", profiles, errs)
    for key in ("loss_pct", "rate_mbit"):
        if getattr(out, key) is not None:
            errs.add(f"home.{key}: the home network's distance takes "
                     f"{' and '.join(HOME_ATTRS)} only")
    return out


DISTANCE_KEYS = ("link_profiles", "home")


def with_distance(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The document with its named distance set `distances.NAME` laid over it: the set's
    `link_profiles` over the document's (pair by pair) and its `home`. The result is a
    plain topology document again (no `distances:` left), so a run can keep it as is."""
    sets = doc.get("distances") or {}
    if not isinstance(sets, dict):
        raise TopologyError("distances: expected a mapping of name -> {link_profiles, home}")
    if name not in sets:
        known = ", ".join(sorted(str(k) for k in sets)) or "none defined"
        raise TopologyError(f"distance {name!r}: no such set under distances: ({known})")
    chosen = sets[name]
    where = f"distances.{name}"
    if not isinstance(chosen, dict):
        raise TopologyError(f"{where}: expected a mapping with {' and/or '.join(DISTANCE_KEYS)}")
    unknown = sorted(str(k) for k in chosen if k not in DISTANCE_KEYS)
    if unknown:
        raise TopologyError(f"{where}.{unknown[0]}: unknown key "
                            f"(expected {' or '.join(DISTANCE_KEYS)})")
    pairs = chosen.get("link_profiles") or {}
    if not isinstance(pairs, dict):
        raise TopologyError(f"{where}.link_profiles: expected a mapping of ROLE-ROLE -> "
                            "attributes")
    out = {k: v for k, v in doc.items() if k != "distances"}
    out["link_profiles"] = {**(doc.get("link_profiles") or {}), **pairs}
    if "home" in chosen:
        out["home"] = chosen["home"]
    out["distance"] = name
    return out


def resolve(spec: LinkSpec, links: Iterable[tuple[str, str, str, str]],
            role_of: Mapping[str, tuple[str, ...]]) -> dict[tuple[str, str], LinkAttributes]:
    """Each direction's attributes, keyed (node, interface) of the sending end.

    ``links`` are (a, a's interface, b, b's interface); ``role_of`` names what a node may be
    called in a role pair (its role, and its service for a host), most specific first. An
    explicit link's attributes are laid over its role pair's; both directions get the same.
    """
    out: dict[tuple[str, str], LinkAttributes] = {}
    for a, ia, b, ib in links:
        attrs = LinkAttributes()
        for ra in reversed(role_of[a]):
            for rb in reversed(role_of[b]):
                pair = spec.role_pairs.get(frozenset((ra, rb)))
                if pair is not None:
                    attrs = pair.over(attrs)
        explicit = spec.per_link.get(frozenset((a, b)))
        if explicit is not None:
            attrs = explicit.over(attrs)
        if not attrs.empty:
            out[(a, ia)] = out[(b, ib)] = attrs
    return out

"""What our own dockerd can leave in the host, outside its own data and exec directories:
the stand-in plugin's bridges and veths, the image build's directory, mounts, cgroups, and
the few host paths dockerd and containerd write whatever their flags say. The end-of-run
leak check (tests/conftest.py) compares this before and after a run with the Docker test,
and that test removes what its dockerd created (tests/integration/test_kathara_docker.py).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

PROCESSES = {"dockerd", "containerd", "containerd-shim", "runc", "docker-proxy"}
# The stand-in plugin's names (tests/integration/katharanp/driver.py) and Docker's own.
LINK = re.compile(r"^(k[tec][0-9a-f]{12}|docker0|docker_gwbridge)$")
# Our dockerd's root (the test's temporary directory) and the image build's directory.
WORK_GLOBS = ("/tmp/flatarch-kathara-*", "/var/tmp/flatarch-image.*")
# Written by dockerd 20.10 (its trust key), containerd's shims (their sockets' directory)
# and the plugin discovery, whatever --data-root and --exec-root say.
HOST_PATHS = ("/etc/docker/key.json", "/run/containerd/s", "/run/containerd",
              "/run/docker/plugins", "/run/docker")
CGROUP = re.compile(r"docker|moby|plugins|containerd|flatarch-kathara")


def links(ip_link_output: str) -> set[str]:
    """The Docker side's interfaces in `ip -o link` output."""
    names = {ln.split(": ")[1].split("@")[0] for ln in ip_link_output.splitlines()
             if ": " in ln}
    return {n for n in names if LINK.match(n)}


def cgroups() -> set[str]:
    """Docker's cgroups (containers', plugins' and their parents), cgroup v1 or v2."""
    out: set[str] = set()
    for pattern in ("*", "*/*", "*/*/*"):
        out.update(str(p) for p in Path("/sys/fs/cgroup").glob(pattern)
                   if p.is_dir() and CGROUP.search(p.name))
    return out


def host_paths() -> set[str]:
    return {p for p in HOST_PATHS if Path(p).exists()}


def snapshot(ip_link_output: str) -> dict[str, set[str]]:
    mounts = {ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if "flatarch-kathara-" in ln or "flatarch-image." in ln}
    work = {str(p) for g in WORK_GLOBS for p in Path("/").glob(g.lstrip("/"))}
    return {"docker_links": links(ip_link_output), "docker_mounts": mounts,
            "docker_dirs": work | host_paths(), "docker_cgroups": cgroups()}


def remove_created(before_paths: set[str], before_cgroups: set[str]) -> None:
    """Remove what our dockerd created in the host once it has exited: the host paths and
    cgroups that were not there before it started (empty directories by then; deepest
    first, so a parent follows its children)."""
    for name in HOST_PATHS:
        p = Path(name)
        if name in before_paths or not p.exists():
            continue
        if p.is_dir():
            with contextlib.suppress(OSError):  # not empty: the leak check names it
                p.rmdir()
        else:
            p.unlink()
    for name in sorted(cgroups() - before_cgroups, key=len, reverse=True):
        with contextlib.suppress(OSError):  # a cgroup goes with rmdir once it has no task
            Path(name).rmdir()

"""The files of an export: the lab renders and dry-runs every config and generates every
key exactly as for our own engine (Lab.prepare), into a staging directory, and each file is
then copied under its node with the paths it has inside the image.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath

from topologies.export.plan import (
    DEFAULT_MODE,
    IMAGE_PYTHON,
    IMAGE_ROOT,
    MODES_FILE,
    ExportPlan,
    check_staged,
    lab_dir,
    rundir,
)
from topologies.lab.lab import Lab, Progress, stderr_progress
from topologies.model import Topology

ROOT = Path(__file__).resolve().parents[2]


class _StagingLab(Lab):
    """A lab that only prepares: no machine lock (it builds nothing), its own directory."""

    def __init__(self, topo: Topology, where: Path, progress: Progress) -> None:
        super().__init__(topo, progress=progress)
        self.dir = where

    def _take_lock(self) -> None:
        """Preparing builds no namespace: it may run beside another lab."""


def relocate(text: str, stage: Path, topo: Topology) -> str:
    """A staged file as the image sees it: the staging directory is the lab's run
    directory, this checkout and its interpreter are the image's."""
    return (text.replace(str(stage), str(lab_dir(topo)))
            .replace(sys.executable, IMAGE_PYTHON).replace(str(ROOT), str(IMAGE_ROOT)))


def stage(topo: Topology, plan: ExportPlan, dest: dict[str, Path],
          progress: Progress = stderr_progress) -> None:
    """Prepare the lab and copy each node's run directory to ``dest[node]``, relocated;
    the staging directory is removed, whatever happens."""
    with tempfile.TemporaryDirectory(prefix="flatarch-export-") as tmp:
        where = Path(tmp) / topo.name
        lab = _StagingLab(topo, where, progress)
        lab.prepare()
        check_staged(plan, {n: [d.kind for d in ds] for n, ds in lab.daemons.items()})
        for node, target in dest.items():
            _copy_tree(where / node, target, where, topo, rundir(topo, node))


def _copy_tree(src: Path, dst: Path, stage_dir: Path, topo: Topology,
               in_container: PurePosixPath) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    modes: list[str] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        out = dst / rel
        if path.is_dir():
            out.mkdir(exist_ok=True)
            continue
        data = path.read_bytes()
        try:
            out.write_text(relocate(data.decode(), stage_dir, topo))
        except UnicodeDecodeError:
            out.write_bytes(data)
        shutil.copymode(path, out)
        mode = path.stat().st_mode & 0o7777
        if mode != DEFAULT_MODE:
            modes.append(f"{mode:o} {in_container / rel.as_posix()}\n")
    (dst / MODES_FILE).write_text("".join(modes))


def in_image(path: PurePosixPath) -> PurePosixPath:
    """A container path as a path under a device directory (Kathará copies it to /)."""
    return path.relative_to("/")

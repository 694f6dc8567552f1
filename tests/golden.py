"""Golden-file comparison shared by the template tests: a rendered text must equal its file
under tests/golden/; UPDATE_GOLDEN=1 rewrites the files after an intended change.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs from the rendered file"

"""Atomic JSON files: the only way the local fleet writes a file another process reads.

Owns write-to-temp-then-rename (a reader sees the old file or the new one, never half of
one) and reads that tolerate a file that vanished. Must not know what the files mean.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_json", "remove", "write_json"]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file starts with a dot so directory scanners skip it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist (or vanished while being read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)

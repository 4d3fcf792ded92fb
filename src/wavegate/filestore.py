"""Small, safe JSON files: the only way wavegate writes a file another thread or process reads.

Owns write-to-temp-then-rename (a reader sees the old file or the new one, never half of one;
a unique temporary per writer, since threads of one process write the same files), reading
with one rule for a missing file (the caller says whether that is fine), and an exclusive
`flock` around read-modify-write steps (so two wavegate processes never both win a
compare-and-set). Must not know what the files mean.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["exclusive", "read_json", "remove", "write_json", "write_text"]


def write_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


def write_text(path: Path, text: str, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file starts with a dot so directory scanners skip it.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            output.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json(path: Path, *, missing_ok: bool = False) -> Any:
    """The parsed file. A missing file raises FileNotFoundError, or is None if `missing_ok`
    (a file another process removes, like an agent's state, may vanish between two looks)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    return json.loads(text)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""The one file store: atomic JSON writes, and one rule for a missing file."""

from __future__ import annotations

from pathlib import Path

import pytest

from wavegate import filestore


def test_a_written_file_reads_back_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "status" / "Deployment.library.web.json"
    filestore.write_json(path, {"replicas": 3}, mode=0o600)
    assert filestore.read_json(path) == {"replicas": 3}
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_missing_file_is_an_error_unless_the_caller_says_it_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    with pytest.raises(FileNotFoundError):
        filestore.read_json(path)
    assert filestore.read_json(path, missing_ok=True) is None


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "lock.json"
    filestore.write_json(path, {"holder": "run-1"})
    with pytest.raises(TypeError):
        filestore.write_json(path, {"holder": object()})
    assert filestore.read_json(path) == {"holder": "run-1"}
    assert [p.name for p in tmp_path.iterdir()] == ["lock.json"]

"""Where the kube sandbox's binaries are cached: the build script and the sandbox agree.

The cache's name changes whenever the build makes something different (a patched vendored
package), so a machine holding binaries of an older build builds again instead of running
them. Both sides must name the same folder, or every e2e test would skip (or fail in CI).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from wavegate.sandbox import controlplane

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-kube-sandbox.sh"


def _script_cache(home: Path) -> Path:
    """The cache folder the build script fills, from its own assignments, run by bash."""
    assignments = [line for line in SCRIPT.read_text().splitlines()
                   if re.match(r"(KUBE_VERSION|CACHE)=", line)]
    env = {k: v for k, v in os.environ.items() if k != "WAVEGATE_KUBE_CACHE"}
    done = subprocess.run(["bash", "-c", "\n".join([*assignments, 'echo "$CACHE"'])],
                          env={**env, "HOME": str(home)}, capture_output=True, text=True,
                          check=True)
    return Path(done.stdout.strip())


def _fill(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True)
    for name in controlplane.BINARIES:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)


def test_the_sandbox_runs_what_the_build_script_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WAVEGATE_KUBE_CACHE", raising=False)
    built = _script_cache(tmp_path)
    assert built.parent == tmp_path / ".cache" / "wavegate"
    _fill(built / "bin")
    assert controlplane.find_binaries() == built / "bin"


def test_binaries_of_the_build_before_reflect2_was_patched_are_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WAVEGATE_KUBE_CACHE", raising=False)
    _fill(tmp_path / ".cache" / "wavegate" / "kube-v1.20.2" / "bin")
    assert controlplane.find_binaries() is None
    assert _script_cache(tmp_path).name != "kube-v1.20.2"

"""Probe faults on the local fleet: endpoints that answer too much, too slowly, or to a token
that was rotated during the bake. Real pods, real HTTP, wavegate driven through its CLI.

A bad release whose endpoints stream a huge body or trickle forever fails safe (exit 1, rolled
back, the reason in the report) while wavegate's own memory stays bounded, and so does the
ingress that passes a 256 MiB answer on; a good release whose probe token is rotated mid-bake
is not failed for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import TOKENS, LocalFleet

pytestmark = [pytest.mark.integration, pytest.mark.faults]
FAULTY = {"LIBRARY_LEAK": "${leak}", "LIBRARY_FAIL": "${fault}"}
MIB = 1024 * 1024
MEASURE = """\
import pathlib, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
pathlib.Path(sys.argv[1]).write_text(str(peak * 1024))
sys.exit(code)
"""


def versions_on(fleet: LocalFleet) -> dict[str, str | None]:
    return {name: row["live_version"] for name, row in fleet.status().items()}


def measured_deploy(fleet: LocalFleet, app: Path, version: str, report: Path,
                    *extra: str) -> tuple[int, int]:
    """Exit code and peak RSS in bytes of one `wavegate deploy` process (not its pods)."""
    peak_file = fleet.root / "peak-rss"
    argv = [sys.executable, "-c", MEASURE, str(peak_file), sys.executable, "-m", "wavegate",
            "deploy", str(app), "--version", version, "-f", str(fleet.fleet_file),
            "--report", str(report), *extra]
    done = subprocess.run(argv, cwd=fleet.root, env=fleet.env, capture_output=True, text=True,
                          timeout=300)
    fleet.outputs += [done.stdout, done.stderr]
    return done.returncode, int(peak_file.read_text())


def canary_detail(report: Path) -> str:
    clusters = json.loads(report.read_text())["clusters"]
    canary = next(c for c in clusters if c["cluster"] == "prod-0")
    return " ".join([canary["detail"] or ""] + [c["detail"] for c in canary["checks"]])


def peak_rss_of(pid: int) -> int:
    """The peak resident memory in bytes of a process that is still running (Linux)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmHWM:")).split()[1]) * 1024


def test_a_release_streaming_a_huge_body_fails_safe_with_bounded_memory(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("huge", configmap_extra=FAULTY)
    report = tmp_path / "huge.json"
    code, peak = measured_deploy(local_fleet, variant, "1.1.0", report, "--set", "leak=",
                                 "--set", "fault=huge-body")  # 256 MiB to every /api/ request
    assert code == 1, local_fleet.outputs[-1]
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    # Read whole, one probe alone would take wavegate past 256 MiB; eight run in parallel.
    assert peak < 200 * MIB, f"wavegate peaked at {peak // MIB} MiB"
    assert "response body over 1 MiB" in canary_detail(report)
    # The canary's ingress passed every answer on in chunks: it never held one whole either.
    agent = json.loads((local_fleet.root / "state" / "prod-0" / "agent.state.json").read_text())
    ingress_peak = peak_rss_of(agent["pid"])
    assert ingress_peak < 128 * MIB, f"prod-0's agent peaked at {ingress_peak // MIB} MiB"


def test_a_release_whose_endpoints_trickle_fails_safe_at_the_deadline(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("trickle", configmap_extra=FAULTY)
    report = tmp_path / "trickle.json"
    result = local_fleet.deploy(str(variant), "1.1.0", "--set", "leak=", "--set",
                                "fault=trickle", "--report", str(report))
    assert result.code == 1, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert "no complete answer within 3s" in canary_detail(report)  # check_timeout: 3s


def test_a_token_file_rotated_during_the_bake_does_not_fail_a_good_release(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    server_tokens, alice_token = tmp_path / "server-tokens", tmp_path / "alice.token"
    alice_token.write_text(TOKENS["LIBRARY_TOKEN_ALICE"] + "\n")
    variant = local_fleet.app_variant("rotating", configmap_extra={
        "LIBRARY_TOKENS_FILE": str(server_tokens)})
    checks_file = variant / "checks.yaml"
    checks_file.write_text(checks_file.read_text().replace(
        "{token_env: LIBRARY_TOKEN_ALICE}", f"{{token_file: {alice_token}}}"))
    document = yaml.safe_load(local_fleet.fleet_file.read_text())
    document["waves"][0]["bake"] = "4s"  # several rounds of checks after the rotation
    local_fleet.fleet_file.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [sys.executable, "-m", "wavegate", "deploy", str(variant), "--version", "1.0.0",
         "-f", str(local_fleet.fleet_file)], cwd=local_fleet.root, env=local_fleet.env,
        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:  # JSON log lines: rotate once the canary is baking
        if '"wave.baking"' in line and '"canary"' in line:
            server_tokens.write_text("alice=itest-alice-rotated-Vb40q\n")
            alice_token.write_text("itest-alice-rotated-Vb40q\n")
            break
    else:
        raise AssertionError("the canary never started its bake")
    out, errors = process.communicate(timeout=300)
    assert process.returncode == 0, out + errors
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert "itest-alice-rotated-Vb40q" not in out + errors

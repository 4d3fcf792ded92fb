"""`wavegate plan`: what a deploy would do, cluster by cluster, and when it could finish.

Where the driver can ask the cluster (Kubernetes: a server-side dry run) the diff is what the
server says would change, drift included; elsewhere it compares the live revision's stored
manifests (from the ledger) with the freshly rendered ones. Nothing is written either way.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from wavegate.config import durations
from wavegate.config.app import Release
from wavegate.config.fleet import Fleet
from wavegate.decide import ledger
from wavegate.drivers.base import Driver


def plan(fleet: Fleet, releases: dict[str, Release], live: dict[str, Driver]) -> dict[str, Any]:
    waves = []
    for wave in fleet.waves:
        clusters = [_cluster_plan(releases[name], live[name]) for name in wave.clusters]
        waves.append({"wave": wave.name, "max_parallel": wave.max_parallel,
                      "bake": durations.format(wave.bake), "clusters": clusters})
    minimum = sum(wave.bake for wave in fleet.waves) + fleet.policy.watch
    gates = [wave.name for wave in fleet.waves if wave.name in fleet.policy.approval]
    waiting = f", and approval before {', '.join(gates)}" if gates else ""
    return {"fleet": fleet.name, "waves": waves, "approval": gates,
            "earliest_finish": f"{durations.format(minimum)} of bake and watch, plus rollouts"
                               + waiting,
            "policy": {"on_failure": fleet.policy.on_failure,
                       "check_interval": durations.format(fleet.policy.check_interval)}}


def _cluster_plan(release: Release, driver: Driver) -> dict[str, Any]:
    records = driver.records(release.app)
    current = ledger.live(records)
    preview = getattr(driver, "preview", None)
    if preview is not None:
        diff = preview(release)
        change = "install" if current is None else "update" if diff else "none"
        return {"cluster": driver.cluster.name, "from": current.version if current else None,
                "to": release.version, "change": change, "diff": diff, "source": "dry-run"}
    if current is None:
        return {"cluster": driver.cluster.name, "from": None, "to": release.version,
                "change": "install", "diff": []}
    before = driver.stored_release(current)
    diff = list(difflib.unified_diff(
        _lines(before.manifests), _lines(release.manifests),
        fromfile=f"revision {current.revision} ({current.version})",
        tofile=f"rendered ({release.version})", lineterm=""))
    return {"cluster": driver.cluster.name, "from": current.version, "to": release.version,
            "change": "update" if diff else "none", "diff": diff}


def _lines(manifests: tuple[dict[str, Any], ...]) -> list[str]:
    return yaml.safe_dump_all(list(manifests), sort_keys=True).splitlines()


def render_text(result: dict[str, Any]) -> str:
    lines = [f"fleet {result['fleet']}: {len(result['waves'])} waves, "
             f"on failure {result['policy']['on_failure']}"]
    for wave in result["waves"]:
        gate = ", waits for approval" if wave["wave"] in result["approval"] else ""
        lines.append(f"wave {wave['wave']} (max_parallel {wave['max_parallel']}, "
                     f"bake {wave['bake']}{gate})")
        for cluster in wave["clusters"]:
            lines.append(f"  {cluster['cluster']}: {cluster['from'] or '(none)'} -> "
                         f"{cluster['to']}  [{cluster['change']}]")
            lines.extend(f"    {line}" for line in cluster["diff"])
    lines.append(f"earliest finish: {result['earliest_finish']}")
    return "\n".join(lines)

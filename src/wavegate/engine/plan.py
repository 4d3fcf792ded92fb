"""`wavegate plan`: what a deploy would do, cluster by cluster, and when it could finish.

Each driver previews its own cluster: Kubernetes asks the server for a dry run (drift
included), the local fleet compares the live revision's stored manifests with the freshly
rendered ones; `source` says which. Nothing is written either way.
"""

from __future__ import annotations

from typing import Any

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
    current = ledger.live(driver.records(release.app))
    diff = driver.preview(release)
    change = "install" if current is None else "update" if diff else "none"
    return {"cluster": driver.cluster.name, "from": current.version if current else None,
            "to": release.version, "change": change, "diff": diff,
            "source": driver.preview_source}


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

"""The local cluster agent: a tiny Kubernetes node and deployment controller for one state folder.

`python -m wavegate.localfleet.agent CLUSTER_DIR` runs it in the foreground until SIGTERM or
SIGINT; `supervisor` starts it detached. docs/fleet.md and config.py describe the folder.

Owns the control loop and the process around it:
- every ~100 ms (sooner when a pod's readiness changes): poll `objects/`, carry out
  `rolling.decide` for each Deployment through the pod `Runner`, stop the pods of
  Deployments that are gone, point the ingress at the ready pods of the ingress Service, and
  write `status/` files that changed (deleting those whose object is gone);
- `agent.state.json` while it is up, a lock so one folder has one agent, and a clean exit on
  SIGTERM/SIGINT/SIGHUP: ingress emptied, pods stopped (SIGTERM, SIGKILL after 2 s),
  Deployment statuses marked `AgentStopped`, state file removed, exit 0.

Must not decide rollouts (rolling), touch processes (pods), parse manifests (objects) or
shape status files (status) itself. Desired state lives only in `objects/`: an agent started
on a folder that has objects brings their pods up again.

Exit codes: 0 after a signal, 1 when it cannot start (e.g. the ingress port is taken),
2 for a bad agent.json, 3 when another agent holds the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import logging
import logging.handlers
import os
import random
import signal
import string
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from wavegate import filestore
from wavegate.localfleet import objects, pods, podspec, rolling, status
from wavegate.localfleet.config import AgentConfig, ConfigError, Layout
from wavegate.localfleet.ingress import Ingress

__all__ = ["Agent", "main"]

log = logging.getLogger("wavegate.localfleet.agent")  # not __main__ under -m

TICK_SECONDS = 0.1
T = TypeVar("T")


@dataclass(frozen=True)
class _PodMeta:
    """What the agent knows of a pod beyond its process: who owns it and how it was built."""

    deployment: str  # the owning Deployment's manifest key
    namespace: str
    template_hash: str
    created: int
    labels: Mapping[str, str]
    container: objects.Container


class Agent:
    """The control loop of one cluster; `tick` does one round, `run` loops until told to stop."""

    def __init__(
        self,
        layout: Layout,
        config: AgentConfig,
        *,
        runner: pods.Runner,
        ingress: Ingress,
        rng: random.Random | None = None,
    ) -> None:
        self._layout = layout
        self._config = config
        self._runner = runner
        self._ingress = ingress
        self._rng = rng or random.Random()
        self._store = objects.Store(layout.objects)
        self._pods: dict[str, _PodMeta] = {}
        self._created = 0
        self._parsed: dict[str, tuple[objects.Manifest, object]] = {}
        # Status files already on disk are rewritten or, if their object is gone, deleted.
        self._written: dict[str, dict[str, Any] | None] = {
            p.stem: None for p in layout.status.glob("*.json") if not p.name.startswith(".")
        }

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        while not stop.is_set():
            wake.clear()
            try:
                self.tick()
            except Exception:  # one bad round must not take every pod of the cluster down
                log.exception("control loop round failed")
            wake.wait(TICK_SECONDS)

    def tick(self) -> None:
        self._runner.tick()
        self._store.refresh()
        manifests = dict(self._store.manifests)
        deployments = {k: m for k, m in manifests.items() if m.kind == "Deployment"}
        problems = {key: self._reconcile(manifest) for key, manifest in deployments.items()}
        self._stop_orphans(deployments)
        statuses = self._runner.statuses()
        for name in self._pods.keys() - statuses.keys():
            del self._pods[name]
        desired = self._route(manifests, statuses)
        for key, manifest in manifests.items():
            if manifest.kind == "Deployment":
                desired[key] = self._deployment_status(manifest, statuses, problems[key])
            elif manifest.kind not in objects.RUN_KINDS:
                desired[key] = status.unsupported_status(manifest.kind)
        self._write_statuses(desired)

    def close(self) -> None:
        """Stop serving and every pod; leave statuses that say so."""
        self._ingress.set_backends([], detail="the cluster agent is stopping")
        self._runner.close()
        for key, manifest in self._store.manifests.items():
            if manifest.kind == "Deployment":
                self._write(key, status.stopped_status(manifest.generation))
            elif manifest.kind == "Service" and self._written.get(key):
                self._write(key, {**(self._written[key] or {}), "endpoints": []})

    # -- Deployments -----------------------------------------------------------------------

    def _reconcile(self, manifest: objects.Manifest) -> status.Problem | None:
        """Carry out the next step of the rollout; the problem that keeps it from progressing."""
        dep = self._parse(manifest, objects.parse_deployment)
        if isinstance(dep, objects.SpecError):
            return status.Problem(podspec.CONFIG_ERROR, str(dep))
        try:
            command = self._command(dep)
        except podspec.CannotStart as e:
            return status.Problem(e.reason, e.message)
        # Pods stopped in one step leave room for the next step's new pods at once, instead
        # of a tick later: the decision is asked again until it only starts pods (or idles).
        for _ in range(3):
            decision = self._decide(dep)
            env: dict[str, str] = {}
            if decision.start:
                try:
                    env = podspec.environment(dep.container, dep.manifest.namespace,
                                              self._store.find,
                                              pythonpath=self._config.pythonpath)
                except podspec.CannotStart as e:
                    return status.Problem(e.reason, e.message)
            for name in decision.stop:
                log.info("deployment %s: stopping pod %s", dep.key, name)
                self._runner.stop(name)
            for _ in range(decision.start):
                self._start_pod(dep, command, env)
            if not decision.stop:
                break
        return None

    def _command(self, dep: objects.Deployment) -> tuple[str, ...]:
        """The argv of the Deployment's pods; () when it runs none (scaled to 0)."""
        if dep.budget.replicas == 0:
            return ()
        return podspec.command(dep.container, self._config.images, self._config.python)

    def _decide(self, dep: objects.Deployment) -> rolling.Decision:
        statuses = self._runner.statuses()
        owned = [(n, s) for n, s in statuses.items() if self._owner(n) == dep.key]
        views = [self._view(n, s) for n, s in owned if not s.terminating]
        terminating = sum(1 for _, s in owned if s.terminating)
        return rolling.decide(dep.budget, dep.template_hash, views, terminating=terminating)

    def _owner(self, pod: str) -> str | None:
        meta = self._pods.get(pod)
        return meta.deployment if meta is not None else None

    def _view(self, name: str, pod: pods.PodStatus) -> rolling.PodView:
        meta = self._pods[name]
        return rolling.PodView(name, meta.template_hash, pod.ready, pod.restarts, meta.created)

    def _start_pod(
        self, dep: objects.Deployment, command: Sequence[str], env: dict[str, str]
    ) -> None:
        suffix = "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{dep.manifest.name}-{dep.template_hash}-{suffix}"
        spec = podspec.build(name, dep.container, argv=command, env=env, cwd=self._layout.root)
        self._created += 1
        self._pods[name] = _PodMeta(
            dep.key,
            dep.manifest.namespace,
            dep.template_hash,
            self._created,
            dep.labels,
            dep.container,
        )
        log.info("deployment %s: starting pod %s", dep.key, name)
        self._runner.start(spec)

    def _stop_orphans(self, deployments: Mapping[str, objects.Manifest]) -> None:
        for name, meta in list(self._pods.items()):
            if meta.deployment not in deployments:
                self._runner.stop(name)

    def _deployment_status(
        self,
        manifest: objects.Manifest,
        statuses: Mapping[str, pods.PodStatus],
        problem: status.Problem | None,
    ) -> dict[str, Any]:
        dep = self._parse(manifest, objects.parse_deployment)
        owned = [
            status.OwnedPod(meta.template_hash, statuses[name], meta.container.name,
                            meta.container.image)
            for name, meta in sorted(self._pods.items(), key=lambda item: item[1].created)
            if meta.deployment == manifest.key and name in statuses
        ]
        if isinstance(dep, objects.SpecError):
            return status.deployment_status(
                name=manifest.name, generation=manifest.generation, replicas=0,
                template_hash=_raw_template_hash(manifest), owned=owned, problem=problem,
            )  # fmt: skip
        return status.deployment_status(
            name=manifest.name,
            generation=manifest.generation,
            replicas=dep.budget.replicas,
            template_hash=dep.template_hash,
            owned=owned,
            problem=problem,
            container=dep.container.name,
            image=dep.container.image,
        )

    # -- Services and the ingress ----------------------------------------------------------

    def _route(
        self, manifests: Mapping[str, objects.Manifest], statuses: Mapping[str, pods.PodStatus]
    ) -> dict[str, dict[str, Any]]:
        """Point the ingress at its Service's ready pods; the status of every Service."""
        services: dict[str, objects.Service] = {}
        desired: dict[str, dict[str, Any]] = {}
        for key, manifest in sorted(manifests.items()):
            if manifest.kind != "Service":
                continue
            service = self._parse(manifest, objects.parse_service)
            if isinstance(service, objects.SpecError):
                desired[key] = status.service_status(
                    ingress=False, endpoints=[], message=str(service)
                )
            else:
                services[key] = service
        chosen, detail = _ingress_service(services)
        for key, service in services.items():
            endpoints = self._endpoints(service, statuses)
            desired[key] = status.service_status(ingress=key == chosen, endpoints=endpoints)
            if key == chosen:
                self._ingress.set_backends(endpoints)
        if chosen is None:
            self._ingress.set_backends([], detail=detail)
        return desired

    def _endpoints(
        self, service: objects.Service, statuses: Mapping[str, pods.PodStatus]
    ) -> list[str]:
        backends = [
            status.Backend(meta.namespace, meta.labels, meta.container, statuses[name])
            for name, meta in sorted(self._pods.items(), key=lambda item: item[1].created)
            if name in statuses
        ]
        return status.endpoints(service, backends)

    # -- plumbing --------------------------------------------------------------------------

    def _parse(
        self, manifest: objects.Manifest, parser: Callable[[objects.Manifest], T]
    ) -> T | objects.SpecError:
        """`parser(manifest)`, or the SpecError it raised; cached until the manifest changes."""
        cached = self._parsed.get(manifest.key)
        if cached is not None and cached[0] is manifest:
            return cast("T | objects.SpecError", cached[1])
        result: T | objects.SpecError
        try:
            result = parser(manifest)
        except objects.SpecError as e:
            log.warning("%s: %s", manifest.key, e)
            result = e
        self._parsed[manifest.key] = (manifest, result)
        return result

    def _write_statuses(self, desired: Mapping[str, dict[str, Any]]) -> None:
        for key, body in desired.items():
            if self._written.get(key) != body:
                self._write(key, body)
        for key in self._written.keys() - desired.keys():
            filestore.remove(self._layout.status / f"{key}.json")
            del self._written[key]
            self._parsed.pop(key, None)

    def _write(self, key: str, body: dict[str, Any]) -> None:
        try:
            filestore.write_json(self._layout.status / f"{key}.json", body)
        except OSError as e:
            log.error("status/%s.json: cannot write: %s", key, e)
            return
        self._written[key] = body


def _raw_template_hash(manifest: objects.Manifest) -> str:
    """The template hash of a Deployment the agent cannot parse, so its pending pod is still
    known as the current template's."""
    spec = manifest.body.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return objects.template_hash(template) if isinstance(template, Mapping) else ""


def _ingress_service(services: Mapping[str, objects.Service]) -> tuple[str | None, str]:
    """The Service the ingress serves: the one annotated for it, else the only one."""
    annotated = [key for key, s in services.items() if s.ingress]
    if len(annotated) > 1:
        log.warning("several Services claim the ingress; using %s", annotated[0])
    if annotated:
        return annotated[0], ""
    if len(services) == 1:
        return next(iter(services)), ""
    if not services:
        return None, "no Service"
    return None, f'several Services and none annotated {objects.INGRESS_ANNOTATION}: "true"'


# --- the process -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wavegate.localfleet.agent")
    parser.add_argument("cluster_dir", type=Path, help="the cluster's state folder")
    layout = Layout(parser.parse_args(argv).cluster_dir.resolve())
    for folder in (layout.objects, layout.status, layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
    _configure_logging(layout)
    try:
        config = AgentConfig.from_file(layout.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    lock = _take_lock(layout)
    if lock is None:
        log.error("%s: another agent runs on this folder", layout.root)
        return 3
    with lock:
        return _serve(layout, config)


def _serve(layout: Layout, config: AgentConfig) -> int:
    stop, wake = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        ingress = Ingress(config.ingress_port)
    except OSError as e:
        log.error("cannot listen on 127.0.0.1:%d for the ingress: %s", config.ingress_port, e)
        return 1
    runner = pods.Runner(layout.logs, is_drained=ingress.is_drained, on_change=wake.set)
    agent = Agent(layout, config, runner=runner, ingress=ingress)
    ingress.start()
    try:
        filestore.write_json(layout.state, _state(ingress, config))
        log.info("cluster %s: agent %d up, ingress %s", config.cluster, os.getpid(), ingress.url)
        agent.run(stop, wake)
    finally:
        agent.close()
        ingress.close()
        filestore.remove(layout.state)
        log.info("cluster %s: agent stopped", config.cluster)
    return 0


def _state(ingress: Ingress, config: AgentConfig) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "pid": os.getpid(),
        "ingress": ingress.url,
        "started_at": now.isoformat(timespec="seconds"),
        "cluster": config.cluster,
    }


def _take_lock(layout: Layout) -> IO[bytes] | None:
    lock = layout.lock.open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def _configure_logging(layout: Layout) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Bounded: a local fleet may stay up for weeks of deploys.
    to_file = logging.handlers.RotatingFileHandler(
        layout.agent_log, maxBytes=5_000_000, backupCount=2, encoding="utf-8"
    )
    to_file.setFormatter(fmt)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(fmt)
    to_stderr.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    root.addHandler(to_stderr)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

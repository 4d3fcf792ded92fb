"""The kube fleet: a fleet's clusters as kube sandbox clusters that really run pods.

`up(fleet, dir)` starts, for every cluster of FLEET, a control plane (`controlplane.up`) and a
node agent (`nodeagent`, running the fleet's `local.images`), then prepares each cluster the
way the fleet's releases expect it, as admin: the cluster's namespace, the Secrets that
`local.secrets` defines (values from the environment variables it names), and the deployer's
RBAC: the role that ships with wavegate, or the file given instead (one that cannot be read is
bad input, never skipped: a deployer without its role fails every deploy later, far from the
cause). Last it writes DIR/fleet.yaml:
FLEET's clusters, waves and policy with `driver: kubernetes`, each cluster's restricted
context (`NAME-deployer`), `kubeconfig: kubeconfig` and its ingress as `endpoint`.
`down(dir)` stops it all.

Under DIR: what `controlplane` keeps (kubeconfig, sandbox.json, pki/, etcd/, logs/), the node
agents' state (nodes/NAME/: agent.json, pods/ with pod logs; their own log is
logs/NAME-node-agent.log) and fleet.yaml. The agents are recorded in sandbox.json, so
`controlplane.down` stops them with the control planes, and their pods with them.

RBAC. The restricted token is the static User `deployer`, not a ServiceAccount, so every
RoleBinding and ClusterRoleBinding of deployer.yaml is applied with User `deployer` added to
its subjects: the token gets exactly what the file grants. The file may use `${namespace}`
(also `${cluster.namespace}`, `${cluster.name}`, `${cluster.region}`); namespaced objects
without a namespace go to the cluster's.

Must not deploy any app: that is the driver's job, through the restricted context.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client import ApiException

from wavegate.config import bundled, durations, local_secrets, templates
from wavegate.config.fleet import Cluster, Fleet, LocalFleet, Policy
from wavegate.config.yamlsource import parse_all
from wavegate.errors import InputError, SandboxError
from wavegate.sandbox import controlplane

__all__ = ["down", "fleet_document", "grant_user", "up"]

AGENT_MODULE = "wavegate.sandbox.nodeagent"
AGENT_READY_TIMEOUT = 60.0  # seconds for every agent; six are up in a few on two cores
TIMEOUT = 10.0  # seconds for each API call: the Python client would wait forever without one
FIELD_MANAGER = "wavegate-sandbox"
APPLY_PATCH = "application/apply-patch+yaml"
DEPLOYER_USER = "deployer"  # the restricted token's user (controlplane's tokens.csv)

Manifest = dict[str, Any]


def up(fleet: Fleet, dir: Path, *, rbac: Path | None = None) -> dict[str, str]:
    """Start the kube fleet for FLEET in DIR; each cluster's endpoint, by cluster name.

    RBAC is the deployer role file, by default the one wavegate ships. Bad input (no
    `local.images`, a secret variable unset, an RBAC file missing, unreadable or bad) fails
    before anything starts; if a later step fails, everything started is stopped again.
    """
    local = _local_section(fleet)
    rbac_file = rbac or bundled.rbac_file()
    objects = {
        c.name: [_namespace(c), *local_secrets.objects(local, c.namespace, fleet_file=fleet.path),
                 *_rbac(rbac_file, c)]
        for c in fleet.clusters
    }
    bin_dir = controlplane.find_binaries()
    if bin_dir is None:
        raise SandboxError("kube binaries not built; run scripts/build-kube-sandbox.sh")
    root = dir.resolve()
    sandbox = controlplane.up(clusters=[c.name for c in fleet.clusters], dir=root, bin_dir=bin_dir)
    try:
        pids = {c.name: _start_agent(sandbox, c.name, local.images) for c in fleet.clusters}
        endpoints = {name: _wait_for_agent(root, name, pid) for name, pid in pids.items()}
        with ThreadPoolExecutor(max_workers=len(objects)) as pool:
            for done in [pool.submit(_apply_all, sandbox, *item) for item in objects.items()]:
                done.result()
        _write_yaml(root / "fleet.yaml", fleet_document(fleet, endpoints))
    except BaseException:
        down(root)
        raise
    return endpoints


def down(dir: Path) -> None:
    """Stop the node agents (and so their pods) and the control planes; a no-op if none runs."""
    controlplane.down(dir)


# --- node agents -------------------------------------------------------------------------


def _local_section(source: Fleet) -> LocalFleet:
    """What the node agents run and the Secrets every cluster gets: the fleet's `local:`."""
    if source.local is None or not source.local.images:
        raise InputError(
            "a kube fleet runs the images of a 'local:' section with 'images', "
            "and this fleet has none",
            file=source.path,
        )
    return source.local


def _agent_dir(root: Path, cluster: str) -> Path:
    return root / "nodes" / cluster


def _start_agent(
    sandbox: controlplane.Sandbox, cluster: str, images: Mapping[str, tuple[str, ...]]
) -> int:
    state_dir = _agent_dir(sandbox.dir, cluster)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "agent.json").unlink(missing_ok=True)  # a stale one must not pass for ready
    argv = [
        sys.executable, "-m", AGENT_MODULE,
        "--kubeconfig", str(sandbox.kubeconfig), "--context", cluster,
        "--node", f"node-{cluster}", "--images-json", json.dumps(images),
        "--ingress-port", "0", "--state-dir", str(state_dir),
    ]  # fmt: skip
    return controlplane.spawn(sandbox.dir, f"{cluster}-node-agent", argv)


def _wait_for_agent(root: Path, cluster: str, pid: int) -> str:
    """The agent's ingress URL, once its agent.json says it serves."""
    state = _agent_dir(root, cluster) / "agent.json"
    log = root / "logs" / f"{cluster}-node-agent.log"  # where controlplane.spawn sends output
    deadline = time.monotonic() + AGENT_READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):  # not written yet
            info = json.loads(state.read_text())
            if info.get("pid") == pid:
                return str(info["ingress"])
        if _exited(pid):
            raise SandboxError(f"the node agent of {cluster} exited; {_tail(log)}")
        time.sleep(0.05)
    raise SandboxError(f"the node agent of {cluster} was not up in time; {_tail(log)}")


def _exited(pid: int) -> bool:
    """Whether our child PID has exited (and reap it: `down` then finds it gone)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return reaped == pid


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no log at {log}"
    return f"last lines of {log}:\n" + "\n".join(text)


# --- what each cluster gets ----------------------------------------------------------


def _namespace(cluster: Cluster) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.namespace}}


def _apply_all(sandbox: controlplane.Sandbox, cluster: str, manifests: list[Manifest]) -> None:
    """Apply MANIFESTS, in order, to CLUSTER as admin."""
    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(sandbox.kubeconfig), context=cluster
    )
    with api:
        for manifest in manifests:
            _apply(api, manifest)


def _rbac(path: Path, cluster: Cluster) -> list[Manifest]:
    """The objects of the RBAC file for CLUSTER: rendered, namespaced, granted to the user."""
    variables = {
        "namespace": cluster.namespace,
        "cluster.namespace": cluster.namespace,
        "cluster.name": cluster.name,
        "cluster.region": cluster.region,
    }
    text = templates.render(_read_rbac(path), variables, file=path)
    manifests = []
    for document, source in parse_all(text, path):
        if document is None:
            continue
        if not isinstance(document, dict) or document.get("kind") not in _APPLIERS:
            kinds = ", ".join(_APPLIERS)
            raise source.error((), f"expected an object of kind {kinds}")
        manifests.append(grant_user(_in_namespace(document, cluster.namespace), DEPLOYER_USER))
    return manifests


def _read_rbac(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"cannot read the deployer RBAC file: {reason}", file=path) from None


def _in_namespace(manifest: Manifest, namespace: str) -> Manifest:
    """A namespaced object without a namespace goes to NAMESPACE; so do its SA subjects."""
    if _APPLIERS[manifest["kind"]][2]:
        manifest.setdefault("metadata", {}).setdefault("namespace", namespace)
    for subject in manifest.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject.setdefault("namespace", namespace)
    return manifest


def grant_user(manifest: Manifest, user: str) -> Manifest:
    """A RoleBinding or ClusterRoleBinding also binds USER; any other object as it is."""
    if manifest.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
        return manifest
    subject = {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
    subjects = list(manifest.get("subjects") or [])
    if subject not in subjects:
        subjects.append(subject)
    return {**manifest, "subjects": subjects}


# (API class, patch method, namespaced) for each kind this module applies.
_APPLIERS: dict[str, tuple[Callable[[client.ApiClient], Any], str, bool]] = {
    "Namespace": (client.CoreV1Api, "patch_namespace", False),
    "Secret": (client.CoreV1Api, "patch_namespaced_secret", True),
    "ServiceAccount": (client.CoreV1Api, "patch_namespaced_service_account", True),
    "Role": (client.RbacAuthorizationV1Api, "patch_namespaced_role", True),
    "RoleBinding": (client.RbacAuthorizationV1Api, "patch_namespaced_role_binding", True),
    "ClusterRole": (client.RbacAuthorizationV1Api, "patch_cluster_role", False),
    "ClusterRoleBinding": (client.RbacAuthorizationV1Api, "patch_cluster_role_binding", False),
}


def _apply(api: client.ApiClient, manifest: Manifest) -> None:
    """Server-side apply, so that a second `up` on the same DIR (same etcd) updates in place."""
    make, method, namespaced = _APPLIERS[manifest["kind"]]
    metadata = manifest["metadata"]
    where = [metadata["name"], metadata["namespace"]] if namespaced else [metadata["name"]]
    try:
        getattr(make(api), method)(
            *where, manifest, field_manager=FIELD_MANAGER, force=True,
            _content_type=APPLY_PATCH, _request_timeout=TIMEOUT, _preload_content=False,
        )  # fmt: skip
    except ApiException as e:  # the body may hold a Secret's data: say only what failed
        raise SandboxError(
            f"applying {manifest['kind']} {'/'.join(where[::-1])}: {e.status} {e.reason}"
        ) from None


# --- the fleet file ----------------------------------------------------------------------


def fleet_document(source: Fleet, endpoints: Mapping[str, str]) -> dict[str, Any]:
    """SOURCE as a fleet of the kube fleet's clusters: restricted contexts, ingress endpoints.

    Waves list their clusters by name (a selector has already chosen them). Policy windows
    are left out: the loader refuses them for now, so no source fleet has any.
    """
    clusters = [
        {"name": c.name, "region": c.region, "driver": "kubernetes", "namespace": c.namespace,
         "context": f"{c.name}-deployer", "kubeconfig": "kubeconfig",
         "endpoint": endpoints[c.name], "values": dict(c.values), "labels": dict(c.labels)}
        for c in source.clusters
    ]  # fmt: skip
    waves = [
        {"name": w.name, "clusters": list(w.clusters), "max_parallel": w.max_parallel,
         "bake": durations.format(w.bake)}
        for w in source.waves
    ]  # fmt: skip
    document: dict[str, Any] = {
        "fleet": source.name,
        "clusters": clusters,
        "waves": waves,
        "policy": _policy(source.policy),
    }
    if source.webhooks:
        document["notify"] = {"webhooks": [{"url_env": w.url_env} for w in source.webhooks]}
    return document


def _policy(policy: Policy) -> dict[str, Any]:
    document: dict[str, Any] = {
        "on_failure": policy.on_failure,
        "check_interval": durations.format(policy.check_interval),
        "check_timeout": durations.format(policy.check_timeout),
        "max_check_errors": policy.max_check_errors,
        "rollout_timeout": durations.format(policy.rollout_timeout),
        "watch": durations.format(policy.watch),
    }
    if policy.approval:
        document["approval"] = list(policy.approval)
    return document


def _write_yaml(path: Path, document: Mapping[str, Any]) -> None:
    header = "# Written by wavegate.sandbox.kubefleet.up: the kube fleet's clusters. Regenerated.\n"
    partial = path.with_suffix(".yaml.partial")
    partial.write_text(header + yaml.safe_dump(dict(document), sort_keys=False))
    partial.replace(path)

"""What a rollback leaves behind on Kubernetes, with kubectl as the witness (the kube sandbox).

One cluster whose node agent runs pods, shared by every test here, driven through the CLI as a
CI job would: objects that ran before the first release are adopted, and a failing first
release goes back to them; a field another manager owns is a conflict (exit 2) unless
--force-conflicts; a release that adds an Ingress, a NetworkPolicy, a ClusterRole and its
binding, an HPA, a PDB, a CronJob, a CRD and its custom resource, rolled back, leaves none of
them, while an object wavegate never applied stays; the plan shows a custom resource that comes
with its CRD; the ledger keeps its history limit and reads past a broken record; a custom
resource is applied once its CRD is Established, dry-run by the plan once the CRD is served,
and removed by a rollback while its CRD stays; and a StatefulSet whose strategy holds old pods
back fails its rollout instead of passing.

The tests run in file order: each starts from the state the one before left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import sandbox_binaries
from wavegate.config import fleet
from wavegate.config.app import APP_LABEL, MANAGED_BY, App, Release
from wavegate.decide.ledger import Record, Status
from wavegate.drivers.kubernetes import KubernetesDriver
from wavegate.errors import RolloutFailed
from wavegate.sandbox import kubefleet

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APP = "library-app"
TOKENS = {"LIBRARY_TOKEN_ALICE": "inv-alice-7Qe", "LIBRARY_TOKEN_BOB": "inv-bob-3Wd",
          "LIBRARY_TOKEN_CAROL": "inv-carol-9Zk"}
SOLO = """\
fleet: solo
defaults: {namespace: library, values: {replicas: 2}}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {library-tokens: {alice: {env: LIBRARY_TOKEN_ALICE}, bob: {env: LIBRARY_TOKEN_BOB},
                             carol: {env: LIBRARY_TOKEN_CAROL}}}
clusters: [{name: solo}]
waves: [{name: all, clusters: [solo], bake: 0s}]
policy: {check_interval: 500ms, watch: 0s, rollout_timeout: 60s}
"""
# What release 2.0.0 adds: every kind the issue found left behind after a rollback.
EXTRAS = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: admin}
spec:
  rules:
    - http:
        paths:
          - path: /admin
            pathType: Prefix
            backend: {service: {name: library-app, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-pods}
spec:
  podSelector: {matchLabels: {app: library-app}}
  ingress: [{}]
  policyTypes: [Ingress]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: library-app-widgets}
rules: [{apiGroups: [example.com], resources: [widgets], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: library-app-widgets}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: library-app-widgets}
subjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: "system:authenticated"}]
---
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: library-app}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: library-app}
  minReplicas: 2
  maxReplicas: 2
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata: {name: library-app}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: library-app}}
---
apiVersion: batch/v1beta1
kind: CronJob
metadata: {name: library-app-report}
spec:
  schedule: "0 0 1 1 *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: report, image: "library-app:${version}"}]
"""
# A custom resource of that CRD.
WIDGET = """\
apiVersion: example.com/v1
kind: Widget
metadata: {name: admin-widget}
spec: {size: 3}
"""
LEFT_BEHIND = ["ingress/admin", "networkpolicy/open-pods", "hpa/library-app",
               "poddisruptionbudget/library-app", "cronjob/library-app-report"]
CLUSTER_SCOPED = ["clusterrole/library-app-widgets", "clusterrolebinding/library-app-widgets",
                  "customresourcedefinition/widgets.example.com"]


@dataclass
class Solo:
    dir: Path
    env: dict[str, str]
    plain: Path  # library-app as shipped
    extended: Path  # library-app with EXTRAS
    widget: Path  # library-app with EXTRAS and WIDGET

    @property
    def fleet_file(self) -> Path:
        return self.dir / "fleet.yaml"

    @property
    def cluster(self) -> fleet.Cluster:
        return fleet.load(self.fleet_file).cluster("solo")

    def wavegate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=240)

    def deploy(self, app: Path, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.wavegate("deploy", str(app), "--version", version,
                             "-f", str(self.fleet_file), "--report",
                             str(self.dir / f"report-{version}.json"), *extra)

    def deploy_fails_its_checks(self, app: Path, version: str) -> None:
        """Deploy a release whose checks fail once it is applied, so it is rolled back."""
        bad = self.deploy(app, version)
        assert bad.returncode == 1, bad.stderr
        report = json.loads((self.dir / f"report-{version}.json").read_text())
        assert report["clusters"][0]["state"] == "rolled-back"
        assert "apply" not in report["clusters"][0]["detail"].split(";")[0]  # checks failed it

    def kubectl(self, *args: str, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.dir / "kubeconfig"),
                               "--context", "solo", "-n", "library", *args], input=stdin,
                              capture_output=True, text=True, timeout=60, check=check)

    def exists(self, what: str) -> bool:
        found = self.kubectl("get", what, "--ignore-not-found", "-o", "name")
        return bool(found.stdout.strip())

    def widgets(self) -> list[str]:
        """The custom resources of widgets.example.com, as kubectl names them."""
        return self.kubectl("get", "widgets.example.com", "-o", "name").stdout.split()

    def served_version(self) -> str:
        response = httpx.get(f"{self.cluster.endpoint}/version", timeout=5, trust_env=False)
        assert response.status_code == 200, response.text
        version: str = response.json()["version"]
        return version

    def history(self) -> list[dict[str, Any]]:
        done = self.wavegate("history", APP, "-f", str(self.fleet_file), "-o", "json")
        assert done.returncode == 0, done.stderr
        records: list[dict[str, Any]] = json.loads(done.stdout)["records"]
        return sorted(records, key=lambda r: r["revision"])

    def ledger_record(self, revision: int) -> dict[str, Any]:
        text = self.kubectl("get", "secret", f"wavegate.{APP}.v{revision}", "-o",
                            r"jsonpath={.metadata.annotations.wavegate\.dev/record}").stdout
        record: dict[str, Any] = json.loads(text)
        return record


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solo]:
    """One kube cluster with the deployer's namespaced and cluster-wide roles (both examples
    of manifests/rbac), and two app folders named library-app: as shipped, and extended."""
    sandbox_binaries()
    root = tmp_path_factory.mktemp("inventory")
    (root / "in").mkdir()
    (root / "in" / "fleet.yaml").write_text(SOLO)
    rbac = root / "rbac.yaml"
    rbac.write_text((REPO / "manifests" / "rbac" / "deployer.yaml").read_text() + "\n---\n"
                    + (REPO / "manifests" / "rbac" / "deployer-cluster.yaml").read_text())
    plain, extended, widget = (root / folder / APP for folder in ("plain", "extended", "cr"))
    for folder in (plain, extended, widget):
        shutil.copytree(REPO / "manifests" / APP, folder)
    for folder in (extended, widget):
        (folder / "extras.yaml").write_text(EXTRAS)
    (widget / "widget.yaml").write_text(WIDGET)
    with pytest.MonkeyPatch.context() as env:
        for name, value in TOKENS.items():
            env.setenv(name, value)
        kubefleet.up(fleet.load(root / "in" / "fleet.yaml"), root / "kube", rbac=rbac)
    solo = Solo(root / "kube", {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")},
                plain, extended, widget)
    try:
        yield solo
    finally:
        kubefleet.down(root / "kube")


def _unlabelled(release: Release) -> str:
    """The release as someone applied it by hand: no wavegate labels."""
    documents = json.loads(json.dumps(release.manifests))
    for document in documents:
        for label in (APP_LABEL, MANAGED_BY):
            document["metadata"]["labels"].pop(label, None)
    return yaml.safe_dump_all(documents)


def test_a_failing_first_release_goes_back_to_the_app_kubectl_had_deployed(solo: Solo) -> None:
    by_hand = App.from_folder(solo.plain).render(solo.cluster, "1.0.0")
    solo.kubectl("apply", "-f", "-", stdin=_unlabelled(by_hand))
    solo.kubectl("rollout", "status", "deployment/library-app", "--timeout=60s")
    assert solo.served_version() == "1.0.0"

    refused = solo.deploy(solo.plain, "2.0.0")
    assert refused.returncode == 2, refused.stderr
    assert "owned by field manager 'kubectl-client-side-apply'" in refused.stderr
    assert ".spec.template.spec.containers" in refused.stderr
    assert "--force-conflicts" in refused.stderr
    assert solo.served_version() == "1.0.0"  # nothing of 2.0.0 was written

    taken = solo.deploy(solo.plain, "2.0.0", "--force-conflicts")
    assert taken.returncode == 1, taken.stderr  # 2.0.0 leaks spaces: its checks fail
    assert "adopted before the first release" in taken.stderr
    image = solo.kubectl("get", "deployment", "library-app", "-o",
                         "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "library-app:1.0.0"
    assert solo.served_version() == "1.0.0"
    statuses = [(r["revision"], r["version"], r["status"]) for r in solo.history()]
    assert statuses[0] == (0, "adopted", "adopted")
    assert statuses[-1][1:] == ("adopted", "adopted")  # live again: what kubectl deployed
    assert ("2.0.0", "rolled-back") in [(v, s) for _, v, s in statuses]


def test_a_rolled_back_release_leaves_none_of_its_objects_behind(solo: Solo) -> None:
    plan = solo.wavegate("plan", str(solo.widget), "--version", "2.0.0",
                         "-f", str(solo.fleet_file))
    assert plan.returncode == 0, plan.stderr
    assert "Widget/admin-widget: created with its CRD" in plan.stdout
    assert not solo.exists("customresourcedefinition/widgets.example.com")  # plan wrote nothing

    good = solo.deploy(solo.plain, "1.0.0")
    assert good.returncode == 0, good.stderr
    solo.kubectl("create", "configmap", "hand-made", "--from-literal=x=1")
    solo.kubectl("label", "configmap", "hand-made", f"{APP_LABEL}={APP}",
                 f"{MANAGED_BY}=wavegate")

    solo.deploy_fails_its_checks(solo.widget, "2.0.0")
    rolled_back = max(r["revision"] for r in solo.history() if r["version"] == "2.0.0")
    applied = {(ref["kind"], ref["name"]) for ref in
               solo.ledger_record(rolled_back)["inventory"]}
    assert {("CustomResourceDefinition", "widgets.example.com"), ("Ingress", "admin"),
            ("ClusterRole", "library-app-widgets"), ("CronJob", "library-app-report"),
            ("Widget", "admin-widget")} <= applied

    left = [what for what in [*LEFT_BEHIND, *CLUSTER_SCOPED] if solo.exists(what)]
    assert left == []
    assert solo.exists("configmap/hand-made")  # never applied by wavegate: never deleted
    assert solo.served_version() == "1.0.0"


def test_the_ledger_keeps_its_limit_and_reads_past_a_broken_record(solo: Solo) -> None:
    cluster = solo.cluster
    driver = KubernetesDriver(cluster, history=3)
    release = App.from_folder(solo.plain).render(cluster, "1.0.0")
    try:
        driver.acquire_lock(APP, holder="bench", ttl=60)
        records = driver.records(APP)
        for _ in range(4):
            revision = max(r.revision for r in records) + 1
            record = Record(app=APP, cluster="solo", revision=revision, version="1.0.0",
                            status=Status.FAILED, run_id="bench", by="e2e",
                            started_at="2025-01-01T00:00:00.000+00:00")
            driver.create_record(record, release, holder="bench")
            records = driver.records(APP)
        driver.release_lock(APP, holder="bench")
    finally:
        driver.close()
    kept = solo.kubectl("get", "secrets", "-l", f"{APP_LABEL}={APP}", "--field-selector",
                        "type=wavegate.dev/release", "-o", "name").stdout.split()
    good = max(r.revision for r in records if r.status is Status.VERIFIED)
    assert f"secret/wavegate.{APP}.v{good}" in kept  # last-known-good, however old
    assert len(kept) <= 3 + 2  # the limit, plus what a rollback may still need

    newest = max(r.revision for r in records)
    solo.kubectl("annotate", "--overwrite", "secret", f"wavegate.{APP}.v{newest}",
                 "wavegate.dev/record=not json")
    history = {r["revision"]: r for r in solo.history()}
    assert history[newest]["status"] == "unreadable"
    status = json.loads(solo.wavegate("status", APP, "-f", str(solo.fleet_file),
                                      "-o", "json").stdout)["clusters"][0]
    assert status["unreadable"][0]["revision"] == newest
    assert status["last_known_good"]["revision"] == good
    again = solo.deploy(solo.plain, "1.1.0")
    assert again.returncode == 0, again.stderr
    assert solo.served_version() == "1.1.0"


def test_a_custom_resource_follows_its_crd_and_a_rollback_removes_it(solo: Solo) -> None:
    assert not solo.exists("customresourcedefinition/widgets.example.com")
    first = solo.deploy(solo.widget, "1.2.0")  # the CRD, Established, then its Widget
    assert first.returncode == 0, first.stderr
    assert solo.widgets() == ["widget.example.com/admin-widget"]

    without = solo.deploy(solo.extended, "1.3.0")  # the CRD stays, the Widget is pruned
    assert without.returncode == 0, without.stderr
    assert solo.widgets() == []

    plan = solo.wavegate("plan", str(solo.widget), "--version", "2.0.0",
                         "-f", str(solo.fleet_file))
    assert plan.returncode == 0, plan.stderr
    assert "+++ dry run Widget/admin-widget" in plan.stdout  # the server judged it
    assert "+  size: 3" in plan.stdout
    assert solo.widgets() == []  # a dry run wrote nothing

    solo.deploy_fails_its_checks(solo.widget, "2.0.0")
    assert solo.widgets() == []  # applied, then removed by the rollback
    assert solo.exists("customresourcedefinition/widgets.example.com")
    assert solo.served_version() == "1.3.0"


STATEFUL = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: shelf, namespace: library, labels: {wavegate.dev/app: shelf}}
spec:
  replicas: 1
  serviceName: shelf
  selector: {matchLabels: {app: shelf}}
  updateStrategy: {type: OnDelete}
  template:
    metadata: {labels: {app: shelf}}
    spec:
      containers:
        - name: shelf
          image: "library-app:VERSION"
          ports: [{containerPort: 8080}]
"""


def test_a_stateful_set_that_keeps_its_old_pods_fails_its_rollout(solo: Solo) -> None:
    cluster = solo.cluster

    def shelf(version: str) -> Release:
        manifest = yaml.safe_load(STATEFUL.replace("VERSION", version))
        return Release(app="shelf", version=version, manifests=(manifest,), checks="")

    driver = KubernetesDriver(cluster)
    try:
        driver.acquire_lock("shelf", holder="run-s", ttl=60)
        driver.apply(shelf("1.0.0"), holder="run-s")
        driver.wait_rollout(shelf("1.0.0"), timeout=60)
        driver.apply(shelf("1.1.0"), holder="run-s")
        with pytest.raises(RolloutFailed, match="OnDelete: pods are replaced only when deleted"):
            driver.wait_rollout(shelf("1.1.0"), timeout=60)
    finally:
        driver.close()
    image = solo.kubectl("get", "pod", "shelf-0", "-o",
                         "jsonpath={.spec.containers[0].image}").stdout
    assert image == "library-app:1.0.0"  # what the checks would have judged

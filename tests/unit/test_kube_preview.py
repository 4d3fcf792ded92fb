"""The plan's dry-run diff: the change, not the server's bookkeeping, and never a secret."""

from __future__ import annotations

from wavegate.kube.preview import diff


def deployment(image: str, **metadata: object) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", **metadata},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
            "status": {"replicas": 3}}


def test_only_the_change_shows() -> None:
    live = deployment("web:1", resourceVersion="41", generation=3, managedFields=[{}],
                      annotations={"deployment.kubernetes.io/revision": "3"})
    lines = diff("Deployment/web", live, deployment("web:2", resourceVersion="42"))
    changed = [line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-      - image: web:1", "+      - image: web:2"]


def test_nothing_to_change_is_no_diff() -> None:
    assert diff("Deployment/web", deployment("web:1", uid="a"), deployment("web:1")) == []


def test_an_absent_object_is_created() -> None:
    lines = diff("Deployment/web", None, deployment("web:1"))
    assert lines[0] == "--- (absent)" and "+      - image: web:1" in lines


def test_secret_values_never_show() -> None:
    live = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0LW9uZQ=="}}
    after = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0LXR3bw=="}}
    assert diff("Secret/s", live, after) == ["~ Secret/s: changes (contents not shown)"]
    assert diff("Secret/s", live, live) == []

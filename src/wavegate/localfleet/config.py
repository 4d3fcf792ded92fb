"""`agent.json`, the configuration of one local cluster agent, and the layout of its state folder.

Owns the file format (read by the agent at start, written by whoever starts it) and the names
of the files and folders inside `CLUSTER_DIR`. Must not start processes or read objects.

```json
{"cluster": "prod-0",
 "images": {"library-app": ["python", "-m", "library_app", "--version", "${tag}"]},
 "python": "/usr/bin/python3",
 "ingress_port": 0,
 "pythonpath": ["/src"]}
```

`pythonpath` is optional and this package's addition to the protocol: pods get exactly the
container's env plus HOST, PORT and PATH, so an interpreter that cannot import the workload on
its own (a source checkout, nothing installed) needs these folders as PYTHONPATH.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AgentConfig", "ConfigError", "Layout"]


class ConfigError(ValueError):
    """agent.json is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Layout:
    """Where things live inside one cluster's state folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "agent.json"

    @property
    def state(self) -> Path:
        return self.root / "agent.state.json"

    @property
    def lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    @property
    def agent_output(self) -> Path:
        """stdout/stderr of a detached agent: where a crash at startup shows up."""
        return self.logs / "agent.out"


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    images: Mapping[str, tuple[str, ...]]
    python: str
    ingress_port: int = 0
    pythonpath: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        *,
        cluster: str,
        images: Mapping[str, Sequence[str]],
        python: str,
        ingress_port: int = 0,
        pythonpath: Sequence[str] = (),
    ) -> AgentConfig:
        return cls(
            cluster,
            {name: tuple(argv) for name, argv in images.items()},
            python,
            ingress_port,
            tuple(pythonpath),
        )

    @classmethod
    def from_file(cls, path: Path) -> AgentConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot read agent config: {e}") from e
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "agent.json") -> AgentConfig:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        cluster = _require(raw, "cluster", str, source)
        python = _require(raw, "python", str, source)
        port = raw.get("ingress_port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"{source}: ingress_port: expected a port number, got {port!r}")
        return cls.build(
            cluster=cluster,
            images=_images(raw.get("images", {}), source),
            python=python,
            ingress_port=port,
            pythonpath=_strings(raw.get("pythonpath", []), f"{source}: pythonpath"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "images": {name: list(argv) for name, argv in self.images.items()},
            "python": self.python,
            "ingress_port": self.ingress_port,
            "pythonpath": list(self.pythonpath),
        }


def _require(raw: dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or not value:
        raise ConfigError(f"{source}: {key}: expected a non-empty {kind.__name__}, got {value!r}")
    return value


def _images(raw: Any, source: str) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: images: expected an object of image name -> argv")
    images = {}
    for name, argv in raw.items():
        images[str(name)] = _strings(argv, f"{source}: images.{name}")
        if not images[str(name)]:
            raise ConfigError(f"{source}: images.{name}: argv is empty")
    return images


def _strings(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
    return list(raw)

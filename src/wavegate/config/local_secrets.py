"""The local fleet's out-of-band Secrets (`local.secrets`), read from the environment.

The fleet file names a variable per key, never a value. Both places that run the local fleet's
pods need them as Secret objects: the local driver writes them beside the app's objects, the
kube sandbox creates them in each cluster. Every value is registered with `redact` the moment
it is read, and a missing one is an input error naming the variable, never a value.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from wavegate import redact
from wavegate.config.app import Manifest
from wavegate.config.fleet import LocalFleet
from wavegate.errors import InputError

SOURCE_LABEL = "wavegate.dev/source"


def objects(local: LocalFleet, namespace: str, *, fleet_file: Path | None = None,
            environ: Mapping[str, str] | None = None) -> list[Manifest]:
    """One Secret per `local.secrets` entry in `namespace` (InputError if a variable is unset)."""
    env = os.environ if environ is None else environ
    return [_secret(name, keys, namespace, fleet_file=fleet_file, env=env)
            for name, keys in local.secrets.items()]


def _secret(name: str, keys: Mapping[str, str], namespace: str, *, fleet_file: Path | None,
            env: Mapping[str, str]) -> Manifest:
    data = {}
    for key, variable in keys.items():
        value = env.get(variable)
        if not value:
            raise InputError(f"variable {variable} is not set (the local fleet's pods need it)",
                             file=fleet_file, field=f"local.secrets.{name}.{key}")
        redact.register(value)
        data[key] = base64.b64encode(value.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {SOURCE_LABEL: "fleet"}}}

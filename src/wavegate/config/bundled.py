"""The example files that ship with wavegate: the Library App, the local fleet, the deployer RBAC.

The repository keeps them at its top level (`manifests/`, `clusters/local.yaml`), where users of
the checkout edit and read them. A wheel has no checkout, so the build copies them into the
package as `wavegate/_bundled/` (see setup.py); an editable install has no build step, so there
they are read from the checkout itself. Either way there is one copy to edit.

Owns only where those files are; it must not read them (their own loaders do).
"""

from __future__ import annotations

from pathlib import Path

from wavegate.errors import InputError

__all__ = ["app_folder", "local_fleet", "rbac_file", "root"]

_PACKAGED = Path(__file__).resolve().parents[1] / "_bundled"
_CHECKOUT = Path(__file__).resolve().parents[3]  # src/wavegate/config/ -> the repository


def root() -> Path:
    """The folder holding `manifests/` and `clusters/`: packaged, else the source checkout."""
    for candidate in (_PACKAGED, _CHECKOUT):
        if (candidate / "manifests").is_dir():
            return candidate
    raise InputError(f"wavegate's bundled examples are missing (looked in {_PACKAGED}); "
                     "reinstall wavegate")


def app_folder(name: str) -> Path:
    """A bundled app folder, such as `library-app`."""
    return root() / "manifests" / name


def local_fleet() -> Path:
    """The embedded local fleet file (six clusters, short bakes)."""
    return root() / "clusters" / "local.yaml"


def rbac_file() -> Path:
    """The least-privilege deployer role the kube sandbox grants its restricted user."""
    return root() / "manifests" / "rbac" / "deployer.yaml"

"""Build hook: a wheel carries the repository's example files as package data.

`manifests/` (the Library App, the deployer RBAC) and `clusters/local.yaml` stay at the top of
the repository, where its users edit them; the build copies them into `wavegate/_bundled/`, so
an installed wheel runs `wavegate demo` and `fleet up --kube` with no checkout. An editable
install skips the copy: `wavegate.config.bundled` reads the checkout itself there. Everything
else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ("manifests", "clusters/local.yaml")  # relative to the repository and to _bundled/


class BuildPyWithExamples(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "wavegate" / "_bundled"
        for name in BUNDLED:
            source, copy = HERE / name, target / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, copy, dirs_exist_ok=True)
            else:
                shutil.copy2(source, copy)


setup(cmdclass={"build_py": BuildPyWithExamples})

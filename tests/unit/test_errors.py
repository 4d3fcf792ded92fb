"""The exception tree is one tree: every error a user can meet lives in `wavegate.errors`, with
the exit code its docstring says, so no error reaches exit 3 by accident."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import wavegate
from wavegate import errors
from wavegate.errors import WavegateError

# "    ├── LockHeld            (4)   another run holds ..." -> ("LockHeld", 4)
TREE_LINE = re.compile(r"^\s*(?:[│ ]*[├└]── )?(\w+)\s+(?:\((\d+)\))?", re.MULTILINE)


def every_module() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(wavegate.__path__, "wavegate.")
            if not info.name.endswith("__main__")]


def every_error() -> set[type[WavegateError]]:
    for name in every_module():
        importlib.import_module(name)
    found: set[type[WavegateError]] = set()
    pending: list[type[WavegateError]] = [WavegateError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def drawn_tree() -> dict[str, int | None]:
    doc = errors.__doc__ or ""
    block = doc.split("\n\n")[1]  # the tree is the docstring's second paragraph
    return {name: int(code) if code else None for name, code in TREE_LINE.findall(block)}


def test_every_wavegate_error_is_defined_in_the_errors_module() -> None:
    elsewhere = sorted(f"{cls.__module__}.{cls.__name__}" for cls in every_error()
                       if cls.__module__ != "wavegate.errors")
    assert elsewhere == []


def test_the_docstring_draws_every_error_class() -> None:
    assert {cls.__name__ for cls in every_error()} == set(drawn_tree())


@pytest.mark.parametrize("cls", sorted(every_error() - {WavegateError}, key=lambda c: c.__name__),
                         ids=lambda cls: cls.__name__)
def test_each_error_sets_the_exit_code_the_tree_shows(cls: type[WavegateError]) -> None:
    assert "exit_code" in vars(cls), f"{cls.__name__} inherits its exit code"
    assert cls.exit_code == drawn_tree()[cls.__name__]


def test_the_tree_nests_each_class_under_its_parent() -> None:
    doc = (errors.__doc__ or "").split("\n\n")[1].splitlines()
    depth = {TREE_LINE.match(line)[1]: len(line) - len(line.lstrip(" │├└─"))  # type: ignore[index]
             for line in doc}
    for cls in every_error() - {WavegateError}:
        parent = cls.__bases__[0].__name__
        assert depth[cls.__name__] > depth[parent], f"{cls.__name__} is drawn beside {parent}"

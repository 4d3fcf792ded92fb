"""`${name}` placeholders, filled from a flat mapping; `$${` writes a literal `${`.

An unknown placeholder is an input error naming the template's file and line, so a typo never
reaches a cluster as a literal `${replcias}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from wavegate.errors import InputError

_PLACEHOLDER = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def render(text: str, variables: Mapping[str, str], *, file: Path) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        name = match.group(2)
        if name not in variables:
            line = text.count("\n", 0, match.start()) + 1
            known = ", ".join(sorted(variables))
            raise InputError(f"unknown placeholder ${{{name}}} (known: {known})",
                             file=file, line=line)
        return variables[name]

    return _PLACEHOLDER.sub(substitute, text)


def placeholders(text: str) -> set[str]:
    return {match.group(2) for match in _PLACEHOLDER.finditer(text) if not match.group(1)}

"""Spaces and who may see them: the app's data and authorization rules.

Owns the dataset (built in, or `LIBRARY_DATA`) and the pure decisions "which spaces may this
user list, read or find". It also owns the deliberate regressions (release 2.0.0 and the
`LIBRARY_LEAK` variants), because they are bugs in these rules and wavegate exists to catch
them. It must not know about HTTP or tokens; it reads only the mapping it is handed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

# The incident release: it shipped without the member filter.
REGRESSED_VERSION = "2.0.0"
# The release after it: search got its own index, which skips the member filter. Lists and
# reads are correct, so only a check that looks at search (or at access drift) sees the leak.
SEARCH_LEAK_VERSION = "2.1.0"


@dataclass(frozen=True)
class Space:
    id: str
    name: str
    members: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "members": list(self.members)}


BUILTIN_SPACES: tuple[Space, ...] = (
    Space("space-eng", "Engineering", ("alice", "carol")),
    Space("space-finance", "Finance", ("bob",)),
    Space("space-hr", "Human Resources", ("carol",)),
)


class Leak(enum.Enum):
    """`LIBRARY_LEAK`: regressions subtler than 2.0.0, for "a leak the tests never saw"."""

    NONE = ""
    LIST_ONLY = "list-only"  # the list shows every space; direct reads stay filtered
    BOB_ONLY = "bob-only"  # bob sees every space everywhere; everyone else is filtered
    SEARCH = "search"  # /api/search skips the filter; list and read stay correct
    BOB_READS = "bob-reads"  # bob reads any space directly (role confusion); lists stay correct


class Endpoint(enum.Enum):
    LIST = "list"
    READ = "read"
    SEARCH = "search"


@dataclass(frozen=True)
class Policy:
    member_filter: bool = True
    leak: Leak = Leak.NONE

    @classmethod
    def from_env(cls, version: str, env: Mapping[str, str]) -> Policy:
        leak = parse_leak(env.get("LIBRARY_LEAK", ""))
        if leak is Leak.NONE and version == SEARCH_LEAK_VERSION:
            leak = Leak.SEARCH
        return cls(member_filter_enabled(version, env), leak)


def member_filter_enabled(version: str, env: Mapping[str, str]) -> bool:
    # One named switch for the incident, so the regression is a value, not a second code path.
    return version != REGRESSED_VERSION and env.get("LIBRARY_MEMBER_FILTER") != "off"


def parse_leak(value: str) -> Leak:
    try:
        return Leak(value)
    except ValueError:
        # A typo must not silently run the correct app in a test that expects a leak.
        choices = ", ".join(leak.value for leak in Leak if leak.value)
        raise ValueError(f"LIBRARY_LEAK={value!r}: expected one of {choices}") from None


def may_see(space: Space, user: str, endpoint: Endpoint, policy: Policy) -> bool:
    return user in space.members or _sees_everything(user, endpoint, policy)


def _sees_everything(user: str, endpoint: Endpoint, policy: Policy) -> bool:
    if not policy.member_filter:
        return True
    match policy.leak:
        case Leak.NONE:
            return False
        case Leak.LIST_ONLY:
            return endpoint is Endpoint.LIST
        case Leak.BOB_ONLY:
            return user == "bob"
        case Leak.SEARCH:
            return endpoint is Endpoint.SEARCH
        case Leak.BOB_READS:
            return user == "bob" and endpoint is Endpoint.READ
        case _:
            assert_never(policy.leak)


def listable(spaces: Iterable[Space], user: str, policy: Policy) -> list[Space]:
    return [s for s in spaces if may_see(s, user, Endpoint.LIST, policy)]


def readable(spaces: Iterable[Space], space_id: str, user: str, policy: Policy) -> Space | None:
    # None both for "no such space" and "not yours": callers cannot reveal which it was.
    found = (s for s in spaces if s.id == space_id and may_see(s, user, Endpoint.READ, policy))
    return next(found, None)


def search(spaces: Iterable[Space], query: str, user: str, policy: Policy) -> list[Space]:
    needle = query.casefold()
    return [s for s in spaces if _matches(s, needle) and may_see(s, user, Endpoint.SEARCH, policy)]


def _matches(space: Space, needle: str) -> bool:
    return needle in space.id.casefold() or needle in space.name.casefold()


def load_spaces(env: Mapping[str, str]) -> tuple[Space, ...]:
    """The built-in dataset, or the `{"spaces": [...]}` file named by `LIBRARY_DATA`."""
    path = env.get("LIBRARY_DATA")
    if not path:
        return BUILTIN_SPACES
    try:
        return parse_spaces(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"LIBRARY_DATA={path}: {e}") from e


def parse_spaces(doc: object) -> tuple[Space, ...]:
    if not isinstance(doc, dict) or not isinstance(doc.get("spaces"), list):
        raise ValueError('expected an object {"spaces": [...]}')
    parsed = tuple(_parse_space(i, item) for i, item in enumerate(doc["spaces"]))
    ids = [s.id for s in parsed]
    if len(set(ids)) != len(ids):
        raise ValueError("space ids must be unique")
    return parsed


def _parse_space(index: int, item: object) -> Space:
    if not isinstance(item, dict):
        raise ValueError(f"spaces[{index}]: expected an object")
    space_id, name, members = item.get("id"), item.get("name"), item.get("members")
    if not isinstance(space_id, str) or not isinstance(name, str):
        raise ValueError(f"spaces[{index}]: id and name must be strings")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ValueError(f"spaces[{index}]: members must be a list of strings")
    return Space(space_id, name, tuple(members))

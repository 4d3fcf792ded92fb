"""Bearer tokens: who is calling.

A user `u` exists exactly when `LIBRARY_TOKEN_<U>` is set and non-empty; its value is u's
token. `LIBRARY_TOKENS_FILE`, when set, names a file of `user=token` lines read again at every
request, whose tokens replace the environment's for the users it names: a token rotated under a
running process (what a credential rotation looks like to the orchestrator). Owns parsing
`Authorization: Bearer ...` and the constant-time comparison. It must never log, print or repr
a token: only SHA-256 digests are kept, and they are hidden from repr.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "LIBRARY_TOKEN_"
FILE_ENV = "LIBRARY_TOKENS_FILE"


@dataclass(frozen=True)
class Tokens:
    digests: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tokens:
        # An empty value would let a bare "Bearer " header authenticate, so it grants nothing.
        return cls(
            tuple(
                (name.removeprefix(ENV_PREFIX).lower(), _digest(value))
                for name, value in sorted(env.items())
                if name.startswith(ENV_PREFIX) and name != ENV_PREFIX and value
            ),
            file=Path(env[FILE_ENV]) if env.get(FILE_ENV) else None,
        )

    def _current(self) -> tuple[tuple[str, bytes], ...]:
        """The digests in force now: the environment's, with the token file's on top."""
        if self.file is None:
            return self.digests
        try:
            lines = self.file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return self.digests
        named = dict(line.strip().partition("=")[::2] for line in lines if "=" in line)
        rotated = tuple((user, _digest(token)) for user, token in named.items() if token)
        return tuple(d for d in self.digests if d[0] not in named) + rotated

    @property
    def users(self) -> frozenset[str]:
        return frozenset(user for user, _ in self.digests)

    def user_for(self, authorization: str | None) -> str | None:
        """The user whose token the header carries, or None."""
        presented = _bearer(authorization)
        if presented is None:
            return None
        # Compare against every user rather than stopping at the first hit, and compare
        # fixed-length digests, so timing says nothing about which token was close.
        matches = [user for user, d in self._current()
                   if hmac.compare_digest(d, _digest(presented))]
        return matches[0] if len(matches) == 1 else None


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()

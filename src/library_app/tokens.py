"""Bearer tokens: who is calling.

A user `u` exists exactly when `LIBRARY_TOKEN_<U>` is set and non-empty; its value is u's
token. Owns parsing `Authorization: Bearer ...` and the constant-time comparison. It must never
log, print or repr a token: only SHA-256 digests are kept, and they are hidden from repr.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

ENV_PREFIX = "LIBRARY_TOKEN_"


@dataclass(frozen=True)
class Tokens:
    digests: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tokens:
        # An empty value would let a bare "Bearer " header authenticate, so it grants nothing.
        return cls(
            tuple(
                (name.removeprefix(ENV_PREFIX).lower(), _digest(value))
                for name, value in sorted(env.items())
                if name.startswith(ENV_PREFIX) and name != ENV_PREFIX and value
            )
        )

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
        matches = [user for user, d in self.digests if hmac.compare_digest(d, _digest(presented))]
        return matches[0] if len(matches) == 1 else None


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()

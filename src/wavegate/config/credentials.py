"""Reading the principals' tokens from the environment or files, and nowhere else.

A token that cannot be read is an input error naming the checks file and the principal's line;
the error names the variable or file, never a value. Every token read is registered with
`redact` before it is returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from wavegate import redact
from wavegate.config.checks import Principal, Suite
from wavegate.errors import InputError

Tokens = Mapping[str, str | None]  # principal name -> token (None: sends none)


def resolve(suite: Suite, environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    env = os.environ if environ is None else environ
    return {name: _token(principal, suite, env) for name, principal in suite.principals.items()}


def _token(principal: Principal, suite: Suite, env: Mapping[str, str]) -> str | None:
    token = None
    if principal.token_env is not None:
        token = env.get(principal.token_env)
        if not token:
            raise _error(suite, principal, f"variable {principal.token_env} is not set")
    elif principal.token_file is not None:
        try:
            token = principal.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise _error(suite, principal,
                         f"cannot read {principal.token_file}: {error.strerror}") from None
        if not token:
            raise _error(suite, principal, f"{principal.token_file} is empty")
    if token is not None:
        redact.register(token)
    return token


def _error(suite: Suite, principal: Principal, problem: str) -> InputError:
    return InputError(f"token for principal {principal.name!r}: {problem}",
                      file=suite.file, line=principal.line, field=f"principals.{principal.name}")

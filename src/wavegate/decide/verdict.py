"""Judging one probe's answer: pass, fail or error. Pure; the tables in the tests are the spec.

    pass   the expectation holds
    fail   an expectation not met; never retried, acted on at once. `security` when access was
           granted where a denial was due (or a list showed more than it may, or more than
           the release before it showed: access drift)
    error  the check could not be judged: timeout, refused connection, 5xx, an answer past the
           probe's deadline or body limit, or a 401 for a
           principal that sent a token (its probe credential is broken, which must never pass
           as a correct denial). Transport errors and 5xx are `retryable`; a 401 is an answer
           and is not asked again.

Details name the principal, the request and the status, never a token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wavegate.config import jsonpath
from wavegate.config.checks import DENIAL_STATUSES, Allowed, Denied, Expect, Probe, Unchanged


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True)
class TransportError:
    """The request got no HTTP answer (timeout, refused, reset)."""

    reason: str


@dataclass(frozen=True)
class Unreadable:
    """An answer began but could not be read whole: past the deadline or the body limit, or
    in an encoding that does not decode. Judging part of a body could pass a leak."""

    reason: str
    status: int | None = None


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    severity: str
    detail: str
    retryable: bool = False
    status: int | None = None


def judge(probe: Probe, answer: Response | TransportError | Unreadable) -> Verdict:
    if isinstance(answer, TransportError):
        return _error(probe, f"no answer: {answer.reason}", retryable=True)
    if isinstance(answer, Unreadable):
        return _error(probe, answer.reason, retryable=True, status=answer.status)
    if answer.status >= 500:
        return _error(probe, f"got {answer.status}", retryable=True, status=answer.status)
    sent_token = probe.principal is not None and probe.principal.sends_token
    expectation = probe.expectation
    if answer.status == 401 and sent_token and not _expects(expectation, 401):
        return _error(probe, "got 401 although a token was sent: the probe credential is "
                             "broken", status=401)
    if isinstance(expectation, Allowed):
        return _judge_allowed(probe, expectation, answer)
    if isinstance(expectation, Denied):
        return _judge_denied(probe, expectation, answer)
    if isinstance(expectation, Unchanged):
        return _judge_unchanged(probe, expectation, answer)
    return _judge_expect(probe, expectation, answer)


def _expects(expectation: Expect | Allowed | Denied | Unchanged, status: int) -> bool:
    return isinstance(expectation, Expect) and status in expectation.status


def _judge_allowed(probe: Probe, expectation: Allowed, answer: Response) -> Verdict:
    if not 200 <= answer.status < 300:
        return _fail(probe, f"a member was refused: got {answer.status}, expected access",
                     severity="functional", status=answer.status)
    if expectation.marker.encode() not in answer.body:
        return _fail(probe, f"got {answer.status} without the marker {expectation.marker!r}",
                     severity="functional", status=answer.status)
    return _pass(probe, f"allowed ({answer.status})", answer.status)


def _judge_denied(probe: Probe, expectation: Denied, answer: Response) -> Verdict:
    leaked = expectation.marker.encode() in answer.body
    if 200 <= answer.status < 300:
        return _fail(probe, f"access granted where a denial was due: got {answer.status}"
                            + (f", body shows {expectation.marker!r}" if leaked else ""),
                     severity="security", status=answer.status)
    if answer.status not in DENIAL_STATUSES:
        return _fail(probe, f"expected a denial (401/403/404), got {answer.status}",
                     severity=probe.severity, status=answer.status)
    if leaked:
        return _fail(probe, f"denied with {answer.status} but the body shows "
                            f"{expectation.marker!r}", severity="security", status=answer.status)
    return _pass(probe, f"denied ({answer.status})", answer.status)


def _judge_expect(probe: Probe, expectation: Expect, answer: Response) -> Verdict:
    if answer.status not in expectation.status:
        wanted = "/".join(str(code) for code in expectation.status)
        return _fail(probe, f"got {answer.status}, expected {wanted}",
                     severity=probe.severity, status=answer.status)
    if not expectation.json and expectation.json_ids is None:
        return _pass(probe, f"got {answer.status}", answer.status)
    try:
        document = json.loads(answer.body)
    except ValueError:
        return _fail(probe, f"got {answer.status} with a body that is not JSON",
                     severity=probe.severity, status=answer.status)
    problem = _field_problem(expectation, document)
    if problem is not None:
        return _fail(probe, problem, severity=probe.severity, status=answer.status)
    # A list showing ids it may not is a leak, whatever the check's declared severity.
    problem = _unjudgeable_ids(expectation, document)
    if problem is not None:
        return _fail(probe, problem, severity=probe.severity, status=answer.status)
    problem = _ids_problem(expectation, document)
    if problem is not None:
        return _fail(probe, problem, severity="security", status=answer.status)
    problem = _missing_ids(expectation, document)
    if problem is not None:
        return _fail(probe, problem, severity="functional", status=answer.status)
    return _pass(probe, f"got {answer.status} as expected", answer.status)


def _judge_unchanged(probe: Probe, expectation: Unchanged, answer: Response) -> Verdict:
    served = 200 <= answer.status < 300
    listed = listed_ids(expectation.ids, answer.body) if served and expectation.ids else []
    if isinstance(listed, str):  # a listing that cannot be read must not pass as "no new id"
        return _fail(probe, listed, severity=probe.severity, status=answer.status)
    if expectation.before is None:
        return _pass(probe, f"{expectation.note or 'no baseline'} ({answer.status})",
                     answer.status)
    was = expectation.version or "the release before"
    if not served:
        if expectation.before.served:
            what = f"{expectation.target} " if expectation.target else ""
            return _fail(probe, f"refused {what}with {answer.status}, where {was} served it",
                         severity="functional", status=answer.status)
        return _pass(probe, f"refused ({answer.status}), as {was} did", answer.status)
    if expectation.ids is None:
        return _judge_read(probe, expectation, answer.status, was)
    new = sorted({value for value in listed if not expectation.saw(value)
                  and value not in expectation.allow_new})
    if new:
        shown = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
        return _fail(probe, f"now shows {shown}, which {was} did not show",
                     severity="security", status=answer.status)
    return _pass(probe, f"shows {len(set(listed))} ids, none new since {was}", answer.status)


def _judge_read(probe: Probe, expectation: Unchanged, status: int, was: str) -> Verdict:
    assert expectation.before is not None
    if expectation.before.served:
        return _pass(probe, f"served ({status}), as {was} did", status)
    if expectation.target in expectation.allow_new:
        return _pass(probe, f"served ({status}): a grant allow_new names", status)
    return _fail(probe, f"served {expectation.target} ({status}), which {was} refused",
                 severity="security", status=status)


def listed_ids(path: str, body: bytes) -> list[str] | str:
    """The ids at `path` in a JSON body, or why they cannot be read."""
    try:
        document = json.loads(body)
    except ValueError:
        return "the answer is not JSON, so its ids cannot be judged"
    problem = _unreachable(path, document)
    return problem if problem else [str(value) for value in jsonpath.select(document, path)
                                    if value is not None]


def _field_problem(expectation: Expect, document: Any) -> str | None:
    for key, wanted in expectation.json.items():
        actual = document.get(key) if isinstance(document, dict) else None
        if actual != wanted:
            return f"field {key!r} is {actual!r}, expected {wanted!r}"
    return None


def _unjudgeable_ids(expectation: Expect, document: Any) -> str | None:
    """A listing whose shape changed must not pass vacuously: nothing is a subset of anything."""
    ids = expectation.json_ids
    return _unreachable(ids.path, document) if ids is not None else None


def _unreachable(path: str, document: Any) -> str | None:
    if "[*]" not in path:
        return None
    head = path.split("[*]", 1)[0]
    if any(isinstance(found, list | dict) for found in jsonpath.select(document, head)):
        return None
    return f"{head} is not in the answer, so {path} cannot be judged"


def _ids_problem(expectation: Expect, document: Any) -> str | None:
    """Ids the list may not show (a leak); for `equals`, also ids it should but does not."""
    ids = expectation.json_ids
    if ids is None:
        return None
    found = {str(value) for value in jsonpath.select(document, ids.path)}
    allowed = set(ids.subset_of if ids.subset_of is not None else ids.equals or ())
    extra = sorted(found - allowed)
    if extra:
        return f"ids at {ids.path} include {', '.join(extra)}, beyond the allowed set"
    return None


def _missing_ids(expectation: Expect, document: Any) -> str | None:
    ids = expectation.json_ids
    if ids is None or ids.equals is None:
        return None
    missing = sorted(set(ids.equals) - {str(v) for v in jsonpath.select(document, ids.path)})
    return f"ids at {ids.path} lack {', '.join(missing)}" if missing else None


def _pass(probe: Probe, detail: str, status: int) -> Verdict:
    return Verdict(Outcome.PASS, probe.severity, detail, status=status)


def _fail(probe: Probe, detail: str, *, severity: str, status: int) -> Verdict:
    return Verdict(Outcome.FAIL, severity, detail, status=status)


def _error(probe: Probe, detail: str, *, retryable: bool = False,
           status: int | None = None) -> Verdict:
    return Verdict(Outcome.ERROR, probe.severity, detail, retryable=retryable, status=status)


def expected(probe: Probe) -> str:
    """What a passing answer looks like, in words, for reports that show evidence."""
    expectation = probe.expectation
    if isinstance(expectation, Allowed):
        return f"2xx showing {expectation.marker!r}"
    if isinstance(expectation, Denied):
        return f"a denial ({'/'.join(map(str, DENIAL_STATUSES))}) without {expectation.marker!r}"
    if isinstance(expectation, Unchanged):
        return _expected_unchanged(expectation)
    parts = ["/".join(str(code) for code in expectation.status)]
    parts += [f"{key} = {value!r}" for key, value in expectation.json.items()]
    ids = expectation.json_ids
    if ids is not None and ids.subset_of is not None:
        parts.append(f"ids at {ids.path} within [{', '.join(ids.subset_of)}]")
    elif ids is not None and ids.equals is not None:
        parts.append(f"ids at {ids.path} exactly [{', '.join(ids.equals)}]")
    return ", ".join(parts)


def _expected_unchanged(expectation: Unchanged) -> str:
    before = expectation.before
    if before is None:
        return "an answer that can be read (no baseline to compare with)"
    was = expectation.version or "the release before"
    if expectation.ids is None:
        return f"{'served' if before.served else 'refused'}, as {was} did"
    if not before.served:
        return f"refused, or no id at {expectation.ids}, as {was} did"
    grants = f" (or {', '.join(sorted(expectation.allow_new))})" if expectation.allow_new else ""
    return f"served, no id at {expectation.ids} that {was} did not show{grants}"

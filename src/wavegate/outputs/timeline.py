"""A run, or a fleet's ledger history, as rows of timed spans and marks: what happened when.

Pure: report and history dicts in, `Row`s out, for the HTML page to draw. A span is a phase a
cluster spent time in (apply, rollout, first verification, bake, watch, failed, rollback);
a mark is one check round (pass, fail, error). The times are the report's own: the state
changes and rounds `outputs.report` stamps as the run goes. Reports written before those were
recorded give rows without spans, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Report states that are time spent doing something; `verified` becomes `watch` only while
# the run kept checking after its last wave.
PHASES = {"applying": "apply", "rolling-out": "rollout", "verifying": "verify",
          "baking": "bake", "failed": "failed", "rolling-back": "rollback"}
ROUND_PHASES = {"verifying": "first verification", "baking": "bake", "verified": "watch",
                "rolled-back": "rollback verification", "rolling-back": "rollback verification"}
HISTORY_PER_CLUSTER = 10


@dataclass(frozen=True)
class Span:
    phase: str
    start: datetime
    end: datetime
    note: str


@dataclass(frozen=True)
class Mark:
    at: datetime
    outcome: str  # pass | fail | error
    note: str


@dataclass(frozen=True)
class Row:
    cluster: str
    group: str  # the wave, on a run's page
    state: str
    touched: bool
    spans: tuple[Span, ...] = ()
    marks: tuple[Mark, ...] = ()


@dataclass(frozen=True)
class Failure:
    """The failure that decided a run: where, when, why, and the probes that showed it."""

    cluster: str
    at: datetime | None
    reason: str | None
    problems: list[dict[str, Any]] = field(default_factory=list)


def when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def clock(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(delta: timedelta) -> str:
    value = delta.total_seconds()
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"


# --- a run ---------------------------------------------------------------------------------

def run_window(report: dict[str, Any]) -> tuple[datetime, datetime]:
    """The run's own time axis: from its start to its end (or its latest recorded moment)."""
    moments = [moment for cluster in report.get("clusters", [])
               for moment in _moments(cluster)]
    start = when(report.get("started_at")) or min(moments, default=None)
    end = when(report.get("finished_at")) or max(moments, default=None)
    if start is None:
        start = end or datetime.fromtimestamp(0).astimezone()
    if end is None or end <= start:
        end = max([start + timedelta(seconds=1), *moments])
    return start, end


def run_rows(report: dict[str, Any]) -> list[Row]:
    clusters = report.get("clusters", [])
    _, end = run_window(report)
    watch_from = _watch_start(report)
    return [Row(cluster=c["cluster"], group=c.get("wave") or "", state=c.get("state") or "",
                touched=touched(c), spans=tuple(_spans(c, end=end, watch_from=watch_from)),
                marks=tuple(_marks(c))) for c in clusters]


def touched(cluster: dict[str, Any]) -> bool:
    """Whether the run wrote anything to this cluster (a pending one with no history did not)."""
    states = {event.get("state") for event in cluster.get("timeline", [])}
    return bool(cluster.get("revisions") or cluster.get("revision") is not None
                or states - {"pending"} or cluster.get("state") not in (None, "pending"))


def rolled_back(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Clusters a rollback put back, and clusters where it failed."""
    done, failed = [], []
    for cluster in report.get("clusters", []):
        if cluster.get("state") == "rollback-failed":
            failed.append(cluster["cluster"])
        elif cluster.get("state") == "rolled-back":
            done.append(cluster["cluster"])
    return done, failed


def decisive_failure(report: dict[str, Any]) -> Failure | None:
    """The first cluster that failed, with the round of checks that failed it."""
    firsts = [(at, cluster, event.get("detail")) for cluster in report.get("clusters", [])
              for event in cluster.get("timeline", [])
              if event.get("state") == "failed" and (at := when(event.get("at")))]
    if firsts:
        at, cluster, reason = min(firsts, key=lambda item: item[0])
        return Failure(cluster["cluster"], at, reason or cluster.get("detail"),
                       _evidence(cluster, before=at))
    return _failure_without_timeline(report)


def _failure_without_timeline(report: dict[str, Any]) -> Failure | None:
    """Reports from before the timeline was kept: the first cluster whose checks failed."""
    if report.get("command") == "rollback":
        return None  # a rollback's clusters end rolled-back by design, not by failing
    for outcome in ("fail", "error"):
        for cluster in report.get("clusters", []):
            problems = [c for c in cluster.get("checks", []) if c.get("outcome") == outcome]
            if problems and not cluster.get("timeline"):
                return Failure(cluster["cluster"], None, cluster.get("detail"), problems)
    return None


def _evidence(cluster: dict[str, Any], *, before: datetime) -> list[dict[str, Any]]:
    rounds = [r for r in cluster.get("rounds", []) if r.get("outcome") != "pass"
              and (at := when(r.get("at"))) is not None and at <= before]
    if rounds:
        return list(rounds[-1].get("problems", []))
    if cluster.get("rounds"):
        return []  # it failed for another reason (its rollout), after checks that passed
    return [c for c in cluster.get("checks", []) if c.get("outcome") != "pass"]


def _moments(cluster: dict[str, Any]) -> list[datetime]:
    texts = [e.get("at") for e in cluster.get("timeline", [])] + [
        r.get("at") for r in cluster.get("rounds", [])]
    return [moment for text in texts if (moment := when(text)) is not None]


def _watch_start(report: dict[str, Any]) -> datetime | None:
    """When the last wave was verified, if the run then kept checking (its watch)."""
    if report.get("command") != "deploy":
        return None
    clusters = report.get("clusters", [])
    watched = any(r.get("phase") == "verified" for c in clusters for r in c.get("rounds", []))
    verified = [when(e.get("at")) for c in clusters for e in c.get("timeline", [])
                if e.get("state") == "verified"]
    moments = [moment for moment in verified if moment is not None]
    return max(moments) if watched and moments else None


def _spans(cluster: dict[str, Any], *, end: datetime, watch_from: datetime | None) -> list[Span]:
    events = [(at, event["state"]) for event in cluster.get("timeline", [])
              if (at := when(event.get("at"))) is not None and event.get("state")]
    spans = []
    for index, (start, state) in enumerate(events):
        stop = events[index + 1][0] if index + 1 < len(events) else end
        phase = PHASES.get(state)
        if state == "verified" and watch_from is not None:
            start, phase = max(start, watch_from), "watch"
        if phase is None or stop < start:
            continue
        spans.append(Span(phase, start, stop, f"{phase}: {clock(start)} to {clock(stop)} UTC "
                                               f"({seconds(stop - start)})"))
    return spans


def _marks(cluster: dict[str, Any]) -> list[Mark]:
    marks = []
    for round_ in cluster.get("rounds", []):
        at = when(round_.get("at"))
        if at is None:
            continue
        phase = ROUND_PHASES.get(round_.get("phase") or "", "check")
        outcome = round_.get("outcome") or "error"
        counts = (f"{round_.get('passed', 0)} passed, {round_.get('failed', 0)} failed, "
                  f"{round_.get('errors', 0)} errors")
        marks.append(Mark(at, outcome, f"{phase} round at {clock(at)} UTC: {outcome} "
                                       f"({counts})"))
    return marks


# --- a fleet's ledger history ----------------------------------------------------------------

def history_window(records: Sequence[dict[str, Any]], now: datetime) -> tuple[datetime, datetime]:
    starts = [moment for record in records if (moment := when(record.get("started_at")))]
    start = min(starts, default=now - timedelta(hours=1))
    return start, max(now, start + timedelta(seconds=1))


def history_rows(clusters: Sequence[str], records: Sequence[dict[str, Any]],
                 now: datetime) -> list[Row]:
    """Per cluster, its newest revisions as spans; the live one runs on until now."""
    rows = []
    for name in clusters:
        mine = sorted((r for r in records if r["cluster"] == name),
                      key=lambda r: r["revision"])[-HISTORY_PER_CLUSTER:]
        spans = [span for index, record in enumerate(mine)
                 for span in _record_spans(record, mine[index + 1:], now)]
        state = mine[-1]["status"] if mine else "none"
        rows.append(Row(cluster=name, group="", state=state, touched=bool(mine),
                        spans=tuple(spans)))
    return rows


def _record_spans(record: dict[str, Any], later: Sequence[dict[str, Any]],
                  now: datetime) -> list[Span]:
    start = when(record.get("started_at"))
    if start is None:
        return []
    following = when(later[0].get("started_at")) if later else None
    finished = when(record.get("finished_at")) or following or now
    label = (f"r{record['revision']} {record['version']} {record['status']}, run "
             f"{record['run_id']} by {record['by']}")
    spans = [Span(record["status"], start, finished,
                  f"{label}: {stamp(start)} to {stamp(finished)} UTC")]
    if record["status"] == "verified" and finished < (following or now):
        until = following or now
        spans.append(Span("live", finished, until, f"{label}: live until "
                                                   f"{'replaced' if following else 'now'}"))
    return spans

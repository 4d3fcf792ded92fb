"""The HTML pages: a run (its timeline, the failure that decided it, its clusters) and a
fleet's status (live, last-known-good, locks, and the ledger history as a timeline).

Pure rendering: dicts in (the run report of `outputs.report`, the status and history shapes of
`wavegate status`/`history -o json`), one HTML string out. The page is self-contained: inline
CSS, inline SVG, one small inline script pinned by its hash in a Content-Security-Policy of
`default-src 'none'`, so a browser refuses any request the page might try. Every text is
escaped, and registered secrets are scrubbed from the whole page on the way out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from wavegate import redact
from wavegate.outputs import timeline
from wavegate.outputs.timeline import Failure, Row

WIDTH = 1000  # the SVG track's own units; the track stretches to the page's width
EXIT_WORDS = {0: "done, every check passed",
              1: "the release failed its checks and was rolled back cleanly",
              2: "bad input: nothing was touched",
              3: "a rollback failed or a cluster could not be reached: a human must act",
              4: "another run holds the lock, or this run was preempted",
              10: "paused at an approval gate"}
OUTCOME_WORDS = {"succeeded": "Succeeded", "rolled-back": "Rolled back",
                 "needs-human": "Needs a human", "interrupted": "Interrupted",
                 "preempted": "Preempted", "paused": "Paused", "aborted": "Aborted",
                 "locked": "Locked out", "error": "Stopped by an error",
                 "bad-input": "Bad input", "passed": "Checks passed",
                 "failed": "Checks failed"}
STATE_WORDS = {"rolled-back": "rolled back", "rollback-failed": "rollback failed",
               "rolling-back": "rolling back", "rolling-out": "rolling out",
               "pending": "not reached"}
PHASE_LEGEND = ("apply", "rollout", "verify", "bake", "watch", "failed", "rollback")
HISTORY_LEGEND = ("applying", "verified", "live", "failed", "rolled-back", "interrupted",
                  "superseded")

STYLE = """
:root{--ink:#1d2330;--muted:#5d6679;--line:#d9dde6;--bg:#fff;--panel:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
.outcome{font-size:1.1rem;font-weight:600;padding:.5rem .75rem;border-radius:6px;
background:var(--panel);border-left:6px solid var(--muted)}
.outcome.good{border-color:#219653}.outcome.bad{border-color:#c0392b}
.outcome.warn{border-color:#e67e22}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.3rem 1rem;
margin:.75rem 0}.facts div{min-width:0;overflow-wrap:anywhere}
.facts dt{color:var(--muted);font-size:.8rem}.facts dd{margin:0}
#glance{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem}
#glance li{padding:.35rem .6rem;border-radius:6px;background:var(--panel)}
#glance li b{margin-right:.3rem}
.legend{display:flex;flex-wrap:wrap;gap:.3rem .9rem;font-size:.85rem;color:var(--muted)}
.swatch{display:inline-block;width:.9rem;height:.9rem;border-radius:2px;
vertical-align:-.15rem;margin-right:.25rem}
.tick-swatch{display:inline-block;width:3px;height:.95rem;vertical-align:-.15rem;
margin-right:.3rem}
.wave{margin:.6rem 0 .1rem;font-weight:600;font-size:.9rem;color:var(--muted)}
.row,.axis-row{display:grid;grid-template-columns:12rem 1fr;gap:.5rem;align-items:center}
.label{overflow-wrap:anywhere}.label .state{font-size:.8rem;color:var(--muted);display:block}
.track{width:100%;height:26px;display:block;background:var(--panel);border-radius:3px}
.row.untouched .track{background:repeating-linear-gradient(90deg,var(--panel) 0 6px,#fff 6px 12px)}
.axis{position:relative;height:1.2rem;font-size:.75rem;color:var(--muted)}
.axis span{position:absolute;transform:translateX(-50%);white-space:nowrap}
.axis span:first-child{transform:none}
[data-note]{cursor:pointer}
#picked{min-height:1.4rem;font-size:.85rem;color:var(--muted);margin:.4rem 0}
.ph-apply{fill:#f2c94c;background:#f2c94c}.ph-rollout{fill:#f2994a;background:#f2994a}
.ph-verify{fill:#56ccf2;background:#56ccf2}.ph-bake{fill:#2f80ed;background:#2f80ed}
.ph-watch{fill:#6fcf97;background:#6fcf97}.ph-failed{fill:#eb5757;background:#eb5757}
.ph-rollback{fill:#9b51e0;background:#9b51e0}
.ph-applying{fill:#f2c94c;background:#f2c94c}.ph-verified{fill:#27ae60;background:#27ae60}
.ph-live{fill:#a5d6a7;background:#a5d6a7}.ph-rolled-back{fill:#9b51e0;background:#9b51e0}
.ph-interrupted{fill:#e67e22;background:#e67e22}
.ph-superseded{fill:#bdbdbd;background:#bdbdbd}
.oc-pass{stroke:#1e7a46;background:#1e7a46}.oc-fail{stroke:#b00020;background:#b00020}
.oc-error{stroke:#d35400;background:#d35400}
.failure{border:2px solid #c0392b;border-radius:8px;padding:.2rem 1rem .8rem}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);
vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:.8rem}
td.sev-security{color:#b00020;font-weight:600}
footer{margin:2rem 0 1rem;font-size:.8rem;color:var(--muted)}
@media (max-width:640px){.row,.axis-row{grid-template-columns:1fr;gap:.1rem}
.axis-row .label{display:none}.row{margin-bottom:.4rem}main{padding:.6rem}
.label .state{display:inline;margin-left:.4rem}
.problems thead{display:none}.problems tr,.problems td{display:block}
.problems tr{border-bottom:1px solid var(--line);padding:.3rem 0}
.problems td{border:0;padding:.1rem 0}
.problems td::before{content:attr(data-label) ": ";color:var(--muted);font-size:.8rem}}
.row[data-state=rolled-back] .state,.row[data-state=rollback-failed] .state,
.row[data-state=failed] .state{color:#8e24aa;font-weight:600}
"""

# Phones have no hover: a tap on a span or a mark shows its note. Times are shown in UTC in
# the page; the viewer's local time is added as a tooltip.
SCRIPT = """
(function(){
var picked=document.getElementById('picked');
document.querySelectorAll('[data-note]').forEach(function(el){
el.addEventListener('click',function(){if(picked){picked.textContent=el.getAttribute('data-note');}});
});
document.querySelectorAll('time[datetime]').forEach(function(t){
var d=new Date(t.getAttribute('datetime'));if(!isNaN(d)){t.title=d.toLocaleString();}
});
document.body.setAttribute('data-ready','yes');
})();
"""


def render_run(report: dict[str, Any]) -> str:
    """The page of one run: header, at a glance, timeline, the deciding failure, clusters."""
    start, end = timeline.run_window(report)
    rows = timeline.run_rows(report)
    failure = timeline.decisive_failure(report)
    title = f"wavegate {report.get('command', 'run')} {report.get('app', '')} " \
            f"{report.get('version') or ''}".strip()
    body = "".join([
        f"<header><h1>{_text(title)}</h1>{_outcome(report)}{_facts(report, start, end)}"
        "</header>",
        _glance(report),
        _timeline_section("Timeline", rows, start, end, PHASE_LEGEND, grouped=True,
                          marks_legend=True),
        _failure_section(report, failure, start),
        _clusters_section(report),
    ])
    return _page(title, body)


def render_status(status: dict[str, Any], history: Sequence[dict[str, Any]], *,
                  fleet: str | None, at: datetime, errors: dict[str, str] | None = None) -> str:
    """The fleet at a glance: per cluster its live release, last-known-good, lock and last
    change, then the recent ledger history as a timeline up to `at`."""
    names = [row["cluster"] for row in status.get("clusters", [])]
    start, end = timeline.history_window(history, at)
    rows = timeline.history_rows(names, history, at)
    title = f"wavegate status {status.get('app', '')}"
    facts = [("app", _text(status.get("app"))), ("fleet", _text(fleet or "-")),
             ("as of", _time(at.isoformat(), f"{timeline.stamp(at)} UTC"))]
    body = "".join([
        f"<header><h1>{_text(title)}</h1>{_fact_list(facts)}</header>",
        _status_table(status, history, errors or {}),
        _timeline_section("Ledger history", rows, start, end, HISTORY_LEGEND, grouped=False,
                          marks_legend=False),
    ])
    return _page(title, body)


# --- the page --------------------------------------------------------------------------------

def content_security_policy() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "base-uri 'none'; form-action 'none'")


def _page(title: str, body: str) -> str:
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{content_security_policy()}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        f"<title>{_text(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}<footer>Written by wavegate. This page is one file: it loads "
        "nothing from anywhere.</footer></main><script>" + SCRIPT + "</script></body></html>\n")
    return redact.scrub(page)


def _text(value: object) -> str:
    return escape("" if value is None else str(value))


def _time(iso: str | None, shown: str) -> str:
    return f'<time datetime="{_text(iso)}">{_text(shown)}</time>' if iso else _text(shown)


def _fact_list(facts: Iterable[tuple[str, str]]) -> str:
    """Facts as name and HTML (already escaped)."""
    items = "".join(f"<div><dt>{_text(name)}</dt><dd>{markup}</dd></div>"
                    for name, markup in facts)
    return f'<dl class="facts">{items}</dl>'


# --- a run's header ----------------------------------------------------------------------------

def _outcome(report: dict[str, Any]) -> str:
    outcome, code = report.get("outcome"), report.get("exit_code")
    words = OUTCOME_WORDS.get(outcome or "", "Unfinished (still running, or killed)")
    tone = "good" if code == 0 else "warn" if code in (4, 10) or code is None else "bad"
    meaning = f" (exit {code}: {EXIT_WORDS.get(code, 'see the message')})" \
        if code is not None else ""
    message = f"<br><span class=\"mono\">{_text(report['message'])}</span>" \
        if report.get("message") else ""
    return (f'<p class="outcome {tone}" id="outcome" data-outcome="{_text(outcome)}" '
            f'data-exit-code="{_text(code)}">{_text(words)}{_text(meaning)}{message}</p>')


def _facts(report: dict[str, Any], start: datetime, end: datetime) -> str:
    finished = report.get("finished_at")
    plain = [(name, _text(report.get(key) if report.get(key) is not None else "-"))
             for name, key in (("app", "app"), ("version", "version"), ("fleet", "fleet"),
                               ("who", "by"))]
    return _fact_list([
        *plain,
        ("started", _time(report.get("started_at"), f"{timeline.stamp(start)} UTC")),
        ("finished", _time(finished, f"{timeline.stamp(end)} UTC "
                                     f"(after {timeline.seconds(end - start)})")
         if finished else "not finished"),
        ("exit code", _text(report.get("exit_code", "-"))), ("run", _text(report.get("run_id"))),
    ])


def _glance(report: dict[str, Any]) -> str:
    """Which clusters ended where, in one line each: what a reader wants first."""
    groups: dict[str, list[str]] = {}
    for cluster in report.get("clusters", []):
        groups.setdefault(_state_words(cluster), []).append(cluster["cluster"])
    items = "".join(f'<li data-group="{_text(words)}"><b>{_text(words)}:</b>'
                    f"{_text(', '.join(names))}</li>" for words, names in groups.items())
    return f'<section><h2>At a glance</h2><ul id="glance">{items}</ul></section>'


def _state_words(cluster: dict[str, Any]) -> str:
    if not timeline.touched(cluster):
        return "never touched"
    state = cluster.get("state") or "unknown"
    return STATE_WORDS.get(state, state)


# --- the timeline ------------------------------------------------------------------------------

def _timeline_section(heading: str, rows: list[Row], start: datetime, end: datetime,
                      legend: Sequence[str], *, grouped: bool, marks_legend: bool) -> str:
    keys = "".join(f'<span><i class="swatch ph-{_text(p)}"></i>{_text(p)}</span>'
                   for p in legend)
    if marks_legend:
        keys += "".join(f'<span><i class="tick-swatch oc-{o}"></i>check round: {o}</span>'
                        for o in ("pass", "fail", "error"))
    axis = (f'<div class="axis-row"><div class="label"></div><div class="axis">'
            f"{_ticks(start, end)}</div></div>")
    parts, group = [], None
    for row in rows:
        if grouped and row.group != group:
            group = row.group
            parts.append(f'<div class="wave" data-wave="{_text(group)}">wave {_text(group)}'
                         "</div>")
        parts.append(_row(row, start, end))
    return (f'<section id="timeline"><h2>{_text(heading)}</h2><div class="legend">{keys}</div>'
            f'{axis}{"".join(parts)}<p id="picked" aria-live="polite">Tap or point at a span '
            "or a check round for its times.</p></section>")


def _row(row: Row, start: datetime, end: datetime) -> str:
    shapes = [_span(span, start, end) for span in row.spans]
    shapes += [_mark(mark, start, end) for mark in row.marks]
    state = STATE_WORDS.get(row.state, row.state) if row.touched else "never touched"
    untouched = "" if row.touched else " untouched"
    return (f'<div class="row{untouched}" data-cluster="{_text(row.cluster)}" '
            f'data-wave="{_text(row.group)}" data-state="{_text(row.state)}" '
            f'data-touched="{"yes" if row.touched else "no"}"><div class="label">'
            f'<b>{_text(row.cluster)}</b><span class="state">{_text(state)}</span></div>'
            f'<svg class="track" viewBox="0 0 {WIDTH} 24" preserveAspectRatio="none" '
            f'role="img" aria-label="{_text(row.cluster)}: {_text(state)}">'
            f'{"".join(shapes)}</svg></div>')


def _x(moment: datetime, start: datetime, end: datetime) -> float:
    share = (moment - start) / (end - start)
    return round(min(max(share, 0.0), 1.0) * WIDTH, 2)


def _span(span: timeline.Span, start: datetime, end: datetime) -> str:
    left = _x(span.start, start, end)
    width = max(_x(span.end, start, end) - left, 2.0)  # a 20 ms apply still shows
    note = _text(span.note)
    return (f'<rect class="span ph-{_text(span.phase)}" data-phase="{_text(span.phase)}" '
            f'data-note="{note}" x="{left}" y="5" width="{round(width, 2)}" height="14">'
            f"<title>{note}</title></rect>")


def _mark(mark: timeline.Mark, start: datetime, end: datetime) -> str:
    x = _x(mark.at, start, end)
    note = _text(mark.note)
    wide = 4 if mark.outcome != "pass" else 2
    return (f'<line class="round oc-{_text(mark.outcome)}" data-outcome="{_text(mark.outcome)}"'
            f' data-note="{note}" x1="{x}" x2="{x}" y1="1" y2="23" stroke-width="{wide}" '
            f'vector-effect="non-scaling-stroke"><title>{note}</title></line>')


def _ticks(start: datetime, end: datetime) -> str:
    total = (end - start).total_seconds()
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
                             3600, 7200, 14400, 21600, 43200, 86400) if total / s <= 8),
                86400 * 7)
    marks, at = [], 0.0
    while at <= total:
        left = round(at / total * 100, 2) if total else 0
        if left <= 94 or at == 0:  # the last label would run off the edge
            marks.append(f'<span style="left:{left}%">+{_offset(at)}</span>')
        at = round(at + step, 3)
    return "".join(marks)


def _offset(seconds: float) -> str:
    """`+1m30s`, `+2h`: exact, short, and in the run's own terms (time since it started)."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


# --- the failure and the clusters ----------------------------------------------------------------

def _failure_section(report: dict[str, Any], failure: Failure | None, start: datetime) -> str:
    done, failed = timeline.rolled_back(report)
    if failure is None:
        if not failed:
            return ""
        return (f'<section id="failure" class="failure"><h2>Rollback failed</h2>'
                f"<p>on {_text(', '.join(failed))}: a human must act.</p></section>")
    when = f" at +{timeline.seconds(failure.at - start)} ({timeline.clock(failure.at)} UTC)" \
        if failure.at else ""
    rows = "".join(_problem(problem) for problem in failure.problems)
    table = ("<div class=\"table-wrap\"><table class=\"problems\"><thead><tr><th>check</th>"
             "<th>principal</th><th>request</th><th>expected</th><th>actual answer</th>"
             "<th>verdict</th></tr>"
             f"</thead><tbody>{rows}</tbody></table></div>") if rows else ""
    back = f"<p id=\"rolled-back\">Rolled back: <b>{_text(', '.join(done) or 'none')}</b>"
    back += f"; rollback failed on <b>{_text(', '.join(failed))}</b>" if failed else ""
    return (f'<section id="failure" class="failure"><h2>The failure that decided the run</h2>'
            f'<p><b data-cluster="{_text(failure.cluster)}">{_text(failure.cluster)}</b> '
            f"failed{_text(when)}: <span class=\"mono\">{_text(failure.reason)}</span></p>"
            f"{table}{back}.</p></section>")


def _problem(check: dict[str, Any]) -> str:
    status = check.get("status")
    actual = f"{status if status is not None else 'no answer'}: {check.get('detail') or ''}"
    severity = check.get("severity") or ""
    return (f'<tr class="problem" data-outcome="{_text(check.get("outcome"))}">'
            f'<td data-label="check">{_text(check.get("name"))}</td>'
            f'<td data-label="principal">{_text(check.get("principal") or "anonymous")}</td>'
            f'<td data-label="request" class="mono">{_text(check.get("request"))}</td>'
            f'<td data-label="expected">{_text(check.get("expected") or "-")}</td>'
            f'<td data-label="actual answer">{_text(actual)}</td>'
            f'<td data-label="verdict" class="sev-{_text(severity)}">'
            f'{_text(check.get("outcome"))} {_text(severity)}</td></tr>')


def _clusters_section(report: dict[str, Any]) -> str:
    rows = []
    for cluster in report.get("clusters", []):
        revisions = cluster.get("revisions") or (
            [cluster["revision"]] if cluster.get("revision") is not None else [])
        rows.append(
            f'<tr data-cluster="{_text(cluster["cluster"])}"><td><b>{_text(cluster["cluster"])}'
            f"</b></td><td>{_text(cluster.get('wave'))}</td>"
            f"<td>{_text(cluster.get('from_version') or '-')}</td>"
            f"<td>{_text(cluster.get('to_version') or '-')}</td>"
            f"<td>{_text(', '.join(f'r{r}' for r in revisions) or 'none')}</td>"
            f"<td>{_text(_state_words(cluster))}</td>"
            f"<td>{_text(cluster.get('detail') or '')}</td></tr>")
    return ('<section id="clusters"><h2>Clusters</h2><div class="table-wrap"><table><thead>'
            "<tr><th>cluster</th><th>wave</th><th>from</th><th>to</th>"
            "<th>ledger revisions written</th><th>final state</th><th>detail</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def _status_table(status: dict[str, Any], history: Sequence[dict[str, Any]],
                  errors: dict[str, str]) -> str:
    rows = []
    for row in status.get("clusters", []):
        name = row["cluster"]
        live = f"{row['live_version']} (r{row['live_revision']})" \
            if row.get("live_version") else "-"
        good = row.get("last_known_good")
        lock = row.get("lock")
        last = max((r for r in history if r["cluster"] == name),
                   key=lambda r: r.get("finished_at") or r.get("started_at") or "",
                   default=None)
        problem = row.get("error") or errors.get(name)
        good_text = f"{good['version']} (r{good['revision']})" if good else "-"
        lock_text = f"{lock['holder']} until {lock['expires']}" if lock else "free"
        rows.append(
            f'<tr data-cluster="{_text(name)}"><td><b>{_text(name)}</b></td>'
            f"<td>{_text(live)}</td>"
            f"<td>{_text(good_text)}</td><td>{_text(lock_text)}</td>"
            f"<td>{_last_change(last)}</td>"
            f"<td>{_text(problem or '')}</td></tr>")
    return ('<section id="clusters"><h2>Clusters</h2><div class="table-wrap"><table><thead>'
            "<tr><th>cluster</th><th>live</th><th>last-known-good</th><th>lock</th>"
            "<th>last change</th><th>problem</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def _last_change(record: dict[str, Any] | None) -> str:
    if record is None:
        return "never deployed"
    at = record.get("finished_at") or record.get("started_at")
    moment = timeline.when(at)
    shown = f"{timeline.stamp(moment)} UTC" if moment else "-"
    return (f"{_time(at, shown)}: {_text(record['version'])} {_text(record['status'])} "
            f"(r{_text(record['revision'])}) by {_text(record['by'])}")

"""A Markdown summary of a run, appended to `$GITHUB_STEP_SUMMARY` when CI provides one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wavegate import redact

_ICONS = {"verified": "✅", "rolled-back": "↩️", "rollback-failed": "🛑", "failed": "❌",
          "pending": "⏸️", "interrupted": "⚠️"}


def render(report: dict[str, Any]) -> str:
    lines = [f"### wavegate {report['command']} {report['app']} {report['version'] or ''}",
             "", f"**{report['outcome']}** (exit {report['exit_code']}), run "
                 f"`{report['run_id']}`", ""]
    if report.get("message"):
        lines += [f"> {report['message']}", ""]
    lines += ["| cluster | wave | state | from | to | checks | detail |",
              "|---|---|---|---|---|---|---|"]
    for c in report["clusters"]:
        passed = sum(1 for check in c["checks"] if check["outcome"] == "pass")
        checks = f"{passed}/{len(c['checks'])}" if c["checks"] else ""
        detail = (c["detail"] or "").replace("|", "\\|")
        lines.append(f"| {c['cluster']} | {c['wave']} | {_ICONS.get(c['state'], '')} "
                     f"{c['state']} | {c['from_version'] or '-'} | {c['to_version'] or '-'} "
                     f"| {checks} | {detail} |")
    return redact.scrub("\n".join(lines)) + "\n\n"


def append_to_step_summary(report: dict[str, Any]) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(render(report))

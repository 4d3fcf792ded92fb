"""The run report as JUnit XML, for CI test tabs: one testcase per cluster and check.

A check that failed is a <failure> naming the principal, the request and the status; one that
could not be judged is an <error>; clusters the run never reached are <skipped>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from wavegate import redact


def render(report: dict[str, Any]) -> str:
    suites = ET.Element("testsuites", name=f"wavegate {report['command']} {report['app']}")
    for cluster in report["clusters"]:
        suites.append(_suite(report, cluster))
    _count(suites, suites.findall("testsuite"))
    ET.indent(suites)
    return redact.scrub(ET.tostring(suites, encoding="unicode", xml_declaration=True)) + "\n"


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")


def _suite(report: dict[str, Any], cluster: dict[str, Any]) -> ET.Element:
    name = f"{cluster['cluster']} ({cluster['wave']})"
    suite = ET.Element("testsuite", name=name, timestamp=report["started_at"])
    classname = f"{report['app']}.{cluster['cluster']}"
    if cluster["state"] == "pending":
        case = ET.SubElement(suite, "testcase", name="not reached", classname=classname)
        ET.SubElement(case, "skipped", message="the run never reached this cluster")
    elif not cluster["checks"]:
        case = ET.SubElement(suite, "testcase", name="rollout", classname=classname)
        if cluster["state"] not in ("verified", "baking"):
            ET.SubElement(case, "failure", message=cluster["detail"] or cluster["state"])
    for check in cluster["checks"]:
        suite.append(_case(check, classname))
    _count(suite, suite.findall("testcase"))
    return suite


def _case(check: dict[str, Any], classname: str) -> ET.Element:
    who = f" as {check['principal']}" if check["principal"] else ""
    case = ET.Element("testcase", name=f"{check['name']}: {check['request']}{who}",
                      classname=classname)
    message = f"{check['request']}{who} -> {check.get('status') or 'no answer'}: " \
              f"{check['detail']}"
    if check["outcome"] == "fail":
        failure = ET.SubElement(case, "failure", message=message, type=check["severity"])
        failure.text = message
    elif check["outcome"] == "error":
        ET.SubElement(case, "error", message=message).text = message
    return case


def _count(parent: ET.Element, children: list[ET.Element]) -> None:
    def total(tag: str) -> int:
        if parent.tag == "testsuite":
            return sum(1 for case in children if case.find(tag) is not None)
        return sum(int(child.get(f"{tag}s" if tag != "skipped" else tag, "0"))
                   for child in children)

    tests = len(children) if parent.tag == "testsuite" else sum(
        int(child.get("tests", "0")) for child in children)
    parent.set("tests", str(tests))
    parent.set("failures", str(total("failure")))
    parent.set("errors", str(total("error")))
    parent.set("skipped", str(total("skipped")))

"""The HTML pages, opened in a real browser: headless Chromium from Debian's packages.

A real run on the local fleet writes the page; Chromium loads it, runs its script and hands
back the DOM (`--dump-dom`), which the test reads for rows, spans and the failure text, and a
screenshot is kept in the test's temporary folder. Chromium's own net log shows whether the
page asked for anything over the network (the browser's own update pings are told apart by
their initiator). `scripts/install-browser.sh` installs Chromium; without it these tests skip,
except under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.conftest import TOKENS, LocalFleet

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed; without these Chromium keeps trying Google's hosts.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "embed", "source",
        "track", "wbr"}


class Dom(HTMLParser):
    """The DOM Chromium dumped: each element with its attributes and the cluster row it is
    in, and the visible text."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], str | None]] = []
        self.text: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        cluster = found.get("data-cluster") or (self._open[-1][1] if self._open else None)
        self.elements.append((tag, found, cluster))
        if tag not in VOID:
            self._open.append((tag, cluster))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, *, within: str | None = None, **attrs: str) -> list[dict[str, str]]:
        wanted = {key.replace("_", "-"): value for key, value in attrs.items()}
        return [found for name, found, cluster in self.elements
                if name == tag and (within is None or cluster == within)
                and all(found.get(key) == value for key, value in wanted.items())]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


@dataclass
class Opened:
    dom: Dom
    requests: list[str]  # what the page itself asked the network for


class Chromium:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs = 0

    def open(self, page: Path) -> Opened:
        net_log = self.folder / f"net-{self.runs}.json"
        dumped = self._run(page, "--dump-dom", f"--log-net-log={net_log}")
        return Opened(Dom(dumped), page_requests(net_log))

    def screenshot(self, page: Path, out: Path, *, size: str = "1280,1600") -> Path:
        self._run(page, f"--screenshot={out}", f"--window-size={size}")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot at {out}"
        return out

    def _run(self, page: Path, *extra: str) -> str:
        self.runs += 1
        profile = self.folder / f"profile-{self.runs}"  # a fresh profile for every page
        done = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra,
                               page.resolve().as_uri()], capture_output=True, text=True,
                              timeout=120, cwd=self.folder)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout


def page_requests(net_log: Path) -> list[str]:
    """URLs the page requested: the browser's own traffic has no origin as its initiator."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "url" in event.get("params", {})
            and event["params"].get("initiator") != "not an origin"]


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    if not CHROMIUM.exists() or shutil.which("chromedriver") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: run scripts/install-browser.sh")
        pytest.skip("chromium is not installed (scripts/install-browser.sh)")
    folder = tmp_path / "browser"
    folder.mkdir()
    return Chromium(folder)


def assert_stands_alone(page: Path, opened: Opened) -> None:
    text = page.read_text()
    assert opened.requests == []
    assert all(token not in text for token in TOKENS.values())
    assert opened.dom.find("body", data_ready="yes"), "the page's script did not run"


def test_the_net_log_check_sees_a_page_that_loads_something(chromium, tmp_path):
    """The control: the same check must catch a page that asks the network for anything."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/pixel.png">')
    assert chromium.open(leaky).requests == ["http://127.0.0.1:9/pixel.png"]


def test_regression_page_shows_the_canary_rolled_back_and_the_rest_untouched(
        local_fleet: LocalFleet, chromium: Chromium, tmp_path: Path) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    page, report_file = tmp_path / "pages" / "run.html", tmp_path / "report.json"
    result = local_fleet.deploy("library-app", "2.0.0", "--report", str(report_file),
                                "--report-html", str(page))
    assert result.code == 1, result.stderr

    opened = chromium.open(page)
    dom = opened.dom
    assert_stands_alone(page, opened)
    canary = dom.find("div", data_cluster="prod-0")[0]
    assert (canary["data-state"], canary["data-touched"]) == ("rolled-back", "yes")
    phases = [rect["data-phase"] for rect in dom.find("rect", within="prod-0")]
    assert phases[:3] == ["apply", "rollout", "verify"] and phases[-1] == "rollback"
    assert dom.find("line", within="prod-0", data_outcome="fail")
    for name in ("prod-1", "prod-2", "prod-3", "prod-4", "prod-5"):
        assert dom.find("div", data_cluster=name)[0]["data-touched"] == "no", name
        assert dom.find("rect", within=name) == [], name
    failure = dom.words.split("The failure that decided the run", 1)[1]
    assert "space access" in failure and "access granted where a denial was due" in failure
    assert "GET /api/spaces/space-" in failure and "Rolled back: prod-0" in failure
    assert "never touched: prod-2, prod-3, prod-4, prod-1, prod-5" in dom.words
    chromium.screenshot(page, tmp_path / "run.png")
    chromium.screenshot(page, tmp_path / "run-phone.png", size="390,2400")

    # The same page, later, from the run's journal.
    run_id = json.loads(report_file.read_text())["run_id"]
    again = tmp_path / "again.html"
    assert local_fleet.wavegate("report", run_id, "--html", str(again)).code == 0
    assert again.read_text() == page.read_text()


def test_check_rollback_and_status_pages(local_fleet: LocalFleet, chromium: Chromium,
                                         tmp_path: Path) -> None:
    fleet = str(local_fleet.fleet_file)
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    assert local_fleet.deploy("library-app", "1.1.0").code == 0

    checked = tmp_path / "check.html"
    result = local_fleet.wavegate("check", "library-app", "-f", fleet, "--report-html",
                                  str(checked))
    assert result.code == 0, result.stderr
    opened = chromium.open(checked)
    assert_stands_alone(checked, opened)
    rows = opened.dom.find("div", data_state="passed")
    assert len(rows) == 6 and len(opened.dom.find("line", data_outcome="pass")) == 6

    back = tmp_path / "rollback.html"
    result = local_fleet.wavegate("rollback", "library-app", "--all", "-f", fleet,
                                  "--report-html", str(back))
    assert result.code == 0, result.stderr
    opened = chromium.open(back)
    assert_stands_alone(back, opened)
    assert len(opened.dom.find("div", data_state="rolled-back")) == 6
    assert len(opened.dom.find("rect", data_phase="rollback")) == 6
    assert "prod-0 canary 1.1.0 1.0.0 r3 rolled back" in opened.dom.words

    status = tmp_path / "status.html"
    result = local_fleet.wavegate("status", "library-app", str(status), "-o", "html", "-f",
                                  fleet)
    assert result.code == 0, result.stderr
    opened = chromium.open(status)
    assert_stands_alone(status, opened)
    assert "prod-3 1.0.0 (r3) 1.0.0 (r3) free" in opened.dom.words
    phases = [rect["data-phase"] for rect in opened.dom.find("rect", within="prod-3")]
    assert phases[:3] == ["verified", "live", "rolled-back"] and phases[-1] == "live"
    chromium.screenshot(status, tmp_path / "status.png")

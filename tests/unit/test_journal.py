"""The run journal: what `resume`, `promote` and `abort` read back to pick a run up again."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from wavegate.errors import EXIT_BAD_INPUT, InputError
from wavegate.outputs import journal
from wavegate.outputs.report import RunReport


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the journal lives in ./.wavegate/runs


def write_run(run_id: str, *, app: str = "library-app", started_at: str,
              outcome: str | None = None, inputs: journal.Inputs | None = None) -> None:
    report = RunReport(run_id=run_id, app=app, version="1.1.0", command="deploy",
                       started_at=started_at)
    report.add_cluster("prod-0", "canary", to_version="1.1.0")
    if inputs is not None:
        report.inputs = journal.as_dict(inputs)
    if outcome is not None:
        report.finish(outcome=outcome, exit_code=0)
    report.write(journal.path(run_id))


def inputs(app: str = "manifests/library-app") -> journal.Inputs:
    return journal.Inputs(fleet="clusters/local.yaml", app=app, version="1.1.0",
                          overrides={"replicas": "5"}, auto_approve=False,
                          ignore_windows="hotfix for INC-42", approved=("canary", "regions"),
                          pid=4242, paused_at="rest")


def test_what_resume_needs_round_trips_through_the_journal():
    paused = inputs()
    write_run("run-7", started_at="2025-01-01T08:00:00.000+00:00", outcome="paused",
              inputs=paused)
    data, read_back = journal.read("run-7")
    assert read_back == paused
    assert (data["run_id"], data["outcome"]) == ("run-7", "paused")
    assert journal.path("run-7") == Path(".wavegate/runs/run-7.json")


def test_an_unknown_run_is_bad_input_naming_where_it_looked():
    with pytest.raises(InputError) as missing:
        journal.read("run-nope")
    assert missing.value.exit_code == EXIT_BAD_INPUT
    assert "run-nope" in str(missing.value) and ".wavegate/runs" in str(missing.value)


def test_a_run_that_was_not_a_deploy_cannot_be_resumed():
    write_run("run-rollback", started_at="2025-01-01T08:00:00.000+00:00", outcome="rolled-back")
    with pytest.raises(InputError, match="cannot be resumed"):
        journal.read("run-rollback")


def test_resume_without_a_run_id_picks_the_newest_unfinished_deploy_of_the_app():
    write_run("run-old", started_at="2025-01-01T08:00:00.000+00:00", outcome="interrupted",
              inputs=inputs())
    write_run("run-killed", started_at="2025-01-02T08:00:00.000+00:00", inputs=inputs())
    write_run("run-done", started_at="2025-01-03T08:00:00.000+00:00", outcome="succeeded",
              inputs=inputs())
    write_run("run-other-app", app="billing", started_at="2025-01-04T08:00:00.000+00:00",
              outcome="paused", inputs=inputs("manifests/billing"))
    assert journal.newest_unfinished("library-app") == "run-killed"  # SIGKILLed: no outcome
    assert journal.newest_unfinished() == "run-other-app"
    with pytest.raises(InputError, match="no unfinished run of payments"):
        journal.newest_unfinished("payments")


def test_only_a_live_wavegate_process_counts_as_the_run_still_going():
    assert not journal.alive(0)
    assert not journal.alive(-1)
    assert not journal.alive(2**22 + 1)  # above Linux's pid_max: no such process


def test_a_live_run_is_its_pid_and_its_start_time_not_a_reused_pid():
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        started = psutil.Process(child.pid).create_time()
        assert journal.alive(child.pid, started)
        assert not journal.alive(child.pid, started - 60)  # the pid now names another process
    finally:
        child.communicate(b"")
    assert not journal.alive(child.pid, started)  # ended


class CostlyWrites:
    """Journal writes that each take `cost` seconds of a fake clock (as a large fleet's do),
    counted, with an event set once the journal on disk shows `awaited`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cost: float) -> None:
        self.now, self.cost, self.writes = 0.0, cost, 0
        self.awaited: str | None = None
        self.seen = threading.Event()
        real = RunReport.write

        def write(report: RunReport, where: Path, *, compact: bool = False) -> None:
            real(report, where, compact=compact)
            self.now += self.cost
            self.writes += 1
            if self.awaited and report.clusters["prod-0"].detail == self.awaited:
                self.seen.set()

        monkeypatch.setattr(RunReport, "write", write)

    def clock(self) -> float:
        return self.now


def kept_run(writes: CostlyWrites) -> RunReport:
    report = RunReport(run_id="run-big", app="library-app", version="1.1.0", command="deploy")
    report.add_cluster("prod-0", "canary", to_version="1.1.0")
    journal.keep(report, inputs(), clock=writes.clock)
    return report


def on_disk() -> dict[str, object]:
    data: dict[str, object] = json.loads(journal.path("run-big").read_text())
    return data


def test_a_burst_of_changes_is_written_together_not_once_per_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    writes = CostlyWrites(monkeypatch, cost=0.05)
    report = kept_run(writes)
    writes.awaited = "change 49"
    for index in range(50):
        report.update("prod-0", detail=f"change {index}")
    assert writes.seen.wait(timeout=30), "the last change never reached the journal"
    assert writes.writes <= 3  # the start, then the burst in one or two writes, not fifty


def test_what_must_not_wait_is_in_the_journal_when_the_call_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    writes = CostlyWrites(monkeypatch, cost=3600.0)  # the next coalesced write is hours away
    report = kept_run(writes)
    report.update("prod-0", state="applying")
    report.keep_baseline("prod-0", {"version": "1.0.0"})
    assert journal.read("run-big")[0]["baselines"] == {"prod-0": {"version": "1.0.0"}}
    assert '"cluster": "prod-0"' in journal.baselines_path("run-big").read_text()  # appended
    report.finish(outcome="succeeded", exit_code=0)
    assert on_disk()["outcome"] == "succeeded"


def test_a_baseline_line_cut_short_by_a_crash_is_skipped_and_the_others_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    writes = CostlyWrites(monkeypatch, cost=3600.0)
    report = kept_run(writes)
    report.keep_baseline("prod-0", {"version": "1.0.0"})
    with journal.baselines_path("run-big").open("a") as torn:
        torn.write('{"cluster": "prod-1", "base')  # SIGKILL mid-append
    assert journal.read("run-big")[0]["baselines"] == {"prod-0": {"version": "1.0.0"}}

"""What keeps wavegate fast at fleet scale, each as a user would notice it breaking: templates
read once for a whole fleet, the fast YAML path giving the same answers and the same errors as
the careful one, keep-alive connections per cluster (never shared between clusters, closed
once a wave is verified), and ledger writes that do not re-list."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from library_app.server import make_server
from tests.fakes import FakeClock, FakeCluster, FakeDriver
from wavegate.config import app as apps
from wavegate.config import checks, templates, yamlsource
from wavegate.config.fleet import Cluster, Fleet, Policy, Wave
from wavegate.decide.ledger import Record, Status
from wavegate.engine import credentials, deploy, ledger_writes, probes
from wavegate.engine.runner import Target
from wavegate.errors import EXIT_OK, InputError

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "manifests" / "library-app"


def cluster(name: str) -> Cluster:
    return Cluster(name=name, region="westeurope", namespace="library", driver="local",
                   values={"replicas": 3})


def test_a_template_is_read_once_however_many_clusters_it_renders_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    composed: list[str] = []
    real = yamlsource.compose_all

    def counting(text: str, path: Path) -> list[yaml.Node]:
        composed.append(path.name)
        return real(text, path)

    monkeypatch.setattr(yamlsource, "compose_all", counting)
    templates._scan.cache_clear()
    app = apps.App.from_folder(APP)
    releases = [app.render(cluster(f"c{index}"), "1.1.0") for index in range(50)]
    assert {r.manifests[0]["data"]["LIBRARY_CLUSTER"] for r in releases} == {
        f"c{index}" for index in range(50)}
    assert len(composed) <= len(app.templates) + 1  # each template and the checks, once


def test_a_fleet_shares_one_parsed_checks_suite() -> None:
    app = apps.App.from_folder(APP)
    first, second = (app.render(cluster(name), "1.1.0") for name in ("a", "b"))
    suite = apps.load_checks(first.checks, APP / apps.CHECKS_FILE)
    assert apps.load_checks(second.checks, APP / apps.CHECKS_FILE) is suite


@pytest.mark.parametrize("text", [
    "a: 1\nb: [1, 2, {c: d}]\n",
    "base: &b {x: 1}\nderived: {<<: *b, y: 2}\n",
    "multi: |\n  line one\n  line two\nafter: 3\n",
    "",
])
def test_the_fast_path_reads_what_the_careful_one_reads(text: str) -> None:
    data, source = yamlsource.parse(text, Path("f.yaml"))
    assert data == yaml.safe_load(text)
    nodes = yaml.compose_all(text, Loader=yaml.SafeLoader)
    careful = yamlsource.Source(Path("f.yaml"))
    for node in nodes:
        yamlsource._record_lines(node, (), careful)
    assert source.lines == careful.lines


@pytest.mark.parametrize(("text", "message", "line"), [
    ("a: 1\nb: [1, 2\nc: 3\n", "YAML syntax error", 3),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a'", 3),
    ("a: 1\n---\nb: 2\n", "YAML syntax error", None),
    ("x: " + "[" * 450 + "]" * 450 + "\n", "nested too deeply", None),
])
def test_errors_still_name_the_line(text: str, message: str, line: int | None) -> None:
    with pytest.raises(InputError) as caught:
        yamlsource.parse(text, Path("fleet.yaml"))
    assert message in str(caught.value)
    if line is not None:
        assert caught.value.line == line


def test_a_checks_error_names_its_line_and_field() -> None:
    text = "checks:\n  - name: x\n    request: GET /a\n    expect: {status: nope}\n"
    with pytest.raises(InputError) as caught:
        checks.load(text, Path("checks.yaml"))
    assert caught.value.line == 4 and "status" in str(caught.value)


class Served:
    """An HTTP server on a loopback port, served on a thread of its own until `close`."""

    server: Any
    url: str

    def serve(self, server: Any) -> None:
        self.server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingServer(Served):
    """The real Library App, counting the TCP connections it accepts."""

    def __init__(self) -> None:
        self.serve(make_server("127.0.0.1", 0, "1.0.0", {}))

    @property
    def accepted(self) -> int:
        return int(self.server.accepted)


def version_suite(count: int) -> checks.Suite:
    # Each its own request (a query the app ignores): identical probes are sent only once.
    items = "".join(f"  - {{name: v{index}, request: 'GET /version?n={index}'}}\n"
                    for index in range(count))
    return checks.load("checks:\n" + items, Path("checks.yaml"))


def test_a_run_reuses_its_connections_to_a_cluster_round_after_round() -> None:
    server = CountingServer()
    clients = probes.Clients()
    try:
        suite = version_suite(30)
        for _ in range(3):
            result = probes.run_round(server.url, suite, {}, deadline=5.0,
                                      client=clients.get("c0", server.url))
            assert result.count(probes.Outcome.PASS) == 30
    finally:
        clients.close()
        server.close()
    # 90 probes, at most PARALLEL_PROBES at a time, over connections kept open.
    assert server.accepted <= probes.PARALLEL_PROBES


def test_a_round_without_a_run_still_cleans_up_after_itself() -> None:
    server = CountingServer()
    try:
        result = probes.run_round(server.url, version_suite(3), {}, deadline=5.0)
    finally:
        server.close()
    assert result.count(probes.Outcome.PASS) == 3


class ListingCounter(FakeDriver):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.listings = 0

    def records(self, app: str) -> list[Record]:
        self.listings += 1
        return super().records(app)


def ledger_with_one_revision() -> tuple[ListingCounter, Record]:
    state = FakeCluster("c0")
    driver = ListingCounter(cluster("c0"), state)
    driver.acquire_lock("library-app", holder="run", ttl=30)
    release = apps.Release(app="library-app", version="1.0.0", manifests=(), checks="")
    record = Record(app="library-app", cluster="c0", revision=1, version="1.0.0",
                    status=Status.APPLYING, run_id="run", by="me", started_at="now")
    return driver, driver.create_record(record, release, holder="run")


def test_a_status_change_is_one_write_without_listing_the_ledger() -> None:
    driver, record = ledger_with_one_revision()
    marked = ledger_writes.mark(driver, "library-app", 1, holder="run", current=record,
                                status=Status.VERIFIED)
    assert marked.status is Status.VERIFIED and driver.listings == 0


def test_a_status_change_over_a_stale_record_rereads_and_never_overwrites_blindly() -> None:
    driver, record = ledger_with_one_revision()
    newer = ledger_writes.mark(driver, "library-app", 1, holder="run", current=record,
                               reason="changed by someone else")
    marked = ledger_writes.mark(driver, "library-app", 1, holder="run", current=record,
                                status=Status.FAILED)
    assert driver.listings == 1
    assert marked.reason == newer.reason == "changed by someone else"
    assert marked.status is Status.FAILED


class MeetingServer(Served):
    """An endpoint that answers only once `parties` requests are in flight at the same time."""

    def __init__(self, parties: int) -> None:
        meeting = threading.Barrier(parties, timeout=5.0)  # broken (500) if they never meet

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    meeting.wait()
                    status = 200
                except threading.BrokenBarrierError:
                    status = 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.serve(self.server)


def test_clusters_behind_one_endpoint_are_not_queued_behind_each_others_connections() -> None:
    # Two clusters' rounds, each PARALLEL_PROBES probes at once: all of them are in flight
    # together only if each cluster has its own connections.
    server = MeetingServer(2 * probes.PARALLEL_PROBES)
    clients = probes.Clients()
    suite = version_suite(probes.PARALLEL_PROBES)
    rounds: dict[str, probes.Round] = {}

    def round_for(name: str) -> None:
        rounds[name] = probes.run_round(server.url, suite, {}, deadline=8.0,
                                        client=clients.get(name, server.url))
    try:
        senders = [threading.Thread(target=round_for, args=(name,)) for name in ("a", "b")]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    finally:
        clients.close()
        server.close()
    assert [rounds[name].outcome for name in ("a", "b")] == [probes.Outcome.PASS] * 2


def connections_to(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_verified_wave_keeps_no_connection_open_while_the_next_one_rolls_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A thousand clusters each holding their probe connections would hold thousands of sockets.
    tokens = {"LIBRARY_TOKEN_ALICE": "alice-secret-token-1",
              "LIBRARY_TOKEN_BOB": "bob-secret-token-2",
              "LIBRARY_TOKEN_CAROL": "carol-secret-token-3"}
    for variable, value in tokens.items():
        monkeypatch.setenv(variable, value)
    names = ("first", "second")
    states = {name: FakeCluster(name, env=dict(tokens)) for name in names}
    seen: list[int] = []
    states["second"].faults["apply"] = lambda _: seen.append(
        connections_to(FakeDriver(cluster("first"), states["first"]).endpoint()))
    fleet = Fleet(name="scale", path=Path("fleet.yaml"),
                  clusters=tuple(cluster(name) for name in names),
                  waves=tuple(Wave(name, (name,), 1, 0.0) for name in names),
                  policy=Policy(check_timeout=2.0, watch=0.0))
    app = apps.App.from_folder(APP)
    targets = {}
    for name in names:
        release = app.render(cluster(name), "1.0.0")
        suite = checks.load(release.checks, APP / apps.CHECKS_FILE)
        targets[name] = Target(FakeDriver(cluster(name), states[name]), release, suite,
                               credentials.resolve(suite))
    report = deploy.new_report(fleet, app, "1.0.0", "run-1")
    try:
        code = deploy.run(fleet, deploy.Prepared(targets), run_id="run-1", by="tester",
                          clock=FakeClock(), report=report)
    finally:
        for state in states.values():
            state.stop()
    assert code == EXIT_OK
    assert seen == [0]

"""The fleet file as a user writes it: what loads, what is refused, and where the error points.

Every refusal must name the file, the line (`file:LINE:`) and the field, and exit with code 2,
because the user's only way to fix a fleet file is to go to that line. Broken files are written
from one valid base by a small textual edit; the line the error must point at carries the
comment `# <-`, so each case shows the expected place right where the mistake is.
"""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import pytest

from wavegate.config import fleet, windows
from wavegate.errors import EXIT_BAD_INPUT, InputError

REPO = Path(__file__).resolve().parents[2]
MARK = "# <-"

BASE = """\
fleet: test
defaults:
  driver: local
  namespace: library
local:
  images:
    library-app: [python, -m, library_app]
clusters:
  - name: a
    region: westeurope
  - name: b
    region: eastus
  - name: c
    region: westeurope
waves:
  - name: first
    clusters: [a]
    bake: 10m
  - name: rest
    selector: {region: [westeurope, eastus]}
policy:
  on_failure: rollback-release
  check_interval: 30s
"""


def edit(*changes: tuple[str, str]) -> str:
    """BASE with each `old` (which must occur exactly once) replaced by `new`."""
    text = BASE
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} must occur exactly once in BASE"
        text = text.replace(old, new)
    return text


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def marked_line(text: str) -> int:
    lines = [number for number, line in enumerate(text.splitlines(), start=1) if MARK in line]
    assert len(lines) == 1, "a broken case marks exactly one line"
    return lines[0]


def refused(path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        fleet.load(path)
    assert caught.value.exit_code == EXIT_BAD_INPUT == 2
    return caught.value


def test_the_base_file_is_valid(tmp_path: Path) -> None:
    # Guards the table below: each broken case must be broken by its own edit only.
    loaded = fleet.load(write(tmp_path, BASE))
    assert [(w.name, w.clusters) for w in loaded.waves] == [("first", ("a",)),
                                                             ("rest", ("b", "c"))]


# --- broken files: (id, edits, field, what the message must say) ----------------------------

BROKEN = [
    pytest.param(
        [("    region: eastus\n", "    region: eastus: x  # <-\n")],
        None, "YAML syntax error", id="yaml-syntax-error"),
    pytest.param(
        [("fleet: test\n", "fleet: test\nflet: typo  # <-\n")],
        "flet", "unknown field", id="unknown-top-level-field"),
    pytest.param(
        [("    region: eastus\n", "    regoin: eastus  # <-\n")],
        "clusters[1].regoin", "unknown field (expected one of:", id="unknown-cluster-field"),
    pytest.param(
        [("  - name: b\n    region: eastus\n", "  - region: eastus  # <-\n")],
        "clusters[1]", "missing required field 'name'", id="missing-cluster-name"),
    pytest.param(
        [("  - name: c\n", "  - name: a  # <-\n")],
        "clusters[2].name", "duplicate cluster 'a'", id="duplicate-cluster-name"),
    pytest.param(
        [("waves:\n", "waves:  # <-\n"),
         ("    selector: {region: [westeurope, eastus]}\n", "    clusters: [b]\n")],
        "waves", "cluster(s) in no wave: c", id="cluster-in-no-wave"),
    pytest.param(
        [("    selector: {region: [westeurope, eastus]}\n", "    clusters: [b, c, a]  # <-\n")],
        "waves[1].clusters", "cluster 'a' is already in wave 'first'",
        id="cluster-in-two-waves"),
    pytest.param(
        [("    clusters: [a]\n", "    clusters: [a, zz]  # <-\n")],
        "waves[0].clusters", "unknown cluster 'zz'", id="unknown-cluster-in-wave"),
    pytest.param(
        [("  - name: rest\n", "  - name: rest  # <-\n    clusters: [b]\n")],
        "waves[1]", "exactly one of 'clusters' or 'selector'", id="clusters-and-selector"),
    pytest.param(
        [("    selector: {region: [westeurope, eastus]}\n",
          "    selector: {region: mars}  # <-\n")],
        "waves[1].selector", "selector matches no cluster", id="selector-matches-nothing"),
    pytest.param(
        [("  - name: rest\n    selector: {region: [westeurope, eastus]}\n",
          "  - name: rest\n    clusters: [b, c]\n  - name: late\n"
          "    selector: {region: westeurope}  # <-\n")],
        "waves[2].selector", "not already in a wave", id="selector-matches-only-placed"),
    pytest.param(
        [("    selector: {region: [westeurope, eastus]}\n", "    selector: {}  # <-\n")],
        "waves[1].selector", "empty selector", id="empty-selector"),
    pytest.param(
        [("    bake: 10m\n", "    bake: 2 hours  # <-\n")],
        "waves[0].bake", "expected a duration like 90s, 10m, 2h, 1d or 1h30m, got '2 hours'",
        id="bake-2-hours"),
    pytest.param(
        [("    bake: 10m\n", "    bake: 10  # <-\n")],
        "waves[0].bake", "a duration needs a unit", id="bake-without-unit"),
    pytest.param(
        [("    bake: 10m\n", "    bake: 10m\n    max_parallel: 0  # <-\n")],
        "waves[0].max_parallel", "expected a whole number >= 1, got 0", id="max-parallel-0"),
    pytest.param(
        [("  - name: rest\n", "  - name: first  # <-\n")],
        "waves[1].name", "duplicate wave 'first'", id="duplicate-wave-name"),
    pytest.param(
        [("  on_failure: rollback-release\n", "  on_failure: rollback  # <-\n")],
        "policy.on_failure", "expected one of rollback-release, rollback-failed, halt, "
        "got 'rollback'", id="unknown-on-failure"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  max_check_errors: 0  # <-\n")],
        "policy.max_check_errors", "expected a whole number >= 1, got 0",
        id="max-check-errors-0"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  history: 0  # <-\n")],
        "policy.history", "expected a whole number >= 1, got 0", id="history-0"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 0s  # <-\n")],
        "policy.check_interval", "must be longer than zero", id="check-interval-0"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  approval:\n"
          "    - first\n    - nope  # <-\n")],
        "policy.approval[1]", "unknown wave 'nope'", id="approval-unknown-wave"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\nnotify:\n"
          "  webhooks: [{url: 'https://hooks.example/x'}]  # <-\n")],
        "notify.webhooks[0].url", "unknown field", id="webhook-url-inline-refused"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  windows:\n    allow:\n"
          "      - 'Someday 08:00-16:00 Europe/Amsterdam'  # <-\n")],
        "policy.windows.allow[0]", "expected like 'Mon-Thu 08:00-16:00 Europe/Amsterdam'",
        id="window-bad-spec"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  windows:\n    allow:\n"
          "      - 'Mon-Thu 08:00-16:00 Europe/Atlantis'  # <-\n")],
        "policy.windows.allow[0]", "unknown time zone 'Europe/Atlantis'",
        id="window-unknown-zone"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  windows:\n    allow:\n"
          "      - 'Mon-Thu 08:00-16:00 Europe/Amsterdam'\n"
          "      - 'Mon-Xyz 08:00-16:00 Europe/Amsterdam'  # <-\n")],
        "policy.windows.allow[1]", "unknown day 'Xyz'", id="window-unknown-day"),
    pytest.param(
        [("  check_interval: 30s\n", "  check_interval: 30s\n  windows:\n"
          "    freeze: ['2026-01-05/2025-12-20']  # <-\n")],
        "policy.windows.freeze[0]", "freeze ends before it starts", id="freeze-backwards"),
    pytest.param(
        [("  - name: b\n    region: eastus\n",
          "  - name: b  # <-\n    region: eastus\n    driver: kubernetes\n")],
        "clusters[1]", "a kubernetes cluster needs an endpoint", id="kubernetes-no-endpoint"),
    pytest.param(
        [("    region: eastus\n", "    region: eastus\n    driver: docker  # <-\n")],
        "clusters[1].driver", "expected one of kubernetes, local, got 'docker'",
        id="unknown-driver"),
    pytest.param(
        [("  driver: local\n", "  driver: kubernetes\n  context: x  # <-\n")],
        "defaults.context", "unknown field", id="unknown-defaults-field"),
    pytest.param(
        [("    region: eastus\n", "    region: eastus\n    labels: {tier: 1}  # <-\n")],
        "clusters[1].labels.tier", "expected a non-empty string, got 1", id="label-not-string"),
    pytest.param(
        [("    library-app: [python, -m, library_app]\n", "    library-app: python  # <-\n")],
        "local.images.library-app", "expected a list, got 'python'", id="image-argv-not-list"),
]


@pytest.mark.parametrize(("changes", "field", "message"), BROKEN)
def test_a_broken_fleet_file_names_file_line_and_field(
    tmp_path: Path, changes: list[tuple[str, str]], field: str | None, message: str,
) -> None:
    text = edit(*changes)
    path = write(tmp_path, text)
    error = refused(path)
    where = f"{path}:{marked_line(text)}: "
    assert str(error).startswith(where + (f"{field}: " if field else "")), str(error)
    assert message in str(error)
    assert (error.file, error.line, error.field) == (path, marked_line(text), field)


def test_local_driver_without_local_section_is_refused_naming_the_clusters(
    tmp_path: Path,
) -> None:
    text = edit(("local:\n  images:\n    library-app: [python, -m, library_app]\n", ""))
    path = write(tmp_path, text)
    error = refused(path)
    # The fault is the whole file (no 'local:' section), so the error points at its start.
    assert str(error).startswith(f"{path}:1: ")
    assert "cluster(s) a, b, c use the local driver" in str(error)
    assert "'local:' section" in str(error)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("", "expected a mapping, got nothing", id="empty-file"),
    pytest.param("- just\n- a list\n", "expected a mapping, got a list", id="a-list"),
])
def test_a_file_that_is_no_mapping_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert message in str(refused(path))


def test_a_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    error = refused(path)
    assert str(error).startswith(f"{path}: cannot read")


@pytest.mark.parametrize(("changes", "field"), [
    pytest.param([("    region: eastus\n", "    region: eastus\n    values: [1, 2]  # <-\n")],
                 "clusters[1].values", id="cluster-values-list"),
    pytest.param([("    region: eastus\n", "    region: eastus\n    values:  # <-\n")],
                 "clusters[1].values", id="cluster-values-empty"),
    pytest.param([("  namespace: library\n", "  namespace: library\n  values: 3  # <-\n")],
                 "defaults.values", id="defaults-values-int"),
])
def test_values_that_are_not_a_mapping_are_refused(
    tmp_path: Path, changes: list[tuple[str, str]], field: str,
) -> None:
    text = edit(*changes)
    path = write(tmp_path, text)
    error = refused(path)
    assert str(error).startswith(f"{path}:{marked_line(text)}: {field}: expected a mapping")


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    text = edit(("    region: eastus\n", "    region: eastus\n    region: westeurope  # <-\n"))
    path = write(tmp_path, text)
    error = refused(path)
    assert str(error).startswith(f"{path}:{marked_line(text)}: clusters[1].region: ")
    assert "duplicate" in str(error)


# --- the fleets in the repository -------------------------------------------------------------

REPO_WAVES = [("canary", ("prod-0",)), ("regions", ("prod-2", "prod-3", "prod-4")),
              ("rest", ("prod-1", "prod-5"))]


@pytest.mark.parametrize("name", ["production.yaml", "local.yaml"])
def test_the_repository_fleets_load_with_the_incident_waves(name: str) -> None:
    loaded = fleet.load(REPO / "clusters" / name)
    assert [(wave.name, wave.clusters) for wave in loaded.waves] == REPO_WAVES
    assert [c.name for c in loaded.clusters] == [f"prod-{n}" for n in range(6)]
    assert loaded.wave_of("prod-5").name == "rest"
    assert loaded.policy.on_failure == "rollback-release"
    assert loaded.policy.max_check_errors == 3
    assert all(c.namespace == "library" and c.values == {"replicas": 3}
               for c in loaded.clusters)


def test_production_fleet_reads_bakes_parallelism_and_policy() -> None:
    loaded = fleet.load(REPO / "clusters" / "production.yaml")
    assert [(w.bake, w.max_parallel) for w in loaded.waves] == [(7200.0, 1), (3600.0, 3),
                                                                (1800.0, 2)]
    policy = loaded.policy
    assert (policy.check_interval, policy.rollout_timeout, policy.watch) == (30.0, 600.0, 7200.0)
    prod3 = loaded.cluster("prod-3")
    assert (prod3.driver, prod3.region, prod3.context, prod3.endpoint) == (
        "kubernetes", "australiaeast", "prod-3", "https://library.prod-3.example.com")
    assert loaded.local is None


def test_local_fleet_reads_its_local_section_relative_to_the_file() -> None:
    path = REPO / "clusters" / "local.yaml"
    loaded = fleet.load(path)
    assert loaded.local is not None
    assert loaded.local.state_dir.resolve() == (REPO / ".wavegate" / "local").resolve()
    assert loaded.local.images["library-app"] == (
        "python", "-m", "library_app", "--version", "${tag}")
    assert loaded.local.secrets["library-tokens"]["alice"] == "LIBRARY_TOKEN_ALICE"
    assert {c.driver for c in loaded.clusters} == {"local"}
    assert [w.bake for w in loaded.waves] == [3.0, 2.0, 2.0]


def test_a_selector_takes_unplaced_clusters_in_file_order_not_selector_order(
    tmp_path: Path,
) -> None:
    text = edit(("    selector: {region: [westeurope, eastus]}\n",
                 "    selector: {region: [eastus, westeurope]}\n"))
    loaded = fleet.load(write(tmp_path, text))
    assert loaded.waves[1].clusters == ("b", "c")  # file order; 'a' was placed already
    assert loaded.waves[1].max_parallel == 2  # defaults to the whole wave


def test_a_selector_can_match_labels(tmp_path: Path) -> None:
    text = edit(("    region: eastus\n", "    region: eastus\n    labels: {tier: gold}\n"),
                ("    selector: {region: [westeurope, eastus]}\n",
                 "    selector: {tier: gold}\n  - name: last\n    selector: {name: c}\n"))
    loaded = fleet.load(write(tmp_path, text))
    assert [(w.name, w.clusters) for w in loaded.waves] == [
        ("first", ("a",)), ("rest", ("b",)), ("last", ("c",))]


def test_defaults_merge_into_clusters_and_clusters_override(tmp_path: Path) -> None:
    text = edit(
        ("  namespace: library\n",
         "  namespace: library\n  values: {replicas: 3, tier: web}\n"),
        ("    region: eastus\n",
         "    region: eastus\n    namespace: other\n    values: {replicas: 5, debug: true}\n"),
    )
    loaded = fleet.load(write(tmp_path, text))
    a, b = loaded.cluster("a"), loaded.cluster("b")
    assert (a.namespace, dict(a.values)) == ("library", {"replicas": 3, "tier": "web"})
    assert (b.namespace, dict(b.values)) == ("other", {"replicas": 5, "tier": "web",
                                                       "debug": True})
    assert a.driver == b.driver == "local"


def test_fleet_defaults_when_policy_and_bake_are_left_out(tmp_path: Path) -> None:
    text = edit(("    bake: 10m\n", ""),
                ("policy:\n  on_failure: rollback-release\n  check_interval: 30s\n", ""))
    loaded = fleet.load(write(tmp_path, text))
    assert loaded.waves[0].bake == 0.0
    assert loaded.policy == fleet.Policy()
    assert (loaded.policy.on_failure, loaded.policy.max_check_errors) == ("rollback-release", 3)
    assert loaded.policy.history == 10


def test_policy_history_sets_how_many_revisions_a_ledger_keeps(tmp_path: Path) -> None:
    text = edit(("  check_interval: 30s\n", "  check_interval: 30s\n  history: 3\n"))
    assert fleet.load(write(tmp_path, text)).policy.history == 3


def test_relative_paths_resolve_against_the_fleet_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = edit(
        ("  driver: local\n", "  driver: local\n  kubeconfig: ../kube/config\n"),
        ("  images:\n", "  state_dir: state\n  images:\n"),
        ("    region: eastus\n", "    region: eastus\n    kubeconfig: own.conf\n"),
        ("  - name: c\n    region: westeurope\n",
         f"  - name: c\n    region: westeurope\n    kubeconfig: {tmp_path / 'abs.conf'}\n"),
    )
    path = write(tmp_path, text, name="conf/fleets/fleet.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = fleet.load(path)
    assert loaded.local is not None
    assert loaded.local.state_dir.resolve() == tmp_path / "conf" / "fleets" / "state"
    assert loaded.cluster("a").kubeconfig is not None
    assert loaded.cluster("a").kubeconfig.resolve() == tmp_path / "conf" / "kube" / "config"
    assert loaded.cluster("b").kubeconfig == tmp_path / "conf" / "fleets" / "own.conf"
    assert loaded.cluster("c").kubeconfig == tmp_path / "abs.conf"


@pytest.mark.parametrize(("flag", "env", "expected"), [
    pytest.param("given.yaml", "from-env.yaml", "given.yaml", id="-f wins"),
    pytest.param(None, "from-env.yaml", "from-env.yaml", id="then $WAVEGATE_FLEET"),
    pytest.param(None, None, "clusters/local.yaml", id="then clusters/local.yaml"),
    pytest.param(None, "", "clusters/local.yaml", id="an empty $WAVEGATE_FLEET is unset"),
    pytest.param(Path("p.yaml"), None, "p.yaml", id="a Path works too"),
])
def test_resolve_path_honours_flag_then_env_then_local_fleet(
    monkeypatch: pytest.MonkeyPatch, flag: str | Path | None, env: str | None, expected: str,
) -> None:
    if env is None:
        monkeypatch.delenv("WAVEGATE_FLEET", raising=False)
    else:
        monkeypatch.setenv("WAVEGATE_FLEET", env)
    assert fleet.resolve_path(flag) == Path(expected)


# --- windows -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "days"), [
    ("Mon-Thu 08:00-16:00 Europe/Amsterdam", {0, 1, 2, 3}),
    ("Fri-Mon 08:00-16:00 UTC", {4, 5, 6, 0}),
    ("Sat,Sun 08:00-16:00 UTC", {5, 6}),
    ("mon 08:00-16:00 UTC", {0}),
])
def test_windows_parse_allow(spec: str, days: set[int]) -> None:
    allow = windows.parse_allow(spec)
    assert allow.weekdays == frozenset(days)
    assert (allow.start, allow.end) == (time(8), time(16))


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("2025-12-20/2026-01-05", date(2025, 12, 20), date(2026, 1, 5)),
    ("2025-12-25", date(2025, 12, 25), date(2025, 12, 25)),
])
def test_windows_parse_freeze(spec: str, first: date, last: date) -> None:
    assert windows.parse_freeze(spec) == windows.Freeze(first, last)


@pytest.mark.parametrize(("parser", "spec", "message"), [
    (windows.parse_allow, "Mon-Thu 8:00-16:00 UTC", "expected like"),
    (windows.parse_allow, "Mon-Thu 25:00-26:00 UTC", "invalid time '25:00'"),
    (windows.parse_allow, "Mon-Thu 08:00-16:00", "expected like"),
    (windows.parse_freeze, "2025-12-20/soon", "expected a date range"),
    (windows.parse_freeze, "2025-12-20/2025-12-01", "freeze ends before it starts"),
])
def test_windows_refuse_bad_specs(parser: object, spec: str, message: str) -> None:
    assert callable(parser)
    with pytest.raises(ValueError) as caught:
        parser(spec)
    assert message in str(caught.value)

"""Durations as users write them in fleet files: one unit, or a compound such as `1h30m`."""

from __future__ import annotations

from pathlib import Path

import pytest

from wavegate.config import durations, fleet
from wavegate.errors import InputError


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("500ms", 0.5),
    ("1.5h", 5400.0), ("0s", 0.0), (" 30s ", 30.0), (0, 0.0),
    ("1h30m", 5400.0), ("2d", 172800.0), ("1d12h", 129600.0), ("1m30s", 90.0),
    ("1h0m", 3600.0), ("1s500ms", 1.5), ("2h30m15s", 9015.0), ("1d2h3m4s5ms", 93784.005),
    ("1h1.5m", 3690.0),
])
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("2 hours", "expected a duration like 90s, 10m, 2h, 1d or 1h30m, got '2 hours'"),
    ("10", "got '10'"),
    (10, "a duration needs a unit (90s, 10m, 2h, 1d), got 10"),
    ("-5s", "got '-5s'"),
    ("5S", "got '5S'"),
    ("", "got ''"),
    ("h", "got 'h'"),
    ("1h 30m", "got '1h 30m'"),       # one word, as it is written in the examples
    ("30m1h", "got '30m1h'"),         # units fall, largest first
    ("1h1h", "got '1h1h'"),           # each unit once
    ("1.5h30m", "got '1.5h30m'"),     # a fraction only on the last part
    ("1h30", "got '1h30'"),           # every part has its unit
    ("1w", "got '1w'"),
    (None, "got None"),
    (True, "got True"),
    (1.5, "got 1.5"),
])
def test_durations_refuse_what_is_not_a_duration(text: object, message: str) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        durations.parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (90, "90s"), (600, "10m"), (7200, "2h"), (86400, "1d"), (0.5, "500ms"),
    (1.5, "1.5s"),
])
def test_durations_format_shortest_spelling(seconds: float, text: str) -> None:
    assert durations.format(seconds) == text


FLEET = """\
fleet: t
local: {images: {app: [python]}}
clusters: [{name: a}]
waves: [{name: w, clusters: [a], bake: BAKE}]
"""


def test_a_fleet_file_takes_a_compound_bake(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.replace("BAKE", "1h30m"), encoding="utf-8")
    assert fleet.load(path).waves[0].bake == 5400.0


def test_a_refused_duration_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.replace("BAKE", "30m1h"), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        fleet.load(path)
    assert str(caught.value) == (f"{path}:4: waves[0].bake: expected a duration like 90s, 10m, "
                                 "2h, 1d or 1h30m, got '30m1h'")

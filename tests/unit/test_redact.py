"""Secrets never reach an output: a registered token is masked in strings, in nested data
(reports, ledger metadata) and in every structlog event, whichever renderer follows.

The registry is process-wide, so each test registers its own distinct token.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from wavegate import redact
from wavegate.outputs import logs
from wavegate.redact import MASK


@pytest.fixture
def token(request: pytest.FixtureRequest) -> str:
    value = f"tok-{request.node.name}-9f8e7d"
    redact.register(value)
    return value


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


# --- strings and data ----------------------------------------------------------------------------

@pytest.mark.parametrize(("template", "expected"), [
    ("Authorization: Bearer {t}", f"Authorization: Bearer {MASK}"),
    ("{t}", MASK),
    ("{t} and again {t}", f"{MASK} and again {MASK}"),
    ("url?token={t}&x=1", f"url?token={MASK}&x=1"),
    ("nothing secret here", "nothing secret here"),
])
def test_scrub_replaces_a_registered_token_in_text(token: str, template: str,
                                                   expected: str) -> None:
    assert redact.scrub(template.format(t=token)) == expected


def test_a_longer_secret_is_masked_whole_even_when_a_shorter_one_is_inside_it() -> None:
    redact.register("abcd-short-secret")
    redact.register("abcd-short-secret-and-longer")
    assert redact.scrub("x abcd-short-secret-and-longer y") == f"x {MASK} y"


def test_very_short_values_are_not_registered_so_ordinary_words_survive() -> None:
    redact.register("the")
    assert redact.scrub("the cat") == "the cat"


def test_scrub_data_masks_nested_values_and_keeps_everything_else(token: str) -> None:
    data = {
        "cluster": "prod-0",
        "checks": [{"detail": f"sent Bearer {token}", "status": 401, "ok": False}],
        "nested": {"deeper": ("a", token), "none": None},
    }
    assert redact.scrub_data(data) == {
        "cluster": "prod-0",
        "checks": [{"detail": f"sent Bearer {MASK}", "status": 401, "ok": False}],
        "nested": {"deeper": ["a", MASK], "none": None},
    }
    assert token in data["checks"][0]["detail"]  # the input is not changed


def test_scrubbed_data_serialises_without_the_token(token: str) -> None:
    text = json.dumps(redact.scrub_data({"a": [token, {"b": f"x{token}x"}]}))
    assert token not in text and MASK in text


# --- structlog -----------------------------------------------------------------------------------

def test_processor_scrubs_every_value_of_an_event(token: str) -> None:
    event = {"event": f"probe sent {token}", "detail": token, "nested": {"k": [token]},
             "error": RuntimeError(f"401 for {token}"), "count": 3}
    result = redact.processor(None, "info", event)
    assert result == {"event": f"probe sent {MASK}", "detail": MASK, "nested": {"k": [MASK]},
                      "error": f"RuntimeError('401 for {MASK}')", "count": 3}


def test_capture_logs_through_the_processor_shows_no_token(token: str) -> None:
    log = structlog.get_logger("test")
    with capture_logs(processors=[redact.processor]) as captured:
        log.bind(cluster="prod-0").warning("check.failed", detail=f"Bearer {token}",
                                           headers={"Authorization": f"Bearer {token}"})
    assert captured == [{"cluster": "prod-0", "detail": f"Bearer {MASK}",
                         "headers": {"Authorization": f"Bearer {MASK}"},
                         "event": "check.failed", "log_level": "warning"}]


@pytest.mark.usefixtures("restore_structlog")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_logging_writes_no_token(token: str, fmt: str) -> None:
    out = io.StringIO()
    logs.configure(fmt=fmt, stream=out)
    log = structlog.get_logger("test")
    log.info("probe", detail=f"Bearer {token}", error=ValueError(token))
    assert token not in out.getvalue()
    assert MASK in out.getvalue()


@pytest.mark.usefixtures("restore_structlog")
def test_a_logged_traceback_shows_no_token_on_the_console(token: str) -> None:
    out = io.StringIO()
    logs.configure(fmt="console", stream=out)
    log = structlog.get_logger("test")
    try:
        raise RuntimeError(f"server said 401 to {token}")
    except RuntimeError:
        log.exception("round.failed")
    assert "round.failed" in out.getvalue()
    assert token not in out.getvalue()

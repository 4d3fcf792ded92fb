"""The local fleet's Secrets: values from the environment, never shown, a missing one named."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from wavegate import redact
from wavegate.config import local_secrets
from wavegate.config.fleet import LocalFleet
from wavegate.errors import EXIT_BAD_INPUT, InputError

LOCAL = LocalFleet(state_dir=Path("state"), images={},
                   secrets={"library-tokens": {"alice": "T_ALICE", "bob": "T_BOB"}})


def test_each_secret_carries_its_values_from_the_environment() -> None:
    env = {"T_ALICE": "alice-s3cret-9q", "T_BOB": "bob-s3cret-7w"}
    [secret] = local_secrets.objects(LOCAL, "library", environ=env)
    assert secret["metadata"]["name"] == "library-tokens"
    assert secret["metadata"]["namespace"] == "library"
    assert {key: base64.b64decode(value).decode() for key, value in secret["data"].items()} == {
        "alice": "alice-s3cret-9q", "bob": "bob-s3cret-7w"}


def test_a_value_read_is_scrubbed_from_any_output_afterwards() -> None:
    local_secrets.objects(LOCAL, "library", environ={"T_ALICE": "alice-leak-4Xk", "T_BOB": "b0b-x"})
    assert redact.scrub("pod env: alice-leak-4Xk") == f"pod env: {redact.MASK}"


def test_an_unset_variable_names_file_field_and_variable_but_no_value() -> None:
    with pytest.raises(InputError) as raised:
        local_secrets.objects(LOCAL, "library", fleet_file=Path("clusters/local.yaml"),
                              environ={"T_ALICE": "alice-only-5Rt"})
    assert raised.value.exit_code == EXIT_BAD_INPUT
    assert str(raised.value) == ("clusters/local.yaml: local.secrets.library-tokens.bob: "
                                 "variable T_BOB is not set (the local fleet's pods need it)")
    assert "alice-only-5Rt" not in str(raised.value)

"""The numeric ``$PARJOBS_*`` settings: strict for the CLI, lenient for the library."""

from __future__ import annotations

import pytest

from parjobs import _environ
from parjobs._leases import LEASE_TIMEOUT, lease_timeout


@pytest.mark.parametrize("text", ["x", "0", "-3", "nan", "inf", "1e400", "1.5"])
def test_a_bad_integer_is_named_by_check_and_the_default_for_the_library(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("PARJOBS_DECODE_MEMORY", text)
    with pytest.raises(ValueError, match=r"^PARJOBS_DECODE_MEMORY: expected a positive integer"):
        _environ.check()
    assert _environ.positive_or("PARJOBS_DECODE_MEMORY", True, 7) == 7


@pytest.mark.parametrize("text", ["soon", "0", "-0.5", "nan", "inf"])
def test_a_bad_number_is_named_by_check_and_the_default_for_leases(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", text)
    with pytest.raises(ValueError, match=r"^PARJOBS_LEASE_TIMEOUT: expected a positive number"):
        _environ.check()
    assert lease_timeout() == LEASE_TIMEOUT


def test_unset_or_blank_is_the_default_and_good_values_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, _ in _environ.NUMBERS:
        monkeypatch.delenv(name, raising=False)
    _environ.check()
    monkeypatch.setenv("PARJOBS_PG_CONNECT_TIMEOUT", "  ")
    _environ.check()
    assert _environ.positive("PARJOBS_PG_CONNECT_TIMEOUT", True) is None
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", " 0.25 ")
    monkeypatch.setenv("PARJOBS_PG_CONNECT_TIMEOUT", "3")
    _environ.check()
    assert lease_timeout() == 0.25
    assert _environ.positive("PARJOBS_PG_CONNECT_TIMEOUT", True) == 3

"""`drface serve` warns when the API needs no key and listens beyond loopback."""

from __future__ import annotations

import pytest

from app.server import exposure_warning, is_loopback
from app.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "api.example.org"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_open_api_on_all_interfaces_is_warned_about() -> None:
    warning = exposure_warning(Settings(host="0.0.0.0", port=8000, api_keys=()))
    assert warning is not None
    assert "0.0.0.0:8000" in warning and "DRFACE_API_KEYS" in warning


def test_api_keys_silence_the_warning() -> None:
    assert exposure_warning(Settings(host="0.0.0.0", api_keys=("secret",))) is None


def test_loopback_bind_without_keys_is_not_warned_about() -> None:
    assert exposure_warning(Settings(host="127.0.0.1", api_keys=())) is None

"""Settings from DRFACE_* variables, thread sizing and request body limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, available_cores


def test_every_field_reads_its_drface_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRFACE_PORT", "9123")
    monkeypatch.setenv("DRFACE_API_KEYS", " alpha, beta ,,gamma ")
    monkeypatch.setenv("DRFACE_WEIGHTS", "")
    monkeypatch.setenv("DRFACE_TORCH_THREADS", "3")
    monkeypatch.setenv("DRFACE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("DRFACE_MAX_UPLOAD_BYTES", "1000")
    settings = Settings()
    assert settings.port == 9123
    assert settings.api_keys == ("alpha", "beta", "gamma")
    assert settings.weights is None
    assert settings.thread_count() == 3
    assert settings.log_level == "warning"
    assert settings.max_upload_bytes == 1000


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRFACE_MAX_QUEUE", "-1")
    with pytest.raises(ValueError, match="max_queue"):
        Settings()


def test_threads_default_to_half_the_available_cores_shared_by_workers() -> None:
    cores = available_cores()
    assert cores >= 1
    assert Settings(torch_threads=None, workers=1).thread_count() == max(1, cores // 2)
    assert Settings(torch_threads=None, workers=cores + 1).thread_count() == 1


def test_request_body_limit_leaves_room_for_base64_images() -> None:
    settings = Settings(max_upload_bytes=3_000_000)
    assert settings.max_request_bytes(1) > 4_000_000  # 3 MB of base64 is 4 MB
    assert settings.max_request_bytes(2) > 8_000_000
    assert settings.max_request_bytes(1) < 4_100_000


def test_every_setting_is_in_the_api_docs_table() -> None:
    table = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for name in Settings.model_fields:
        assert f"| `DRFACE_{name.upper()}` |" in table, name


def test_threshold_is_an_operating_point_name_or_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().threshold == "far_1e-3"
    for given, expected in (("far_1e-4", "far_1e-4"), ("best_accuracy", "best_accuracy"), ("0.42", 0.42)):
        monkeypatch.setenv("DRFACE_THRESHOLD", given)
        assert Settings().threshold == expected
    monkeypatch.setenv("DRFACE_THRESHOLD", "")
    assert Settings().threshold == "far_1e-3"
    for bad in ("2", "strict", "far_1e3"):
        monkeypatch.setenv("DRFACE_THRESHOLD", bad)
        with pytest.raises(ValueError, match="threshold"):
            Settings()


def test_the_upload_buffer_must_hold_one_largest_request() -> None:
    largest = Settings().max_request_bytes(2)
    assert Settings(max_buffered_bytes=largest).max_buffered_bytes == largest
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        Settings(max_buffered_bytes=largest - 1)


def test_concurrent_inferences_default_to_the_cores_left_by_the_torch_threads() -> None:
    cores = available_cores()
    default = Settings(torch_threads=None, max_concurrent=None, workers=1)
    assert default.concurrent_inferences() == max(1, cores // default.thread_count())
    assert Settings(torch_threads=1, max_concurrent=None, workers=1).concurrent_inferences() == cores
    assert Settings(max_concurrent=3).concurrent_inferences() == 3

"""`drface train` refuses a run folder it cannot write, before any work, with a sentence (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import train
from training.train import unwritable_folder

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_missing_folder_under_a_writable_one_is_fine(tmp_path: Path) -> None:
    assert unwritable_folder(tmp_path / "runs" / "default") is None


def test_folder_owned_by_someone_else_is_reported_at_the_nearest_existing_ancestor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root_owned = tmp_path / "runs"
    root_owned.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        train.os, "access", lambda path, mode: Path(path) != root_owned and real_access(path, mode)
    )
    assert unwritable_folder(root_owned / "default") == root_owned


def test_train_into_an_unwritable_place_exits_2_with_a_message(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the run folder should go")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--data", str(tmp_path), "--out", str(blocker / "x")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"cannot write {blocker / 'x'}" in result.stderr
    assert "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr

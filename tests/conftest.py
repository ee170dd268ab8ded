"""Shared fixtures. Data tests use the shared face data (DRFACE_DATA_ROOT, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("DRFACE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared face data (cfp/, celeba299/, faces94/); skips the test when absent."""
    root = _data_root()
    if not (root / "cfp").is_dir():
        pytest.skip(f"face data not found at {root} (set DRFACE_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def cfp_root(data_root: Path) -> Path:
    return data_root / "cfp"


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    """Folder of 112x112 aligned UTKFace crops in the shared data; skips the test when absent."""
    root = _data_root() / "utkface"
    if not root.is_dir():
        pytest.skip(f"aligned faces not found at {root} (set DRFACE_DATA_ROOT)")
    return root

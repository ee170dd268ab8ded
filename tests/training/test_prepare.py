"""`drface prepare` on a small copy of celeba299: layout, alignment, report, resume, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from model.align import ARCFACE_TEMPLATE_112
from model.detect import FaceDetector
from training.prepare import REPORT_NAME

IDENTITIES = ("7201", "7202")
PHOTOS_PER_IDENTITY = 4

pytestmark = pytest.mark.data


@pytest.fixture()
def raw_photos(data_root: Path, tmp_path: Path) -> Path:
    """tmp/raw/<identity>/<photo>.jpg: 2 identities x 4 real photos, plus a text file and a blank image."""
    src = tmp_path / "raw"
    for identity in IDENTITIES:
        (src / identity).mkdir(parents=True)
        for photo in sorted((data_root / "celeba299" / identity).glob("*.jpg"))[:PHOTOS_PER_IDENTITY]:
            shutil.copy(photo, src / identity / photo.name)
    (src / IDENTITIES[0] / "notes.jpg").write_text("not a photo")
    cv2.imwrite(str(src / IDENTITIES[1] / "blank.png"), np.full((250, 250, 3), 200, dtype=np.uint8))
    (src / ".DS_Store").write_bytes(b"\x00\x01")
    return src


def _outputs(dst: Path) -> list[str]:
    return sorted(str(p.relative_to(dst)) for p in dst.rglob("*.png"))


def test_prepare_aligns_every_face_and_reports_the_rest(raw_photos: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "aligned"
    assert main(["prepare", str(raw_photos), str(dst), "--workers", "2"]) == 0

    photos = [p for i in IDENTITIES for p in (raw_photos / i).glob("*.jpg") if p.stem != "notes"]
    expected = sorted(f"{photo.parent.name}/{photo.stem}.png" for photo in photos)
    assert len(expected) == len(IDENTITIES) * PHOTOS_PER_IDENTITY
    assert _outputs(dst) == expected
    report = json.loads((dst / REPORT_NAME).read_text())
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert reasons == {
        f"{IDENTITIES[0]}/notes.jpg": "unsupported_image",
        f"{IDENTITIES[1]}/blank.png": "no_face",
    }
    assert report["counts"]["written"] == len(expected)
    assert "8 written" in capsys.readouterr().out

    aligned = cv2.imread(str(dst / expected[0]))
    assert aligned.shape == (112, 112, 3)
    landmarks = FaceDetector().detect(aligned)[0].landmarks
    assert np.linalg.norm(landmarks - ARCFACE_TEMPLATE_112, axis=1).mean() < 8.0


def test_prepare_resumes_without_redoing_finished_photos(raw_photos: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "aligned"
    assert main(["prepare", str(raw_photos), str(dst), "--workers", "1"]) == 0
    first = {name: (dst / name).stat().st_mtime_ns for name in _outputs(dst)}
    removed = sorted(first)[0]
    (dst / removed).unlink()
    leftover = dst / IDENTITIES[0] / f".{Path(removed).name}.1234.partial"  # an interrupted write
    leftover.write_bytes(b"half a png")
    capsys.readouterr()

    assert main(["prepare", str(raw_photos), str(dst), "--workers", "1"]) == 0

    assert "1 written, 7 already done" in capsys.readouterr().out
    assert not leftover.exists()
    for name, mtime in first.items():
        if name != removed:
            assert (dst / name).stat().st_mtime_ns == mtime
    assert _outputs(dst) == sorted(first)


def test_prepare_refuses_a_missing_source(tmp_path: Path) -> None:
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2

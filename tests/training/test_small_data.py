"""Small data with the shipped recipe: the held-out split and the batch shrink, and what the run says."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main as cli_main
from training.config import load_config
from training.data import holdout_count, load_face_data
from training.small_data import data_notes, fit_batch_to_data, fitted_batch_size


def test_shipped_recipe_keeps_its_40_held_out_identities_on_the_shipped_data():
    recipe = load_config(None, {"data.roots": ["x"]}).data
    assert (recipe.holdout_identities, recipe.holdout_max_fraction) == (40, 0.25)
    # celeba299 + faces94 with >= 4 images: ~300 identities, all eligible
    assert holdout_count(recipe.holdout_identities, 300, recipe.holdout_max_fraction) == 40
    assert holdout_count(40, 160, 0.25) == 40


@pytest.mark.parametrize("eligible, held", [(18, 4), (8, 2), (7, 0), (3, 0), (2, 0), (1, 0)])
def test_small_sets_hold_out_a_quarter_and_never_a_lone_identity(eligible: int, held: int):
    assert holdout_count(40, eligible, 0.25) == held


def test_batch_halves_until_an_epoch_has_enough_steps():
    assert fitted_batch_size(6111, 128, 1, 8) == 128  # the shipped data: unchanged
    assert fitted_batch_size(280, 128, 1, 8) == 32  # faces94 minus 4 held-out people
    assert fitted_batch_size(10, 128, 1, 8) == 2  # never below 2 per rank
    assert fitted_batch_size(10, 128, 2, 8) == 4
    config = load_config(None, {"data.roots": ["x"]})  # the shipped recipe: batch 512, lr 0.2
    fitted, notes = fit_batch_to_data(config, 280, 1)
    scaled_lr = config.optim.lr * 32 / config.batch_size  # the lr follows the batch linearly
    assert (fitted.batch_size, fitted.optim.lr) == (32, pytest.approx(scaled_lr))
    assert f"{config.batch_size} -> 32" in notes[0]
    assert fit_batch_to_data(config, 6111, 1) == (config, [])


def _summary(**overrides):
    summary = {
        "train_identities": 280,
        "holdout_identities": 40,
        "holdout_identities_requested": 40,
        "holdout_images": 800,
        "holdout_genuine_pairs_all": 7_600,
        "holdout_impostor_pairs_all": 312_000,
    }
    return {**summary, **overrides}


def test_notes_explain_what_the_calibration_is_worth():
    assert data_notes(_summary()) == []  # ~300 identities: nothing to warn about
    notes = data_notes(
        _summary(
            train_identities=14,
            holdout_identities=4,
            holdout_images=80,
            holdout_genuine_pairs_all=760,
            holdout_impostor_pairs_all=2_400,
        )
    )
    text = "\n".join(notes)
    assert "only 14 training identities" in text and "held out 4 of the 40" in text
    assert "2,400 impostor pairs" in text and "FAR 0.001 (2.4 false accepts)" in text
    assert "FAR 0.01" not in text  # 24 false accepts: a usable threshold
    none = "\n".join(data_notes(_summary(train_identities=3, holdout_identities=0)))
    assert "no calibrated thresholds" in none


def _faces(root: Path, people: int, photos: int) -> Path:
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for k in range(photos):
            cv2.imwrite(str(root / f"p{p}" / f"{k}.png"), rng.integers(0, 256, (112, 112, 3), np.uint8))
    return root


def test_a_small_folder_loads_with_the_shipped_recipe(tmp_path: Path):
    config = load_config(None, {"data.roots": [str(_faces(tmp_path / "faces", 9, 4))]})
    data = load_face_data(config.data, tmp_path / "cache")
    assert data.summary["holdout_identities"] == 2 and data.summary["train_identities"] == 7
    assert data.summary["loader"] == "memory" and len(data.training_labels()) == 28


def test_one_identity_is_a_clear_error(tmp_path: Path, capsys):
    root = _faces(tmp_path / "one", 1, 5)
    assert cli_main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--no-cfp"]) == 2
    assert "needs at least 2 identities" in capsys.readouterr().err

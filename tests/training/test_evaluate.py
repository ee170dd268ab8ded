"""`drface eval` end to end on a tiny CFP subset with a randomly initialised model, and its Python API."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.cli import main
from model.artifact import ModelCard, save_artifact
from model.detect import FaceDetector
from model.mobilefacenet import build_backbone
from training.evaluate import format_report
from training.photos import EvalSettings, embed_aligned_faces, embed_images
from training.protocols import Protocol, load_cfp
from training.scoring import ScoredProtocol, evaluate_embeddings, score_protocols, union_images

SERVED_THRESHOLD = 0.5
REPORT_KEYS = {
    "accuracy",
    "accuracy_std",
    "auc",
    "eer",
    "tar_at_far_1e-3",
    "tar_at_far_1e-2",
    "threshold",
    "pairs",
    "undetected",
    "accuracy_at_served_threshold",
}


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_backbone(drconv=True, region_num=4, width_multiplier=0.25, embedding_dim=64).eval()


@pytest.fixture(scope="module")
def random_artifact(small_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained artifact whose card carries a served threshold."""
    card = ModelCard.for_backbone(
        small_model.config,
        name="test-random",
        version="0",
        trained=False,
        thresholds={"best_accuracy": SERVED_THRESHOLD},
    )
    prefix = tmp_path_factory.mktemp("artifact") / "random"
    save_artifact(prefix, small_model, card)
    return prefix.with_suffix(".safetensors")


@pytest.mark.data
@pytest.mark.slow
def test_eval_cli_on_cfp_subset_prints_one_json_object_and_a_roc_png(
    random_artifact: Path, cfp_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    argv = ["eval", "--weights", str(random_artifact), "--data", str(cfp_root), "--folds", "2"]
    argv += ["--limit-pairs", "8", "--json", "--plots", str(tmp_path), "--no-progress", "--batch-size", "8"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"cfp_ff", "cfp_fp"}
    for report in results.values():
        assert set(report) >= REPORT_KEYS
        assert report["pairs"] == 8
        assert 0 <= report["undetected"] <= 16
        for key in ("accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-3", "tar_at_far_1e-2"):
            assert 0.0 <= report[key] <= 1.0, key
        assert report["served_threshold"] == SERVED_THRESHOLD
        assert -2.0 <= report["threshold"] <= 2.0
    plot = cv2.imread(str(tmp_path / "roc.png"))
    assert plot is not None and plot.shape[0] > 100 and plot.shape[1] > 100
    text = format_report(results)
    assert "cfp_ff" in text and "cfp_fp" in text and "+-" in text


@pytest.mark.data
@pytest.mark.slow
def test_eval_cli_on_a_csv_pairs_file(random_artifact: Path, cfp_root: Path, tmp_path: Path, capsys):
    frontal = [cfp_root / f"Data/Images/00{person}/frontal/0{n}.jpg" for person in (1, 2) for n in (1, 2, 3)]
    rows = [
        (frontal[0], frontal[1], 1),
        (frontal[3], frontal[4], 1),
        (frontal[0], frontal[3], 0),
        (frontal[2], frontal[5], 0),
    ]
    (tmp_path / "pairs.csv").write_text("".join(f"{a},{b},{label}\n" for a, b, label in rows))
    argv = ["eval", "--weights", str(random_artifact), "--pairs", str(tmp_path / "pairs.csv"), "--json"]
    assert main([*argv, "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)["pairs"]
    assert report["pairs"] == 4
    assert 0.0 <= report["auc"] <= 1.0


def test_eval_cli_without_data_fails_with_a_clear_message(random_artifact: Path, tmp_path: Path, capsys):
    assert main(["eval", "--weights", str(random_artifact), "--data", str(tmp_path / "none")]) == 2
    assert "not a CFP root" in capsys.readouterr().err


def test_eval_cli_with_missing_weights_fails_with_a_clear_message(tmp_path: Path, capsys):
    argv = ["eval", "--weights", str(tmp_path / "nothing.safetensors"), "--data", str(tmp_path)]
    assert main(argv) == 2
    assert "weights file not found" in capsys.readouterr().err


@pytest.mark.data
def test_embed_images_flags_a_photo_without_face_and_still_embeds_it(
    small_model: torch.nn.Module, cfp_root: Path, tmp_path: Path
):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, dtype=np.uint8))
    face = cfp_root / "Data/Images/001/frontal/01.jpg"
    settings = EvalSettings(batch_size=2, workers=2, progress=False)
    embeddings, undetected = embed_images(small_model, [face, blank, face], FaceDetector(), settings)
    assert embeddings.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(undetected, [False, True, False])
    # Batching and threads do not change an image's embedding.
    np.testing.assert_allclose(embeddings[0], embeddings[2], atol=1e-5)


def test_embed_aligned_faces_is_batch_size_independent(small_model: torch.nn.Module):
    faces = np.random.default_rng(0).integers(0, 256, size=(5, 112, 112, 3), dtype=np.uint8)
    whole = embed_aligned_faces(small_model, faces, batch_size=5)
    batched = embed_aligned_faces(small_model, faces, batch_size=2)
    assert whole.shape == (5, 64)
    np.testing.assert_allclose(whole, batched, atol=1e-5)


def test_evaluate_embeddings_scores_identity_embeddings_perfectly():
    embeddings = np.repeat(np.eye(4), 2, axis=0)  # images 2k, 2k+1 are person k
    pairs = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 4], [3, 6], [5, 7]])
    labels = np.array([True] * 4 + [False] * 4)
    report = evaluate_embeddings(embeddings, pairs, labels)  # folds: balanced by default
    assert report["accuracy"] == 1.0
    assert report["auc"] == 1.0
    assert report["eer"] == 0.0
    assert 0.0 < report["threshold"] < 1.0


@pytest.mark.data
def test_cfp_splits_are_embedded_from_one_union_of_7000_images(cfp_root: Path):
    images, maps = union_images(list(load_cfp(cfp_root).values()))
    assert len(images) == 7000
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.data
def test_score_protocols_api_reports_each_protocol(small_model: torch.nn.Module, cfp_root: Path):
    protocol = load_cfp(cfp_root, ["FP"])["cfp_fp"].subset(folds=2, max_pairs=4)
    settings = EvalSettings(progress=False, workers=1, batch_size=3)
    report = score_protocols(small_model, [protocol], settings=settings)[protocol.name].report()
    assert report["pairs"] == 4
    assert set(report) >= REPORT_KEYS - {"accuracy_at_served_threshold"}


def test_undetected_counts_only_images_the_protocol_pairs_use():
    protocol = Protocol(
        name="toy",
        images=[Path(f"{i}.jpg") for i in range(4)],
        pairs=np.array([[0, 1], [0, 2], [1, 2], [2, 0]]),
        labels=np.array([True, False, True, False]),
        folds=np.array([0, 0, 1, 1]),
    )
    scored = ScoredProtocol(protocol, np.array([0.9, 0.1, 0.8, 0.2]), np.array([True, False, False, True]))
    report = scored.report()
    assert report["undetected"] == 1  # image 3 is undetected but in no pair
    assert report["accuracy"] == 1.0


@pytest.mark.data
@pytest.mark.slow
def test_eval_cli_measures_an_onnx_teacher_with_the_same_pipeline(
    data_root: Path, cfp_root: Path, capsys: pytest.CaptureFixture[str]
):
    """SFace through `drface eval --teacher`: on 40 CFP-FF pairs a strong model gets (almost) all right, which
    it cannot if pixels, channel order or flip were fed wrongly."""
    teachers = sorted((data_root.parent / "teachers" / "sface").glob("*.onnx"))
    if not teachers:
        pytest.skip("no SFace teacher in ../shared/teachers/sface")
    argv = [
        "eval",
        "--teacher",
        str(teachers[0]),
        "--data",
        str(cfp_root),
        "--splits",
        "cfp_ff",
        "--folds",
        "2",
    ]
    argv += ["--limit-pairs", "40", "--json", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)["cfp_ff"]
    assert report["pairs"] == 40 and report["auc"] >= 0.97
    assert "served_threshold" not in report  # a teacher has no card

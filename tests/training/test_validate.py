"""Training-time verification: threshold calibration and the aligned-once CFP monitor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.mobilefacenet import build_backbone
from training.protocols import Protocol
from training.validate import (
    AlignedCfp,
    align_photos,
    holdout_report,
    operating_points,
    threshold_at_far,
)


def test_threshold_at_far_allows_at_most_that_many_false_accepts():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.6, 0.1, 500), rng.normal(0.1, 0.1, 2000)])
    same = np.concatenate([np.ones(500, bool), np.zeros(2000, bool)])
    threshold = threshold_at_far(scores, same, 1e-3)
    assert np.sum(scores[~same] >= threshold) <= 2  # 0.1% of 2,000
    assert np.sum(scores[~same] >= threshold - 0.02) > 0  # and not needlessly strict
    assert threshold_at_far(scores, same, 1e-6) > scores[~same].max()


@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(drconv=True, region_num=4, width_multiplier=0.25, embedding_dim=32).eval()


def test_holdout_report_has_metrics_and_every_operating_point(tiny_net):
    faces = np.random.default_rng(0).integers(0, 256, (12, 112, 112, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 3)
    pairs = np.array([(0, 1), (3, 4), (0, 3), (1, 6)])
    report = holdout_report(tiny_net, faces, pairs, labels[pairs[:, 0]] == labels[pairs[:, 1]], labels, 8)
    assert {"accuracy", "auc", "eer", "threshold"} <= set(report)
    assert set(report["thresholds"]) == {"best_accuracy", "far_1e-2", "far_1e-3", "far_1e-4"}
    # operating points rest on all 66 pairs of the 12 faces, not on the 4 balanced ones
    point = report["operating_points"]["far_1e-3"]
    assert (point["genuine_pairs"], point["impostor_pairs"]) == (12, 54)
    assert point["threshold"] == report["thresholds"]["far_1e-3"]


def test_operating_points_measure_far_and_tar_at_their_thresholds():
    rng = np.random.default_rng(1)
    same = np.arange(20_000) < 2_000
    scores = np.where(same, rng.normal(0.7, 0.1, same.size), rng.normal(0.1, 0.1, same.size))
    points = operating_points(scores, same, best_accuracy=0.4)
    for far in (1e-2, 1e-3, 1e-4):
        point = points[f"far_{far:.0e}".replace("e-0", "e-")]
        assert point["far"] <= far
        assert point["far"] == np.mean(scores[~same] >= point["threshold"])
        assert point["tar"] == np.mean(scores[same] >= point["threshold"])
    assert (
        points["far_1e-4"]["threshold"] >= points["far_1e-3"]["threshold"] >= points["far_1e-2"]["threshold"]
    )
    assert points["best_accuracy"]["threshold"] == 0.4


@pytest.mark.data
def test_cfp_monitor_aligns_like_eval_and_reports_both_splits(cfp_root: Path, tiny_net):
    cfp = AlignedCfp(cfp_root, ["cfp_ff", "cfp_fp"], cache_dir=None, batch_size=32)
    assert len(cfp.images) == 7000
    aligned = align_photos(cfp.images[:2] + cfp.images[-2:])  # frontal and profile photos, real detector
    assert aligned.shape == (4, 112, 112, 3) and aligned.dtype == np.uint8 and aligned.std() > 10
    # Aligning all 7,000 photos takes minutes: score stand-in crops, on 20 pairs of each of the first 3 folds
    # (indices into the shared image list kept as they are), to exercise the scoring path only.
    cfp._faces = np.random.default_rng(0).integers(0, 256, (7000, 112, 112, 3), dtype=np.uint8)
    for name, protocol in cfp.protocols.items():
        keep = np.concatenate([np.flatnonzero((protocol.folds == f) & (protocol.labels == s))[:10]
                               for f in range(3) for s in (True, False)])  # fmt: skip
        cfp.protocols[name] = Protocol(name, protocol.images, protocol.pairs[keep], protocol.labels[keep],
                                       protocol.folds[keep])  # fmt: skip
    reports = cfp.evaluate(tiny_net, folds=2, thresholds={"best_accuracy": 0.5, "far_1e-3": 0.9})
    assert set(reports) == {"cfp_ff", "cfp_fp"}
    for report in reports.values():
        assert report["pairs"] == 2 * 20 and report["folds"] == 2
        assert {"accuracy", "accuracy_at_best_accuracy", "accuracy_at_far_1e-3"} <= set(report)

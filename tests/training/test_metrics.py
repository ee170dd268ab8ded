"""Verification metrics against hand-computed values and brute-force reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    MetricError,
    accuracy_at_threshold,
    best_threshold,
    equal_error_rate,
    far_key,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_report,
)

# Perfectly separated: every same pair scores above every different pair.
SEPARATED_SCORES = np.array([0.9, 0.8, 0.3, 0.1])
SEPARATED_LABELS = np.array([True, True, False, False])

# One same pair and one different pair tie at 0.5.
TIED_SCORES = np.array([0.5, 0.5, 0.2, 0.8])
TIED_LABELS = np.array([True, False, False, True])


def _mann_whitney_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    same, diff = scores[labels], scores[~labels]
    greater = (same[:, None] > diff[None, :]).sum()
    ties = (same[:, None] == diff[None, :]).sum()
    return (greater + 0.5 * ties) / (same.size * diff.size)


def _brute_force_rates(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, accuracy) of every threshold 'accept score >= t' for t in the distinct scores and +inf."""
    thresholds = np.append(np.unique(scores), np.inf)
    accepted = scores[None, :] >= thresholds[:, None]
    tpr = (accepted & labels).sum(1) / labels.sum()
    fpr = (accepted & ~labels).sum(1) / (~labels).sum()
    accuracy = (accepted == labels).mean(1)
    return fpr, tpr, accuracy


def test_perfect_separation_gives_ideal_metrics():
    threshold, accuracy = best_threshold(SEPARATED_SCORES, SEPARATED_LABELS)
    assert threshold == pytest.approx(0.55)
    assert accuracy == 1.0
    assert roc_auc(SEPARATED_SCORES, SEPARATED_LABELS) == 1.0
    assert equal_error_rate(SEPARATED_SCORES, SEPARATED_LABELS) == 0.0
    assert tar_at_far(SEPARATED_SCORES, SEPARATED_LABELS, 0.0) == 1.0


def test_inverted_scores_give_zero_auc_and_full_eer():
    assert roc_auc(-SEPARATED_SCORES, SEPARATED_LABELS) == 0.0
    assert equal_error_rate(-SEPARATED_SCORES, SEPARATED_LABELS) == 1.0


def test_roc_moves_tied_scores_as_one_diagonal_step():
    roc = roc_curve(TIED_SCORES, TIED_LABELS)
    np.testing.assert_allclose(roc.fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(roc.tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(roc.thresholds, [np.inf, 0.8, 0.5, 0.2])


def test_auc_counts_a_tie_as_half():
    # same {0.5, 0.8} vs diff {0.5, 0.2}: 3 wins + 1 tie out of 4 comparisons.
    assert roc_auc(TIED_SCORES, TIED_LABELS) == pytest.approx(0.875)


def test_eer_interpolates_between_roc_points():
    # Between (fpr, tpr) = (0, 0.5) and (0.5, 1): fpr = 1 - tpr at (0.25, 0.75).
    assert equal_error_rate(TIED_SCORES, TIED_LABELS) == pytest.approx(0.25)


def test_best_threshold_never_splits_ties_and_takes_middle_of_plateau():
    # Accepting {0.8} or {0.8, 0.5, 0.5} are both 3/4 correct; the later cut (0.35) is the middle of 2.
    threshold, accuracy = best_threshold(TIED_SCORES, TIED_LABELS)
    assert threshold == pytest.approx(0.35)
    assert accuracy == pytest.approx(0.75)


def test_tar_at_far_is_max_tpr_with_fpr_at_most_target():
    assert tar_at_far(TIED_SCORES, TIED_LABELS, 0.0) == pytest.approx(0.5)
    assert tar_at_far(TIED_SCORES, TIED_LABELS, 0.49) == pytest.approx(0.5)
    assert tar_at_far(TIED_SCORES, TIED_LABELS, 0.5) == pytest.approx(1.0)


def test_kfold_accuracy_picks_threshold_on_the_other_fold():
    scores = np.array([0.9, 0.6, 0.4, 0.1, 0.8, 0.7, 0.3, 0.2])
    labels = np.array([True, False, True, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_accuracy(scores, labels, folds)
    # Fold 1 separates at 0.5 -> fold 0 gets 2/4; fold 0's best cuts are 0.75 and 0.25 (middle: 0.25)
    # -> fold 1 gets 3/4.
    np.testing.assert_allclose(result.thresholds, [0.5, 0.25])
    np.testing.assert_allclose(result.per_fold, [0.5, 0.75])
    assert result.mean == pytest.approx(0.625)
    assert result.std == pytest.approx(0.125)  # population std, as np.std


def test_metrics_match_brute_force_on_random_tied_scores():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 8, size=60) / 8.0  # few distinct values: many ties
        labels = rng.random(60) < 0.5 + 0.4 * (scores - 0.5)
        if labels.all() or not labels.any():
            continue
        fpr, tpr, accuracy = _brute_force_rates(scores, labels)
        assert roc_auc(scores, labels) == pytest.approx(_mann_whitney_auc(scores, labels))
        threshold, best = best_threshold(scores, labels)
        assert best == pytest.approx(accuracy.max())
        assert accuracy_at_threshold(scores, labels, threshold) == pytest.approx(best)
        for far in (0.0, 0.05, 0.3):
            assert tar_at_far(scores, labels, far) == pytest.approx(tpr[fpr <= far].max())


def test_verification_report_has_every_key_as_plain_numbers():
    rng = np.random.default_rng(1)
    labels = np.arange(40) % 2 == 0
    scores = rng.normal(size=40) + labels
    report = verification_report(scores, labels, np.arange(40) % 4, served_threshold=0.3)
    expected = {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-3", "tar_at_far_1e-2", "threshold"}
    assert expected <= report.keys()
    assert report["pairs"] == 40
    assert report["accuracy_at_served_threshold"] == accuracy_at_threshold(scores, labels, 0.3)
    assert all(type(value) in (int, float) for value in report.values())


def test_far_key_names_operating_points():
    assert far_key(1e-3) == "tar_at_far_1e-3"
    assert far_key(1e-2) == "tar_at_far_1e-2"


def test_single_class_or_single_fold_is_a_typed_error():
    with pytest.raises(MetricError, match="same-identity"):
        roc_auc(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(MetricError, match="two folds"):
        kfold_accuracy(SEPARATED_SCORES, SEPARATED_LABELS, np.zeros(4, dtype=int))
    with pytest.raises(MetricError, match="differ in length"):
        best_threshold(np.zeros(3), np.zeros(2, dtype=bool))

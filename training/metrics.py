"""Verification metrics from pair similarity scores: k-fold accuracy, ROC, AUC, EER, TAR@FAR, best threshold.

Conventions used throughout (numpy only, every function vectorised):
- `scores` (P,) float: higher means "more likely the same person" (cosine similarity for drface).
- `labels` (P,) bool: True for a same-identity pair.
- A pair is accepted as "same" when `score >= threshold`.
- Candidate thresholds are the midpoints between consecutive distinct scores, plus one threshold below the
  lowest score (accept everything) and one above the highest (reject everything); tied scores are never split.
- Accuracies, rates and std are fractions in [0, 1]; the std over folds is the population std (`np.std`,
  ddof=0), as in the common LFW / CFP evaluation code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Standard operating points reported for face verification (false accept rates).
FAR_TARGETS: tuple[float, ...] = (1e-3, 1e-2)

# Offset of the two extreme candidate thresholds beyond the lowest / highest score (cosine units).
_EDGE_MARGIN = 1.0


class MetricError(ValueError):
    """The scores / labels / folds given cannot produce the requested metric (e.g. only one class)."""


@dataclass(frozen=True)
class RocCurve:
    """Receiver operating characteristic, one point per distinct threshold, from (0, 0) to (1, 1).

    `fpr`, `tpr` (K,) non-decreasing fractions; `thresholds` (K,) decreasing: point i accepts `score >= t_i`
    (the first threshold is +inf: nothing accepted).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve by the trapezoid rule."""
        return float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2.0))


@dataclass(frozen=True)
class FoldAccuracy:
    """k-fold accuracy: per fold, the threshold is chosen on the other folds and applied to this one."""

    mean: float
    std: float
    per_fold: np.ndarray  # (K,) accuracy of each fold, fractions
    thresholds: np.ndarray  # (K,) threshold used on each fold
    fold_ids: np.ndarray  # (K,) fold id of each entry above, sorted


def _validate(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise MetricError("labels must be boolean (or 0/1)")
        labels = labels.astype(bool)
    if scores.shape != labels.shape:
        raise MetricError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if scores.size == 0:
        raise MetricError("no pairs to score")
    if not np.isfinite(scores).all():
        raise MetricError("scores contain NaN or infinity")
    return scores, labels


def _require_both_classes(labels: np.ndarray) -> None:
    if labels.all() or not labels.any():
        raise MetricError("need at least one same-identity and one different-identity pair")


def _cumulative_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts at every cut between distinct scores, from 'accept nothing' to 'accept everything'.

    Returns `true_accepts`, `false_accepts` (K+1,) int and `distinct` (K,) the distinct scores in decreasing
    order: cut k accepts the pairs whose score is among the first k distinct values.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    # Index of the last element of each run of equal scores: ties are accepted or rejected together.
    run_ends = np.flatnonzero(np.diff(sorted_scores) != 0)
    run_ends = np.append(run_ends, sorted_scores.size - 1)
    true_accepts = np.concatenate(([0], np.cumsum(sorted_labels)[run_ends]))
    false_accepts = np.concatenate(([0], np.cumsum(~sorted_labels)[run_ends]))
    return true_accepts, false_accepts, sorted_scores[run_ends]


def _cut_thresholds(distinct_desc: np.ndarray) -> np.ndarray:
    """(K+1,) thresholds realising each cut of `_cumulative_counts`: above max, midpoints, below min."""
    midpoints = (distinct_desc[:-1] + distinct_desc[1:]) / 2.0
    return np.concatenate(([distinct_desc[0] + _EDGE_MARGIN], midpoints, [distinct_desc[-1] - _EDGE_MARGIN]))


def accuracy_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly when accepting `score >= threshold`."""
    scores, labels = _validate(scores, labels)
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy over the candidate thresholds -> (threshold, accuracy).

    When several candidates reach the same best accuracy the middle one (in threshold order) is returned, so
    a plateau between the classes gives a threshold near its centre rather than at one edge.
    """
    scores, labels = _validate(scores, labels)
    true_accepts, false_accepts, distinct = _cumulative_counts(scores, labels)
    negatives = int((~labels).sum())
    correct = true_accepts + (negatives - false_accepts)  # integer counts: exact comparison of ties
    best = np.flatnonzero(correct == correct.max())
    chosen = best[len(best) // 2]
    return float(_cut_thresholds(distinct)[chosen]), float(correct[chosen] / scores.size)


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> FoldAccuracy:
    """Accuracy per fold, its threshold chosen (`best_threshold`) on all other folds; mean and population std.

    `folds` (P,) int fold id of each pair; at least two distinct ids.
    """
    scores, labels = _validate(scores, labels)
    folds = np.asarray(folds).ravel()
    if folds.shape != scores.shape:
        raise MetricError(f"folds {folds.shape} and scores {scores.shape} differ in length")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise MetricError("k-fold accuracy needs at least two folds")
    per_fold = np.empty(fold_ids.size)
    thresholds = np.empty(fold_ids.size)
    for i, fold in enumerate(fold_ids):
        test = folds == fold
        thresholds[i], _ = best_threshold(scores[~test], labels[~test])
        per_fold[i] = accuracy_at_threshold(scores[test], labels[test], thresholds[i])
    return FoldAccuracy(
        mean=float(per_fold.mean()),
        std=float(per_fold.std()),
        per_fold=per_fold,
        thresholds=thresholds,
        fold_ids=fold_ids,
    )


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """ROC, one point per distinct score (ties move as one diagonal step), from (0, 0) to (1, 1)."""
    scores, labels = _validate(scores, labels)
    _require_both_classes(labels)
    true_accepts, false_accepts, distinct = _cumulative_counts(scores, labels)
    return RocCurve(
        fpr=false_accepts / (~labels).sum(),
        tpr=true_accepts / labels.sum(),
        thresholds=np.concatenate(([np.inf], distinct)),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule; equals P(score_same > score_diff) + 0.5 P(tie)."""
    return roc_curve(scores, labels).auc


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rate where the false accept rate equals the false reject rate (1 - TPR), linear between ROC points."""
    roc = roc_curve(scores, labels)
    gap = roc.fpr - (1.0 - roc.tpr)  # non-decreasing from -1 at (0,0) to +1 at (1,1)
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(roc.fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(roc.fpr[i - 1] + t * (roc.fpr[i] - roc.fpr[i - 1]))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """True accept rate at a false accept rate target: max TPR over thresholds with FPR <= `far`.

    Only thresholds the scores can realise count (no interpolation); with N different-identity pairs a target
    below 1/N therefore means "no false accept at all".
    """
    if not 0.0 <= far <= 1.0:
        raise MetricError(f"far must be in [0, 1], got {far}")
    roc = roc_curve(scores, labels)
    return float(roc.tpr[roc.fpr <= far].max())


def far_key(far: float) -> str:
    """Report key of a TAR@FAR value, e.g. 1e-3 -> 'tar_at_far_1e-3'."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"tar_at_far_{mantissa}e{int(exponent)}"


def verification_report(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    served_threshold: float | None = None,
) -> dict[str, float | int]:
    """Every metric of a verification protocol as a flat dict of plain Python numbers.

    Keys: `accuracy`, `accuracy_std` (k-fold, fractions), `auc`, `eer`, `tar_at_far_1e-3`, `tar_at_far_1e-2`,
    `threshold` (best global threshold on all pairs), `pairs`; plus `accuracy_at_served_threshold` when
    `served_threshold` is given.
    """
    folded = kfold_accuracy(scores, labels, folds)
    threshold, _ = best_threshold(scores, labels)
    report: dict[str, float | int] = {
        "accuracy": folded.mean,
        "accuracy_std": folded.std,
        "auc": roc_auc(scores, labels),
        "eer": equal_error_rate(scores, labels),
    }
    for far in FAR_TARGETS:
        report[far_key(far)] = tar_at_far(scores, labels, far)
    report["threshold"] = threshold
    report["pairs"] = int(np.asarray(scores).size)
    if served_threshold is not None:
        report["served_threshold"] = float(served_threshold)
        report["accuracy_at_served_threshold"] = accuracy_at_threshold(scores, labels, served_threshold)
    return report

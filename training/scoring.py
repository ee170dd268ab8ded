"""Scoring verification protocols: embeddings + pairs -> cosine scores -> `training.metrics` reports.

`score_protocols(model, protocols, ...)` embeds the union of the protocols' images once (CFP FF + FP share
their frontal images) and returns a `ScoredProtocol` per protocol (scores, `report()`, `roc()`);
`evaluate_embeddings(embeddings, pairs, labels, folds)` scores pairs of ready embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.artifact import DEFAULT_OPERATING_POINT
from model.detect import FaceDetector
from training.metrics import MetricError, RocCurve, roc_curve, verification_report
from training.photos import EvalSettings, EvaluationError, embed_images
from training.protocols import Protocol, balanced_folds

# Card threshold reported as "served": the service's default operating point, else (older cards) the
# k-fold best, as app/thresholds.py falls back.
SERVED_THRESHOLD_KEYS = (DEFAULT_OPERATING_POINT, "best_accuracy")


def cosine_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(N, D) embeddings, (P, 2) index pairs -> (P,) cosine similarity in [-1, 1] (rows renormalised)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", unit[pairs[:, 0]], unit[pairs[:, 1]])


def evaluate_embeddings(
    embeddings: np.ndarray,
    pairs: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | None = None,
    served_threshold: float | None = None,
) -> dict[str, float | int]:
    """Metrics of ready embeddings (N, D) on pairs (P, 2) with labels (P,) bool.

    `folds` (P,) int; None: 10 folds balanced by class (`balanced_folds`), e.g. for training's held-out pairs.
    """
    labels = np.asarray(labels, dtype=bool)
    folds = balanced_folds(labels) if folds is None else folds
    return verification_report(cosine_scores(embeddings, pairs), labels, folds, served_threshold)


def served_threshold(thresholds: Mapping[str, float] | None) -> float | None:
    """The threshold the service uses for 'same person' among a card's `thresholds` (None: none there)."""
    return next((float(thresholds[key]) for key in SERVED_THRESHOLD_KEYS if key in (thresholds or {})), None)


def union_images(protocols: Sequence[Protocol]) -> tuple[list[Path], list[np.ndarray]]:
    """Distinct images of all protocols and, per protocol, its image indices mapped into that union."""
    index: dict[Path, int] = {}
    maps = []
    for protocol in protocols:
        maps.append(
            np.array([index.setdefault(path, len(index)) for path in protocol.images], dtype=np.int64)
        )
    return list(index), maps


@dataclass(frozen=True)
class ScoredProtocol:
    """A protocol with the cosine score of each pair: `scores` (P,) in [-1, 1]; `undetected` (N,) bool per
    image of `protocol.images` (no face found: centre crop used)."""

    protocol: Protocol
    scores: np.ndarray
    undetected: np.ndarray

    @property
    def undetected_count(self) -> int:
        """Images used by this protocol's pairs in which no face was found."""
        return int(self.undetected[np.unique(self.protocol.pairs)].sum())

    def report(self, served_threshold: float | None = None) -> dict[str, float | int]:
        """`verification_report` plus `undetected` (this protocol's images without a detected face)."""
        labels, folds = self.protocol.labels, self.protocol.folds
        try:
            report = verification_report(self.scores, labels, folds, served_threshold)
        except MetricError as exc:
            raise EvaluationError(f"{self.protocol.name}: {exc}") from exc
        report["undetected"] = self.undetected_count
        return report

    def roc(self) -> RocCurve:
        return roc_curve(self.scores, self.protocol.labels)


def score_protocols(
    model: torch.nn.Module,
    protocols: Sequence[Protocol],
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
) -> dict[str, ScoredProtocol]:
    """Embed the union of the protocols' images once (CFP FF + FP: 7,000 images), score every pair."""
    images, maps = union_images(protocols)
    embeddings, undetected = embed_images(model, images, detector, settings)
    return {
        protocol.name: ScoredProtocol(
            protocol, cosine_scores(embeddings, to_union[protocol.pairs]), undetected[to_union]
        )
        for protocol, to_union in zip(protocols, maps, strict=True)
    }

"""Which threshold /v1/verify applies, from the request, the server default and the model card."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequestError
from app.thresholds import FALLBACK_THRESHOLD, resolve_threshold
from model.artifact import ModelCard
from model.mobilefacenet import BackboneConfig

THRESHOLDS = {"best_accuracy": 0.2, "far_1e-2": 0.3, "far_1e-3": 0.4, "far_1e-4": 0.5}


def _card(thresholds: dict[str, float]) -> ModelCard:
    return ModelCard.for_backbone(
        BackboneConfig(), name="t", version="0", trained=True, thresholds=thresholds
    )


def test_named_points_numbers_and_the_default():
    card = _card(THRESHOLDS)
    assert resolve_threshold(card, None, "far_1e-3") == (0.4, "far_1e-3")
    assert resolve_threshold(card, "far_1e-4", "far_1e-3") == (0.5, "far_1e-4")
    assert resolve_threshold(card, 0.35, "far_1e-3") == (0.35, "custom")
    assert resolve_threshold(card, None, 0.25) == (0.25, "custom")


def test_a_requested_point_missing_from_the_card_is_a_clear_422():
    with pytest.raises(InvalidRequestError, match="available: best_accuracy, far_1e-2"):
        resolve_threshold(_card(THRESHOLDS), "far_1e-6", "far_1e-3")


def test_cards_without_the_default_point_fall_back_and_say_so():
    assert resolve_threshold(_card({"best_accuracy": 0.2}), None, "far_1e-3") == (0.2, "fallback")
    assert resolve_threshold(_card({}), None, "far_1e-3") == (FALLBACK_THRESHOLD, "fallback")

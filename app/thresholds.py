"""Which threshold `/v1/verify` applies: a named operating point of the model card, or a number.

The card's operating points ('best_accuracy', 'far_1e-2', 'far_1e-3', 'far_1e-4') were calibrated on held-out
identities when the model was trained. The default is DRFACE_THRESHOLD, itself 'far_1e-3' unless set.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from app.errors import InvalidRequestError
from model.artifact import ModelCard

# Used only when a model card has none of the named thresholds (e.g. an untrained model): the cosine
# similarity above which two faces count as one person.
FALLBACK_THRESHOLD = 0.3
CUSTOM = "custom"  # operating point reported when a number was given
FALLBACK = "fallback"  # ... and when the card lacks the default point

OperatingPointName = Annotated[str, StringConstraints(pattern=r"^(best_accuracy|far_1e-[0-9]+)$")]
ThresholdChoice = Annotated[float, Field(ge=-1.0, le=1.0)] | OperatingPointName


def resolve_threshold(
    card: ModelCard, requested: float | str | None, default: float | str
) -> tuple[float, str]:
    """(cosine threshold, operating point name) for a request's `threshold` (None = `default`).

    A number is used as given ('custom'). A name must be on the card (422 otherwise); when the *default* name
    is missing, the card's best-accuracy threshold or FALLBACK_THRESHOLD is used and reported as 'fallback'.
    """
    choice = default if requested is None else requested
    if not isinstance(choice, str):
        return float(choice), CUSTOM
    if choice in card.thresholds:
        return float(card.thresholds[choice]), choice
    if requested is not None:
        available = ", ".join(sorted(card.thresholds)) or "none (give a number)"
        raise InvalidRequestError(
            f"threshold: operating point {choice!r} is not on this model's card; available: {available}"
        )
    return float(card.thresholds.get("best_accuracy", FALLBACK_THRESHOLD)), FALLBACK

"""Schedules as pure functions of training progress, so a resumed run recomputes them from the step alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.config import HeadConfig, OptimConfig


def learning_rate(step: int, total_steps: int, steps_per_epoch: int, config: OptimConfig) -> float:
    """LR for optimiser step `step` in [0, total_steps): linear warm-up, then cosine / poly / constant."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if config.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = (1.0 - progress) ** config.poly_power
    return config.min_lr + (config.lr - config.min_lr) * factor


@dataclass(frozen=True)
class Margins:
    """Combined margin (m1, m2, m3) in effect: logit s * (cos(m1*theta + m2) - m3) for the true class."""

    margin_mul: float
    margin_arc: float
    margin_cos: float


def margins(epoch_progress: float, config: HeadConfig) -> Margins:
    """Margins at `epoch_progress` (fractional epochs): off during the softmax warm-up, then a linear ramp."""
    after_softmax = epoch_progress - config.softmax_warmup_epochs
    if after_softmax < 0:
        ramp = 0.0
    elif config.margin_warmup_epochs <= 0:
        ramp = 1.0
    else:
        ramp = min(1.0, after_softmax / config.margin_warmup_epochs)
    return Margins(
        margin_mul=1.0 + ramp * (config.margin_mul - 1.0),
        margin_arc=ramp * config.margin_arc,
        margin_cos=ramp * config.margin_cos,
    )

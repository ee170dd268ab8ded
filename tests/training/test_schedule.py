"""Learning-rate and margin schedules, and checkpoint RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from training.config import HeadConfig, OptimConfig
from training.schedule import learning_rate, margins


def test_warmup_then_cosine_to_min_lr():
    config = OptimConfig(lr=0.1, warmup_epochs=1, schedule="cosine", min_lr=0.001)
    lrs = [learning_rate(step, 100, 10, config) for step in range(100)]
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.001, abs=1e-4)


def test_poly_decay_reaches_min_lr():
    config = OptimConfig(lr=0.1, warmup_epochs=0, schedule="poly", poly_power=2, min_lr=0.0)
    assert learning_rate(0, 10, 5, config) == pytest.approx(0.1)
    assert learning_rate(5, 10, 5, config) == pytest.approx(0.1 * 0.25)


def test_margins_off_during_softmax_warmup_then_ramp():
    config = HeadConfig(
        margin_arc=0.5, margin_cos=0.2, margin_mul=1.0, softmax_warmup_epochs=1, margin_warmup_epochs=2
    )
    assert margins(0.5, config).margin_arc == 0.0
    assert margins(2.0, config).margin_arc == pytest.approx(0.25)
    assert margins(2.0, config).margin_cos == pytest.approx(0.1)
    assert margins(10.0, config).margin_arc == pytest.approx(0.5)


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert load_checkpoint(path)["format"] == 1

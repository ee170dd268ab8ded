"""Defaults that scale with the data: a smaller batch for small sets, and what the calibration set is worth.

The shipped recipe (batch 128, 40 held-out identities) is sized for ~300 identities and ~6,000 faces. On a
folder of 18 people it would leave one step per epoch, or none. `fit_batch_to_data` halves the global batch
(scaling the learning rate linearly, the recipe's rule) until an epoch has `min_steps_per_epoch` steps; the
held-out split shrinks in `training.data.holdout_count`. `data_notes` says, in words, what the run can and
cannot promise: how many training identities, and how many impostor pairs each calibrated false-accept rate
rests on.
"""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig
from training.data import steps_per_epoch
from training.validate import OPERATING_FARS

MIN_FALSE_ACCEPTS = 10  # a FAR threshold is set by the top FAR x impostors scores: fewer than this is noise
FEW_TRAIN_IDENTITIES = 100


def fitted_batch_size(num_images: int, batch_size: int, world_size: int, min_steps: int) -> int:
    """`batch_size` halved while an epoch of `num_images` has fewer than `min_steps` steps, keeping at least
    2 faces per rank (BatchNorm needs 2) and divisibility by `world_size`."""
    batch = batch_size
    while steps_per_epoch(num_images, batch) < min_steps:
        smaller = batch // 2
        if smaller < 2 * world_size or smaller % world_size:
            break
        batch = smaller
    return batch


def fit_batch_to_data(config: TrainConfig, num_images: int, world_size: int) -> tuple[TrainConfig, list[str]]:
    """(config with `batch_size` and `optim.lr` fitted to `num_images` training faces, notes on changes)."""
    batch = fitted_batch_size(num_images, config.batch_size, world_size, config.min_steps_per_epoch)
    if batch == config.batch_size:
        return config, []
    lr = config.optim.lr * batch / config.batch_size
    note = (
        f"{num_images} training images: batch_size {config.batch_size} -> {batch} and optim.lr "
        f"{config.optim.lr:g} -> {lr:g} (linear scaling), so an epoch has "
        f"{steps_per_epoch(num_images, batch)} steps (min_steps_per_epoch {config.min_steps_per_epoch})"
    )
    optim = config.optim.model_copy(update={"lr": lr})
    return config.model_copy(update={"batch_size": batch, "optim": optim}), [note]


def data_notes(summary: dict[str, Any]) -> list[str]:
    """Warnings about what a data set this size gives: few classes, a shrunk or missing calibration set,
    false-accept rates with too few impostor pairs to calibrate. Empty for the shipped recipe's data."""
    notes = []
    train_ids = summary["train_identities"]
    if train_ids < FEW_TRAIN_IDENTITIES:
        notes.append(
            f"only {train_ids} training identities: the network learns to tell these people apart and will "
            "separate strangers far less well (the shipped model, 280 identities, reaches CFP-FF ~84%; "
            "published models train on ~85,000)"
        )
    held, requested = summary["holdout_identities"], summary["holdout_identities_requested"]
    if held < requested:
        notes.append(
            f"held out {held} of the {requested} identities asked for (data.holdout_identities), to keep "
            "most of this small set for training (data.holdout_max_fraction)"
        )
    if held == 0:
        notes.append(
            "no held-out identities: the model card gets no calibrated thresholds and no held-out accuracy; "
            "the service then uses its fallback threshold, so pass one to /v1/verify or DRFACE_THRESHOLD"
        )
        return notes
    impostors, genuine = summary["holdout_impostor_pairs_all"], summary["holdout_genuine_pairs_all"]
    rough = [far for far in OPERATING_FARS if impostors * far < MIN_FALSE_ACCEPTS]
    if rough:
        listed = ", ".join(f"FAR {far:g} ({impostors * far:.1f} false accepts)" for far in rough)
        notes.append(
            f"calibration set: {held} identities, {summary['holdout_images']} images, {genuine:,} genuine "
            f"and {impostors:,} impostor pairs. A threshold for false-accept rate f is set by the top "
            f"f x {impostors:,} impostor scores; with fewer than {MIN_FALSE_ACCEPTS} of them it is noise: "
            f"{listed}. Treat those card thresholds as rough and the best-accuracy one as the usable point; "
            f"FAR 1e-4 needs >= {int(MIN_FALSE_ACCEPTS / 1e-4):,} impostor pairs"
        )
    return notes

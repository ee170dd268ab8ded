"""Model artifact = `<prefix>.safetensors` (weights) + `<prefix>.json` (ModelCard that rebuilds the network).

Both files are written atomically (temp file in the same folder, fsync, os.replace). The card records the
SHA-256 of the weights file, so a weights file that does not belong to its card is caught on load. Nothing
here unpickles: weights are safetensors, the card is JSON validated by pydantic.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from model.mobilefacenet import BackboneConfig, MobileFaceNet

WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / f"drface-default{WEIGHTS_SUFFIX}"
"""The artifact shipped with the package (the service's and eval's default model)."""

CARD_FORMAT = 1
# The operating point `/v1/verify` and `drface eval` use unless told otherwise: false accepts at 1 in 1,000.
DEFAULT_OPERATING_POINT = "far_1e-3"


class ArtifactError(Exception):
    """Base class: a model artifact could not be saved or loaded."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """The weights file or its card does not exist."""


class ArtifactCorruptError(ArtifactError):
    """A file exists but cannot be read: truncated, not safetensors, invalid card JSON or wrong checksum."""


class ArtifactMismatchError(ArtifactError):
    """Weights and card are both readable but do not describe the same network."""


class ModelCard(BaseModel):
    """What a trained (or untrained) model is, how it was made and how well it does; stored as JSON."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(CARD_FORMAT, description="Card format version.")
    name: str = Field(description="Short model name, e.g. 'drface-mbf-drconv'.")
    version: str = Field(description="Model version, e.g. '0.1.0' or a run id.")
    created: datetime = Field(
        default_factory=lambda: datetime.now(timezone.utc), description="When the artifact was made (UTC)."
    )
    trained: bool = Field(description="False for randomly initialised weights (embeddings are meaningless).")
    backbone: BackboneConfig = Field(description="Rebuilds the architecture.")
    embedding_dim: int = Field(description="Embedding length D; equals backbone.embedding_dim.")
    region_num: int = Field(
        description="Regions per DRConv layer; backbone.region_num, or 0 for a network without DRConv."
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Cosine-similarity thresholds for 'same person' by operating point: 'best_accuracy' and "
        "'far_1e-2', 'far_1e-3', 'far_1e-4' (false-accept rates), calibrated on held-out identities.",
    )
    operating_points: dict[str, dict[str, float | int]] = Field(
        default_factory=dict,
        description="Per operating point (keys as in `thresholds`): threshold, the FAR and TAR measured "
        "at it on held-out identities never trained on, and the impostor / genuine pair counts behind them.",
    )
    eval: dict[str, Any] = Field(default_factory=dict, description="Evaluation metrics, by protocol name.")
    data: dict[str, Any] = Field(
        default_factory=dict, description="Training data summary (identities, images)."
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="Training run summary (wall time, hardware, epochs, recipe)."
    )
    notes: str = Field("", description="Free text for humans: limits, intended use.")
    weights_sha256: str | None = Field(
        None, description="SHA-256 (hex) of the weights file; filled in by save_artifact."
    )

    @model_validator(mode="after")
    def _consistent_with_backbone(self) -> ModelCard:
        if self.embedding_dim != self.backbone.embedding_dim:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} != backbone.embedding_dim {self.backbone.embedding_dim}"
            )
        expected_regions = self.backbone.region_num if self.backbone.drconv else 0
        if self.region_num != expected_regions:
            raise ValueError(f"region_num {self.region_num} != {expected_regions} implied by the backbone")
        return self

    @classmethod
    def for_backbone(cls, backbone: BackboneConfig, **fields: Any) -> ModelCard:
        """A card whose embedding_dim and region_num are taken from `backbone`."""
        return cls(
            backbone=backbone,
            embedding_dim=backbone.embedding_dim,
            region_num=backbone.region_num if backbone.drconv else 0,
            **fields,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode and the card it was loaded with."""

    model: MobileFaceNet
    card: ModelCard


def artifact_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights, card) paths from a prefix or either file's path."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + CARD_SUFFIX)


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` to exactly `path` (np.save itself appends `.npy` to a name without it), no pickles."""
    with Path(path).open("wb") as f:
        np.save(f, array, allow_pickle=False)


def write_atomic(
    target: Path, write: Callable[[Path], object], *, durable: bool = True, temp_suffix: str = ".tmp"
) -> None:
    """Call write(temp_path) for a temp file beside `target`, then os.replace it onto target.

    Readers see the old file or the complete new one, never a partial write. The one way this project writes
    a file others read (artifacts, checkpoints, caches, prepared faces). `durable` fsyncs the file and its
    folder (off for outputs that are cheap to redo, such as `drface prepare`'s many small images); the temp
    file is named `.<name>.<random><temp_suffix>`, so a run can find what an interrupted one left.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=temp_suffix, dir=target.parent)
    os.close(fd)
    temp_path = Path(temp)
    try:
        write(temp_path)
        temp_path.chmod(0o644)  # mkstemp makes 0600; artifacts are meant to be read by the service user
        if durable:
            with temp_path.open("rb+") as f:
                os.fsync(f.fileno())
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    if not durable:
        return
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_artifact(path_prefix: str | os.PathLike[str], model: nn.Module, card: ModelCard) -> ModelCard:
    """Write `<prefix>.safetensors` and `<prefix>.json`; returns the card as written (with weights_sha256).

    `model` must be a MobileFaceNet (possibly wrapped by DDP / torch.compile) whose config is card.backbone.
    """
    net = _unwrap(model)
    if not isinstance(net, MobileFaceNet):
        raise TypeError(f"save_artifact expects a MobileFaceNet, got {type(net).__name__}")
    if net.config != card.backbone:
        raise ArtifactMismatchError(
            f"model config {net.config!r} differs from card.backbone {card.backbone!r}"
        )
    weights_path, card_path = artifact_paths(path_prefix)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in net.state_dict().items()}
    write_atomic(weights_path, lambda p: save_file(tensors, str(p), metadata={"format": "drface"}))
    written = card.model_copy(update={"weights_sha256": file_sha256(weights_path)})
    save_card(card_path, written)
    return written


def save_card(path: str | os.PathLike[str], card: ModelCard) -> None:
    """Write the card of an artifact (prefix, weights path or card path) atomically; the weights and their
    checksum in the card stay as they are (e.g. adding evaluation results later)."""
    _, card_path = artifact_paths(path)
    write_atomic(card_path, lambda p: p.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8"))


def load_card(path: str | os.PathLike[str]) -> ModelCard:
    """The ModelCard of an artifact (prefix, weights path or card path)."""
    _, card_path = artifact_paths(path)
    if not card_path.is_file():
        raise ArtifactNotFoundError(f"model card not found: {card_path}")
    try:
        return ModelCard.model_validate_json(card_path.read_bytes())
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactCorruptError(f"invalid model card {card_path}: {exc}") from exc


def load_artifact(
    path: str | os.PathLike[str] = DEFAULT_WEIGHTS, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild the network from the card, load the weights, move to `device`, eval mode.

    Raises ArtifactNotFoundError, ArtifactCorruptError or ArtifactMismatchError (all ArtifactError).
    """
    weights_path, card_path = artifact_paths(path)
    if not weights_path.is_file():
        raise ArtifactNotFoundError(f"weights file not found: {weights_path}")
    card = load_card(card_path)
    if card.weights_sha256 is not None and file_sha256(weights_path) != card.weights_sha256:
        raise ArtifactCorruptError(
            f"{weights_path} does not match the checksum in {card_path} (corrupt, or not this card's weights)"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactCorruptError(f"cannot read weights {weights_path}: {exc}") from exc
    model = MobileFaceNet(card.backbone)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactMismatchError(
            f"weights {weights_path} do not fit the architecture in {card_path}: {exc}"
        ) from exc
    return LoadedModel(model=model.to(device).eval(), card=card)

"""Face crops -> L2-normalised embeddings: the one place that turns network outputs into embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.mobilefacenet import INPUT_SIZE


def embed_faces(model: nn.Module, faces: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """(B, 3, 112, 112) float RGB in [-1, 1] -> (B, D) float32, unit L2 norm, on the device of `faces`.

    With `flip`, the embedding is normalise(f(x) + f(horizontal flip of x)) (the standard test-time
    augmentation), computed in one batch of 2B. Runs under inference_mode with the network in eval mode;
    a network in training mode is switched back afterwards.
    """
    check_faces(faces)
    param = next(model.parameters())
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            x = faces.to(device=param.device, dtype=param.dtype)
            return embed_with(model, x, flip).to(faces.device)
    finally:
        if was_training:
            model.train()


def embed_with(
    run: Callable[[torch.Tensor], torch.Tensor], faces: torch.Tensor, flip: bool = True
) -> torch.Tensor:
    """`embed_faces` with `run` computing the network outputs (N, D) of images (N, 3, 112, 112), e.g. a
    micro-batcher shared by concurrent requests; returns (B, D) float32, unit L2 norm."""
    check_faces(faces)
    with torch.inference_mode():
        if flip:
            features = run(torch.cat([faces, torch.flip(faces, dims=[3])]))
            features = features[: len(faces)] + features[len(faces) :]
        else:
            features = run(faces)
        return F.normalize(features.float(), dim=1)


def check_faces(faces: torch.Tensor) -> None:
    """Raise ValueError / TypeError unless `faces` is a non-empty float (B, 3, 112, 112) batch."""
    if faces.ndim != 4 or faces.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected faces (B, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(faces.shape)}")
    if not faces.is_floating_point():
        raise TypeError(f"faces must be a float tensor in [-1, 1], got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError("expected at least one face")

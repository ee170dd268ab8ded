"""Face crops -> L2-normalised embeddings: the one place that runs the network for inference."""

from __future__ import annotations

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
    if faces.ndim != 4 or faces.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected faces (B, 3, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(faces.shape)}")
    if not faces.is_floating_point():
        raise TypeError(f"faces must be a float tensor in [-1, 1], got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError("expected at least one face")
    param = next(model.parameters())
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            x = faces.to(device=param.device, dtype=param.dtype)
            if flip:
                features = model(torch.cat([x, torch.flip(x, dims=[3])]))
                features = features[: len(x)] + features[len(x) :]
            else:
                features = model(x)
            return F.normalize(features.float(), dim=1).to(faces.device)
    finally:
        if was_training:
            model.train()

"""Engine results -> response models (coordinates rounded to 0.01 px, scores to 1e-4)."""

from __future__ import annotations

import numpy as np

from app.engine import Engine, LayerMask
from app.schemas import FaceOut, RegionLayer
from model.pipeline import AlignedFace

_COORDINATE_DECIMALS = 2


def model_label(engine: Engine) -> str:
    """`name@version` of the served model."""
    return f"{engine.card.name}@{engine.card.version}"


def layer_out(layer: LayerMask) -> RegionLayer:
    """One DRConv layer's mask (h, w) as nested lists."""
    height, width = layer.mask.shape
    return RegionLayer(
        name=layer.name, regions=layer.regions, height=height, width=width, mask=layer.mask.tolist()
    )


def face_out(
    face: AlignedFace, embedding: np.ndarray | None = None, layers: list[LayerMask] | None = None
) -> FaceOut:
    """A face with, where computed, its embedding (D,) and its layers' masks."""
    return FaceOut(
        box=np.round(face.box_xyxy.astype(float), _COORDINATE_DECIMALS).tolist(),
        score=None if face.score is None else round(face.score, 4),
        landmarks=np.round(face.landmarks.astype(float), _COORDINATE_DECIMALS).tolist(),
        embedding=None if embedding is None else embedding.astype(float).tolist(),
        region_map=None if layers is None else [layer_out(layer) for layer in layers],
    )

"""`/v1/model`: what the served model is, from its card."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends

from app.dependencies import ReadyEngine, SettingsDep, require_api_key
from app.openapi import error_responses
from app.region_png import region_colors_hex
from app.schemas import ModelInfo
from app.thresholds import resolve_threshold
from model.align import ARCFACE_TEMPLATE_112

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["faces"])


@router.get(
    "/model",
    operation_id="get_model",
    response_model=ModelInfo,
    summary="The served model",
    responses=error_responses(401, 503),
)
async def model_info(engine: ReadyEngine, settings: SettingsDep) -> ModelInfo:
    """Name, version, architecture, thresholds and evaluation results, from the model card."""
    card = engine.card
    backbone = card.backbone
    threshold, operating_point = resolve_threshold(card, None, settings.threshold)
    architecture = (
        f"MobileFaceNet with DRConv ({card.region_num} regions)" if backbone.drconv else "MobileFaceNet"
    )
    return ModelInfo(
        name=card.name,
        version=card.version,
        created=card.created,
        trained=card.trained,
        architecture=architecture,
        region_num=card.region_num,
        embedding_dim=card.embedding_dim,
        drconv_layers=[name for name, _ in engine.model.drconv_layers()],
        threshold=threshold,
        operating_point=operating_point,
        thresholds=card.thresholds,
        operating_points=card.operating_points,
        eval=card.eval,
        backbone=backbone.model_dump(mode="json"),
        notes=card.notes,
        region_colors=region_colors_hex(card.region_num),
        aligned_landmarks=np.round(ARCFACE_TEMPLATE_112.astype(float), 4).tolist(),
    )

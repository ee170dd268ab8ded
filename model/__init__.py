"""Network, layers and the face pipeline (decode, detect, align, embed).

The network API is re-exported lazily (PEP 562), so `import model.decode` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackboneConfig": "model.mobilefacenet",
    "MobileFaceNet": "model.mobilefacenet",
    "RegionMask": "model.mobilefacenet",
    "build_backbone": "model.mobilefacenet",
    "MarginHead": "model.heads",
    "apply_margin": "model.heads",
    "cosine_logits": "model.heads",
    "ModelCard": "model.artifact",
    "LoadedModel": "model.artifact",
    "ArtifactError": "model.artifact",
    "DEFAULT_WEIGHTS": "model.artifact",
    "save_artifact": "model.artifact",
    "load_artifact": "model.artifact",
    "embed_faces": "model.embed",
    "export_onnx": "model.export",
    "OnnxNetwork": "model.onnx_backend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")

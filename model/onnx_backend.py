"""An exported drface ONNX file run by onnxruntime, behind the torch network's interface.

The file's contract (written by model/export.py, read here):
- input ``face``: (B, 3, 112, 112) float32 RGB in [-1, 1], aligned to the ArcFace 5-point template;
- output ``embedding``: (B, D) float32, not normalised (the service L2-normalises f(x) + f(flip x));
- with region maps, one output ``region_map.<layer>`` per DRConv layer: (B, h, w) int64 in [0, regions);
- metadata_props: the model card as JSON under ``drface.card``, and readable copies of its key fields.

`OnnxNetwork` answers ``forward`` / ``forward_with_masks`` / ``region_masks`` like `MobileFaceNet`, so
``model.embed.embed_faces`` and anything else written for the torch network runs it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.artifact import ModelCard
from model.mobilefacenet import RegionMask

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as in model/detect.py: read once, at import
import onnxruntime as ort  # noqa: E402

INPUT_NAME = "face"
EMBEDDING_OUTPUT = "embedding"
REGION_MAP_PREFIX = "region_map."
CARD_KEY = "drface.card"


def region_map_output(layer: str) -> str:
    """ONNX output name of a DRConv layer's guided mask, e.g. 'region_map.stage1.0.project'."""
    return REGION_MAP_PREFIX + layer


class OnnxModelError(ValueError):
    """The file is missing, is not ONNX, or is not a drface export."""


class OnnxNetwork(nn.Module):
    """(B, 3, 112, 112) faces -> (B, D) embeddings and region maps, computed by onnxruntime on CPU.

    ``card``: the exported model card; ``region_layers``: names of the DRConv layers whose maps the file
    outputs (empty when exported without ``--region-maps``); ``batch``: the fixed batch size of the file, or
    None for a dynamic batch (a fixed-batch file is run in chunks, the last one padded). Thread-safe.
    Holds an empty parameter because ``embed_faces`` reads the device and dtype from the parameters.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
            raise OnnxModelError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY not in metadata:
            raise OnnxModelError(f"{self.path} has no '{CARD_KEY}' metadata: not exported by drface export")
        self.card = ModelCard.model_validate_json(metadata[CARD_KEY])
        outputs = [output.name for output in self.session.get_outputs()]
        if outputs[0] != EMBEDDING_OUTPUT:
            raise OnnxModelError(f"{self.path}: first output {outputs[0]!r} is not {EMBEDDING_OUTPUT!r}")
        self.region_layers = [name.removeprefix(REGION_MAP_PREFIX) for name in outputs[1:]]
        batch = self.session.get_inputs()[0].shape[0]
        self.batch: int | None = batch if isinstance(batch, int) else None
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def _run(self, faces: torch.Tensor, with_maps: bool) -> list[np.ndarray]:
        """faces (B, 3, 112, 112) -> [embedding (B, D), region maps (B, h, w) ...] as numpy arrays."""
        names = [EMBEDDING_OUTPUT] + ([region_map_output(n) for n in self.region_layers] if with_maps else [])
        x = np.ascontiguousarray(faces.detach().to("cpu", torch.float32).numpy())
        if self.batch is None or len(x) == self.batch:
            return self.session.run(names, {INPUT_NAME: x})
        chunks = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            padded = np.zeros((self.batch, *x.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            chunks.append([out[: len(chunk)] for out in self.session.run(names, {INPUT_NAME: padded})])
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) float RGB in [-1, 1] -> (B, D) float32 embeddings (not normalised), on CPU."""
        return torch.from_numpy(self._run(faces, with_maps=False)[0])

    def forward_with_masks(self, faces: torch.Tensor) -> tuple[torch.Tensor, list[RegionMask]]:
        """One run: (B, D) embeddings and the RegionMask (B, h, w) int64 of every exported DRConv layer."""
        embedding, *maps = self._run(faces, with_maps=True)
        regions = self.card.region_num
        layers = zip(self.region_layers, maps, strict=True)
        masks = [RegionMask(name, regions, torch.from_numpy(mask)) for name, mask in layers]
        return torch.from_numpy(embedding), masks

    def region_masks(self, faces: torch.Tensor) -> list[RegionMask]:
        """Guided masks of every exported DRConv layer (empty when exported without region maps)."""
        return self.forward_with_masks(faces)[1]

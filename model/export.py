"""Export a drface network to ONNX: standard ops only, region maps as outputs, the model card inside, checked.

The graph: input ``face`` (B, 3, 112, 112) float32 RGB in [-1, 1] -> ``embedding`` (B, D) float32, and with
region maps one ``region_map.<layer>`` (B, h, w) int64 per DRConv layer (names and metadata keys in
model/onnx_backend.py, which reads these files). Every DRConv layer exports through
``DRConv2d.forward_standard_ops``: MatMul, ArgMax, GatherElements; never the fused C++ operator.

The file is written only after it passes its check: ``onnx.checker`` (full, with shape inference), no op
outside the standard domain, and onnxruntime against PyTorch on the same inputs (the given aligned faces
plus synthetic ones): embedding cosine >= 0.9999 per face and region maps equal on >= 99.9% of pixels
(float differences may flip near-ties). The check's numbers are stored in the file's metadata too.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from model.align import FACE_SIZE
from model.artifact import DEFAULT_OPERATING_POINT, LoadedModel, ModelCard, write_atomic
from model.decode import ImageError
from model.mobilefacenet import INPUT_SIZE, MobileFaceNet
from model.onnx_backend import (
    CARD_KEY,
    EMBEDDING_OUTPUT,
    INPUT_NAME,
    OnnxModelError,
    OnnxNetwork,
    region_map_output,
)
from model.pipeline import CROP_LIMITS, FaceError, faces_to_tensor, read_aligned_crop

DEFAULT_OPSET = 17
MIN_OPSET = 13  # GatherElements, ArgMax and the ReduceMean / Split forms the exporter writes
MAX_OPSET = 20  # the newest opset torch's TorchScript-based exporter writes
MIN_COSINE = 0.9999
MIN_MASK_AGREEMENT = 0.999
SYNTHETIC_INPUTS = 8
INPUT_FORMAT = (
    f"{INPUT_NAME}: (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) float32, RGB, (pixel - 127.5) / 127.5 in [-1, 1], "
    f"the face aligned to the ArcFace 5-point template ({FACE_SIZE}x{FACE_SIZE})"
)
OUTPUT_FORMAT = (
    f"{EMBEDDING_OUTPUT}: (B, D) float32, not normalised; drface compares faces by the cosine of "
    "normalise(f(x) + f(horizontal flip of x)) against the thresholds. region_map.<layer>: (B, h, w) int64 "
    "in [0, region_num), the region each pixel of that DRConv layer was assigned to"
)


class ExportError(ValueError):
    """Bad export options, or an export that failed its check (nothing is written then)."""


class ExportCheckError(ExportError):
    """The exported graph does not compute what the PyTorch network computes, or is not standard ONNX."""


@dataclass(frozen=True)
class ExportCheck:
    """onnxruntime vs PyTorch on the same inputs: the worst face's cosine and the share of equal mask pixels.

    ``mask_agreement`` is None when the file has no region maps.
    """

    aligned_faces: int
    synthetic_inputs: int
    min_cosine: float
    mask_agreement: float | None

    @property
    def passed(self) -> bool:
        masks_ok = self.mask_agreement is None or self.mask_agreement >= MIN_MASK_AGREEMENT
        return self.min_cosine >= MIN_COSINE and masks_ok

    def summary(self) -> str:
        """One line for people: what was compared and the numbers."""
        compared = (
            f"onnxruntime vs PyTorch on {self.aligned_faces} aligned faces + {self.synthetic_inputs} "
            f"synthetic inputs: min cosine {self.min_cosine:.6f}"
        )
        if self.mask_agreement is None:
            return f"{compared} (need >= {MIN_COSINE})"
        return (
            f"{compared}, region maps agree on {100 * self.mask_agreement:.3f}% of pixels "
            f"(need >= {MIN_COSINE} and {100 * MIN_MASK_AGREEMENT:.1f}%)"
        )


class ExportGraph(nn.Module):
    """What is traced: face (B, 3, 112, 112) -> (embedding (B, D), one (B, h, w) int64 map per layer...)."""

    def __init__(self, network: MobileFaceNet, region_maps: bool) -> None:
        super().__init__()
        self.network = network
        self.region_maps = region_maps

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.region_maps:
            return (self.network(face),)
        embedding, masks = self.network.forward_with_masks(face)
        return (embedding, *(m.mask for m in masks))


def card_metadata(card: ModelCard) -> dict[str, str]:
    """ONNX metadata_props: the whole card as JSON, and its key fields readable without parsing it."""
    return {
        CARD_KEY: card.model_dump_json(),
        "name": card.name,
        "version": card.version,
        "trained": str(card.trained).lower(),
        "embedding_dim": str(card.embedding_dim),
        "region_num": str(card.region_num),
        "input_format": INPUT_FORMAT,
        "output_format": OUTPUT_FORMAT,
        "similarity": "cosine",
        "thresholds": json.dumps(card.thresholds),
        "operating_points": json.dumps(card.operating_points),
        "default_operating_point": DEFAULT_OPERATING_POINT,
    }


def synthetic_inputs(count: int = SYNTHETIC_INPUTS, seed: int = 0) -> torch.Tensor:
    """(count, 3, 112, 112) in [-1, 1]: half uniform noise, half smooth random images."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(count - count // 2, 3, INPUT_SIZE, INPUT_SIZE, generator=generator) * 2 - 1
    coarse = torch.rand(count // 2, 3, 7, 7, generator=generator) * 2 - 1
    smooth = F.interpolate(coarse, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False)
    return torch.cat([noise, smooth.clamp(-1, 1)])


def load_aligned_faces(folder: Path, limit: int = 16) -> torch.Tensor:
    """The first `limit` 112x112 images (.jpg / .png, sorted by name) of `folder` -> (N, 3, 112, 112)."""
    if not folder.is_dir():
        raise ExportError(f"check faces folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    faces = []
    for path in paths:
        try:
            faces.append(read_aligned_crop(path.read_bytes(), CROP_LIMITS))
        except (ImageError, FaceError):  # not a readable 112x112 crop: skipped
            continue
        if len(faces) == limit:
            break
    if not faces:
        raise ExportError(f"no {FACE_SIZE}x{FACE_SIZE} aligned face images (.jpg/.png) in {folder}")
    return faces_to_tensor(faces)


def compare(network: MobileFaceNet, exported: OnnxNetwork, faces: torch.Tensor) -> tuple[float, float | None]:
    """(min cosine over faces, share of equal region-map pixels or None) between PyTorch and onnxruntime."""
    with torch.no_grad():
        expected, expected_masks = network.forward_with_masks(faces)
    embedding, masks = exported.forward_with_masks(faces)
    cosine = float(F.cosine_similarity(embedding, expected.float(), dim=1).min())
    if not masks:
        return cosine, None
    expected_by_layer = {m.name: m.mask for m in expected_masks}
    equal = sum(int((m.mask == expected_by_layer[m.name]).sum()) for m in masks)
    total = sum(m.mask.numel() for m in masks)
    return cosine, equal / total


def check_export(
    path: Path, network: MobileFaceNet, aligned_faces: torch.Tensor | None = None
) -> ExportCheck:
    """Run the file in onnxruntime against the network (eval mode) on the faces and synthetic inputs."""
    exported = OnnxNetwork(path, threads=torch.get_num_threads())
    synthetic = synthetic_inputs()
    faces = synthetic if aligned_faces is None else torch.cat([aligned_faces, synthetic])
    cosine, agreement = compare(network, exported, faces)
    return ExportCheck(len(faces) - len(synthetic), len(synthetic), cosine, agreement)


def _check_standard(path: Path) -> onnx.ModelProto:
    """onnx.checker (full) and the standard-ops rule; returns the loaded model."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportCheckError(f"onnx.checker refused the exported graph: {exc}") from exc
    proto = onnx.load(str(path))
    custom = sorted({node.domain for node in proto.graph.node} - {"", "ai.onnx"})
    if custom:
        raise ExportCheckError(f"the graph uses non-standard op domains {custom}")
    return proto


def _set_output_shapes(proto: onnx.ModelProto, graph: ExportGraph, batch: int | None) -> None:
    """Write each output's full shape (batch symbolic or fixed, the rest as traced) into the graph outputs.

    The exporter leaves the sizes after a dynamic batch unnamed ('Reshape..._dim_1'); a consumer reading
    the file should see (batch, 512) and (batch, 28, 28).
    """
    with torch.no_grad():
        example = graph(synthetic_inputs(1))
    for output, tensor in zip(proto.graph.output, example, strict=True):
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        first = dims.add()
        if batch is None:
            first.dim_param = "batch"
        else:
            first.dim_value = batch
        for size in tensor.shape[1:]:
            dims.add().dim_value = size


def _trace(graph: ExportGraph, path: Path, opset: int, batch: int | None, outputs: list[str]) -> None:
    example = synthetic_inputs(batch or 2)
    dynamic_axes = None if batch else {name: {0: "batch"} for name in [INPUT_NAME, *outputs]}
    with warnings.catch_warnings():
        # the TorchScript-based exporter warns that it is the legacy one; it needs no extra package
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )


def export_onnx(
    loaded: LoadedModel,
    out: Path,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    region_maps: bool = False,
    aligned_faces: torch.Tensor | None = None,
) -> ExportCheck:
    """Write `loaded`'s network to `out` as a checked ONNX file; returns the check.

    batch: fixed batch size, or None for a dynamic one. region_maps: add every DRConv layer's mask as an
    output. aligned_faces: (N, 3, 112, 112) real faces for the check (synthetic inputs are always added).
    Raises ExportError for bad options or a failed check; `out` is then left as it was.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be a positive int or dynamic, got {batch}")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")
    network = loaded.model.eval()
    layers = [name for name, _ in network.drconv_layers()] if region_maps else []
    outputs = [EMBEDDING_OUTPUT, *(region_map_output(name) for name in layers)]
    result: list[ExportCheck] = []

    def write(temp: Path) -> None:
        # in eval mode: the exporter restores the wrapper's mode, and with it the network's, afterwards
        graph = ExportGraph(network, region_maps).eval()
        _trace(graph, temp, opset, batch, outputs)
        proto = onnx.load(str(temp))
        _set_output_shapes(proto, graph, batch)
        proto.producer_name = "drface"
        proto.doc_string = f"drface {loaded.card.name} {loaded.card.version}: face embeddings" + (
            " and DRConv region maps" if layers else ""
        )
        onnx.helper.set_model_props(proto, card_metadata(loaded.card))
        onnx.save(proto, str(temp))
        proto = _check_standard(temp)
        check = check_export(temp, network, aligned_faces)
        if not check.passed:
            raise ExportCheckError(f"export check failed, nothing written: {check.summary()}")
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, "export_check": json.dumps(asdict(check))})
        onnx.save(proto, str(temp))
        result.append(check)

    write_atomic(out, write)
    return result[0]


def output_shapes(path: Path) -> dict[str, tuple[int | str, ...]]:
    """Output name -> shape of an ONNX file (symbolic dims by name), for reports."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        o.name: tuple(d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim) for o in graph.output
    }


def describe(path: Path) -> str:
    """'embedding (batch, 512), region_map.stage1.0.project (batch, 28, 28), ...' for the CLI."""
    return ", ".join(f"{name} {shape}".replace("'", "") for name, shape in output_shapes(path).items())


def onnx_network_for(
    loaded: LoadedModel, path: Path | None = None, threads: int | None = None
) -> OnnxNetwork:
    """onnxruntime running `loaded`'s network with its region maps: from `path` (a `drface export
    --region-maps` file of these weights), or, without one, exported now (checked) into a temporary file.

    Raises OnnxModelError when the file is of another model or lacks region maps.
    """
    if path is None:
        with tempfile.TemporaryDirectory(prefix="drface-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(loaded, path, region_maps=True)
            return OnnxNetwork(path, threads)  # the session holds the graph: the file may go
    network = OnnxNetwork(path, threads)
    if network.card.weights_sha256 != loaded.card.weights_sha256 or network.card.name != loaded.card.name:
        raise OnnxModelError(
            f"{path} holds {network.card.name} {network.card.version}, not the served weights "
            f"{loaded.card.name} {loaded.card.version}: export them with drface export --region-maps"
        )
    layers = [name for name, _ in loaded.model.drconv_layers()]
    if network.region_layers != layers:
        raise OnnxModelError(f"{path} has no region maps (export it with --region-maps)")
    return network

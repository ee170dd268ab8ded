"""`drface eval`: verification accuracy of a model on CFP (FF, FP), a pairs file or `.bin` verification sets.

Per image, once: bytes -> `decode_image` -> `FaceDetector` -> the largest face -> `align_face` (no face:
`align_center_crop`, counted as `undetected`) -> `embed_faces` (flip-sum, L2-normalised). Per pair: cosine
similarity. Per protocol split: `training.metrics.verification_report`.

Python API reused by training:
- `embed_images(model, paths, detector, ...)` -> (embeddings (N, D), undetected (N,) bool) for raw photos;
- `embed_aligned_faces(model, faces)` for already aligned (N, 112, 112, 3) uint8 BGR crops (no detection);
- `score_protocols(model, protocols, ...)` embeds the union of the protocols' images once (CFP FF + FP share
  their frontal images) -> `ScoredProtocol` per protocol (scores, `report()`, `roc()`);
- `evaluate_protocols(model, protocols, ...)` -> the report of each; `evaluate_protocol` for one;
- `evaluate_embeddings(embeddings, pairs, labels, folds)` scores pairs of ready embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from model.align import align_center_crop, align_face, faces_to_tensor
from model.allocator import keep_freed_memory
from model.artifact import (
    DEFAULT_OPERATING_POINT,
    DEFAULT_WEIGHTS,
    ArtifactError,
    ModelCard,
    load_artifact,
)
from model.decode import ImageError, decode_image
from model.detect import FaceDetector
from model.embed import embed_faces
from training.config import ConfigError, load_config
from training.metrics import MetricError, RocCurve, roc_curve, verification_report
from training.protocols import (
    CFP_SPLITS,
    Protocol,
    ProtocolError,
    balanced_folds,
    load_cfp,
    load_pairs_file,
)
from training.teacher import OnnxTeacher, TeacherError, TeacherModule

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT_ENV = "DRFACE_DATA_ROOT"
# Card threshold reported as "served": the service's default operating point, else (older cards) the
# k-fold best.
SERVED_THRESHOLD_KEYS = (DEFAULT_OPERATING_POINT, "best_accuracy")
_PLOT_MIN_FPR = 1e-4
BIN_ALL_FOLDS = 10


class EvaluationError(Exception):
    """A user-caused evaluation failure: missing data, unreadable image, unusable protocol or weights."""


class EvalSettings(BaseModel):
    """How images are read and embedded during evaluation."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(
        16,
        ge=1,
        description="Faces per network call (each doubled by the flip). On CPU, bigger batches mostly add "
        "page-fault time (the activations are re-allocated per layer); raise it on a GPU.",
    )
    workers: int = Field(2, ge=1, description="Threads decoding / detecting / aligning images in parallel.")
    flip: bool = Field(True, description="Embedding = normalise(f(x) + f(flip(x))).")
    max_image_bytes: int = Field(50 * 2**20, ge=1, description="Larger image files are refused (bytes).")
    max_image_pixels: int = Field(60_000_000, ge=1, description="Larger images are refused (width x height).")
    progress: bool = Field(True, description="Show a tqdm progress bar on stderr.")


def load_face(path: Path, detector: FaceDetector, settings: EvalSettings) -> tuple[np.ndarray, bool]:
    """Read one photo -> ((112, 112, 3) uint8 BGR aligned face, detected). No face: centre crop, False."""
    try:
        image = decode_image(Path(path).read_bytes(), settings.max_image_bytes, settings.max_image_pixels)
    except (OSError, ImageError) as exc:
        raise EvaluationError(f"cannot read image {path}: {exc}") from exc
    detections = detector.detect(image)
    if not detections:
        return align_center_crop(image), False
    return align_face(image, detections[0].landmarks), True


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_images(
    model: torch.nn.Module,
    paths: Sequence[Path],
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed raw photos -> (embeddings (N, D) float32 unit-norm, undetected (N,) bool).

    Images are loaded by `settings.workers` threads (onnxruntime and OpenCV release the GIL) one batch ahead
    of the network, so detection of batch k+1 overlaps the embedding of batch k; memory stays O(batch).
    """
    settings = settings or EvalSettings()
    detector = detector or FaceDetector()
    paths = list(paths)
    if not paths:
        raise EvaluationError("no images to embed")
    undetected = np.zeros(len(paths), dtype=bool)
    embeddings: np.ndarray | None = None
    chunks = list(_chunks(paths, settings.batch_size))
    progress = tqdm(
        total=len(paths), unit="img", desc="embedding", disable=not settings.progress, file=sys.stderr
    )
    with (
        progress as bar,
        ThreadPoolExecutor(max_workers=settings.workers) as pool,
    ):

        def submit(chunk: Sequence[Path]) -> list[Future[tuple[np.ndarray, bool]]]:
            return [pool.submit(load_face, path, detector, settings) for path in chunk]

        pending = submit(chunks[0])
        start = 0
        try:
            for k in range(len(chunks)):
                loaded = [future.result() for future in pending]
                if k + 1 < len(chunks):
                    pending = submit(chunks[k + 1])
                faces = faces_to_tensor([face for face, _ in loaded])
                batch = embed_faces(model, faces, flip=settings.flip).cpu().numpy()
                if embeddings is None:
                    embeddings = np.empty((len(paths), batch.shape[1]), dtype=np.float32)
                embeddings[start : start + len(loaded)] = batch
                undetected[start : start + len(loaded)] = [not detected for _, detected in loaded]
                start += len(loaded)
                bar.update(len(loaded))
        except BaseException:
            for future in pending:  # do not load the rest of the batch after a failure or Ctrl-C
                future.cancel()
            raise
    assert embeddings is not None
    return embeddings, undetected


def embed_aligned_faces(
    model: torch.nn.Module, faces: np.ndarray | Sequence[np.ndarray], batch_size: int = 64, flip: bool = True
) -> np.ndarray:
    """Embed already aligned crops: (N, 112, 112, 3) uint8 BGR -> (N, D) float32 unit-norm. No detection."""
    if len(faces) == 0:
        raise EvaluationError("no faces to embed")
    parts = [
        embed_faces(model, faces_to_tensor(list(chunk)), flip=flip).cpu().numpy()
        for chunk in _chunks(faces, batch_size)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def cosine_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(N, D) embeddings, (P, 2) index pairs -> (P,) cosine similarity in [-1, 1] (rows renormalised)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", unit[pairs[:, 0]], unit[pairs[:, 1]])


def evaluate_embeddings(
    embeddings: np.ndarray,
    pairs: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | None = None,
    served_threshold: float | None = None,
) -> dict[str, float | int]:
    """Metrics of ready embeddings (N, D) on pairs (P, 2) with labels (P,) bool.

    `folds` (P,) int; None: 10 folds balanced by class (`balanced_folds`), e.g. for training's held-out pairs.
    """
    labels = np.asarray(labels, dtype=bool)
    folds = balanced_folds(labels) if folds is None else folds
    return verification_report(cosine_scores(embeddings, pairs), labels, folds, served_threshold)


def served_threshold(card: ModelCard | None) -> float | None:
    """The threshold the service uses for 'same person', from the model card (None when it has none)."""
    if card is None:
        return None
    for key in SERVED_THRESHOLD_KEYS:
        if key in card.thresholds:
            return float(card.thresholds[key])
    return None


def _union_images(protocols: Sequence[Protocol]) -> tuple[list[Path], list[np.ndarray]]:
    """Distinct images of all protocols and, per protocol, its image indices mapped into that union."""
    index: dict[Path, int] = {}
    maps = []
    for protocol in protocols:
        maps.append(
            np.array([index.setdefault(path, len(index)) for path in protocol.images], dtype=np.int64)
        )
    return list(index), maps


@dataclass(frozen=True)
class ScoredProtocol:
    """A protocol with the cosine score of each pair: `scores` (P,) in [-1, 1]; `undetected` (N,) bool per
    image of `protocol.images` (no face found: centre crop used)."""

    protocol: Protocol
    scores: np.ndarray
    undetected: np.ndarray

    @property
    def undetected_count(self) -> int:
        """Images used by this protocol's pairs in which no face was found."""
        return int(self.undetected[np.unique(self.protocol.pairs)].sum())

    def report(self, served_threshold: float | None = None) -> dict[str, float | int]:
        """`verification_report` plus `undetected` (this protocol's images without a detected face)."""
        labels, folds = self.protocol.labels, self.protocol.folds
        try:
            report = verification_report(self.scores, labels, folds, served_threshold)
        except MetricError as exc:
            raise EvaluationError(f"{self.protocol.name}: {exc}") from exc
        report["undetected"] = self.undetected_count
        return report

    def roc(self) -> RocCurve:
        return roc_curve(self.scores, self.protocol.labels)


def _settings_with(settings: EvalSettings | None, batch_size: int | None) -> EvalSettings:
    settings = settings or EvalSettings()
    return settings if batch_size is None else settings.model_copy(update={"batch_size": batch_size})


def score_protocols(
    model: torch.nn.Module,
    protocols: Sequence[Protocol],
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
) -> dict[str, ScoredProtocol]:
    """Embed the union of the protocols' images once (CFP FF + FP: 7,000 images), score every pair."""
    images, maps = _union_images(protocols)
    embeddings, undetected = embed_images(model, images, detector, settings)
    return {
        protocol.name: ScoredProtocol(
            protocol, cosine_scores(embeddings, to_union[protocol.pairs]), undetected[to_union]
        )
        for protocol, to_union in zip(protocols, maps, strict=True)
    }


def _check_device(model: torch.nn.Module, device: torch.device | str | None) -> None:
    if device is not None and torch.device(device) != next(model.parameters()).device:
        actual = next(model.parameters()).device
        raise ValueError(f"model is on {actual}, not on the requested device {device}")


def evaluate_protocols(
    model: torch.nn.Module,
    protocols: Sequence[Protocol],
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
    served_threshold: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, float | int]]:
    """Embed the union of the protocols' images once, then report each protocol (keyed by its name).

    `batch_size` overrides `settings.batch_size`. The network runs where its parameters are; `device`, when
    given, is only checked against that.
    """
    _check_device(model, device)
    scored = score_protocols(model, protocols, detector, _settings_with(settings, batch_size))
    return {name: result.report(served_threshold) for name, result in scored.items()}


def evaluate_protocol(
    model: torch.nn.Module,
    protocol: Protocol,
    detector: FaceDetector | None = None,
    settings: EvalSettings | None = None,
    served_threshold: float | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float | int]:
    """`evaluate_protocols` for a single protocol."""
    return evaluate_protocols(model, [protocol], detector, settings, served_threshold, batch_size, device)[
        protocol.name
    ]


def save_roc_plot(curves: dict[str, RocCurve], path: Path, title: str = "") -> Path:
    """ROC curves (TPR vs FPR, log-scale FPR) of each split into one PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5), dpi=100)
    for name, roc in curves.items():
        # Straight segments between ROC points (the curve the AUC integrates); FPR 0 is clipped onto the
        # log axis' left edge.
        axis.plot(np.maximum(roc.fpr, _PLOT_MIN_FPR), roc.tpr, label=f"{name} (AUC {100 * roc.auc:.2f}%)")
    axis.set_xscale("log")
    axis.set_xlim(_PLOT_MIN_FPR, 1.0)
    axis.set_ylim(0.0, 1.01)
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.set_title(title or "ROC")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


# ----------------------------------------------------------------------------------------------- CLI


def default_cfp_root() -> Path | None:
    """$DRFACE_DATA_ROOT/cfp, else ../shared/data/cfp next to the repository, when it exists."""
    candidates = []
    if os.environ.get(DATA_ROOT_ENV):
        candidates.append(Path(os.environ[DATA_ROOT_ENV]) / "cfp")
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "cfp")
    return next((path for path in candidates if path.is_dir()), None)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="model weights (.safetensors with its .json card)",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="evaluate an ONNX face-embedding model instead of --weights (same pipeline and protocol); its "
        "input is declared by distill.input of --config",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training recipe declaring the --teacher input (default: shipped)",
    )
    parser.add_argument(
        "--protocol",
        choices=("cfp", "pairs", "bin"),
        default=None,
        help="default: pairs if --pairs is given, bin if --data names .bin files, else cfp",
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        help=f"CFP root (default: ${DATA_ROOT_ENV}/cfp or ../shared/data/cfp); with an LFW pairs file, the "
        "folder holding name/name_000n.jpg (default: the pairs file's folder); with --protocol bin, one or "
        "more verification sets (lfw.bin cfp_fp.bin agedb_30.bin ...: aligned faces, 10 folds)",
    )
    parser.add_argument("--pairs", type=Path, default=None, help="pairs file: LFW pairs.txt format or CSV")
    parser.add_argument("--splits", nargs="+", choices=tuple(CFP_SPLITS), default=None, help="CFP splits")
    parser.add_argument("--folds", type=int, default=None, help="quick run: use only the first N folds")
    parser.add_argument(
        "--limit-pairs",
        type=int,
        default=None,
        help="quick run: at most N pairs per split (balanced; cfp and pairs only)",
    )
    parser.add_argument("--batch-size", type=int, default=EvalSettings().batch_size, help="faces per batch")
    parser.add_argument("--workers", type=int, default=EvalSettings().workers, help="image loading threads")
    parser.add_argument("--device", default="cpu", help="torch device for the network, e.g. cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by split")
    parser.add_argument("--plots", type=Path, default=None, help="save ROC curves as DIR/roc.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _protocol_kind(args: argparse.Namespace) -> str:
    if args.protocol:
        return args.protocol
    if args.pairs is not None:
        return "pairs"
    if args.data and all(Path(d).suffix == ".bin" for d in args.data):
        return "bin"
    return "cfp"


def _single_data(args: argparse.Namespace) -> Path | None:
    if args.data and len(args.data) > 1:
        raise EvaluationError("--data takes one folder with --protocol cfp or pairs (several only with bin)")
    return args.data[0] if args.data else None


def _load_protocols(args: argparse.Namespace) -> list[Protocol]:
    kind = _protocol_kind(args)
    if kind == "pairs":
        if args.pairs is None:
            raise EvaluationError("--protocol pairs needs --pairs FILE")
        protocols = [load_pairs_file(args.pairs, _single_data(args))]
    else:
        root = _single_data(args) or default_cfp_root()
        if root is None:
            raise EvaluationError(
                f"CFP data not found: pass --data DIR (the CFP root holding Protocol/ and Data/) or set "
                f"{DATA_ROOT_ENV}"
            )
        protocols = list(load_cfp(root, args.splits or tuple(CFP_SPLITS)).values())
    if args.folds is not None or args.limit_pairs is not None:
        protocols = [p.subset(folds=args.folds, max_pairs=args.limit_pairs) for p in protocols]
    return protocols


def format_report(results: dict[str, dict[str, float | int]]) -> str:
    """Human-readable table of `evaluate_protocols` results (percentages)."""
    has_served = any("accuracy_at_served_threshold" in r for r in results.values())
    header = (
        f"{'split':<8} {'pairs':>6} {'accuracy':>16} {'AUC':>7} {'EER':>7} {'TAR@1e-3':>9} {'TAR@1e-2':>9}"
    )
    header += f" {'threshold':>9} {'undetected':>10}" + (f" {'acc@served':>10}" if has_served else "")
    lines = [header]
    for name, r in results.items():
        accuracy = f"{100 * r['accuracy']:.2f} +- {100 * r['accuracy_std']:.2f}"
        line = (
            f"{name:<8} {r['pairs']:>6} {accuracy:>16} {100 * r['auc']:>7.2f} {100 * r['eer']:>7.2f} "
            f"{100 * r['tar_at_far_1e-3']:>9.2f} {100 * r['tar_at_far_1e-2']:>9.2f} {r['threshold']:>9.4f} "
            f"{r['undetected']:>10}"
        )
        if has_served:
            served = r.get("accuracy_at_served_threshold")
            line += f" {100 * served:>10.2f}" if served is not None else f" {'-':>10}"
        lines.append(line)
    lines.append("accuracy: mean +- std over folds (threshold chosen on the other folds); all rates in %")
    served = next((r["served_threshold"] for r in results.values() if "served_threshold" in r), None)
    if served is not None:
        lines.append(f"acc@served: accuracy at the model card's served threshold {served:.4f}")
    return "\n".join(lines)


def _evaluate_bins(
    model: torch.nn.Module, args: argparse.Namespace, settings: EvalSettings, threshold: float | None
) -> tuple[dict[str, dict[str, float | int]], dict[str, RocCurve], int]:
    """(report, ROC and image count) of each .bin in --data, keyed by file stem; 10 folds (or --folds)."""
    from training.binsets import bin_report, load_bin, score_bin

    if not args.data:
        raise EvaluationError("--protocol bin needs --data FILE.bin [FILE.bin ...]")
    results, curves, images = {}, {}, 0
    for path in args.data:
        binset = load_bin(path)
        scores = score_bin(model, binset, settings.batch_size)
        keep = binset.folds < (args.folds or BIN_ALL_FOLDS)
        try:
            report = bin_report(scores[keep], binset.same[keep], binset.folds[keep], threshold)
        except MetricError as exc:
            raise EvaluationError(f"{binset.name}: {exc}") from exc
        results[binset.name] = report
        curves[binset.name] = roc_curve(scores[keep], binset.same[keep])
        images += len(binset.faces)
    return results, curves, images


def _teacher_model(path: Path, config_path: Path | None) -> torch.nn.Module:
    """An ONNX model behind the student's interface, its input declared by the recipe's distill.input."""
    declared = load_config(config_path, {"data.roots": ["unused"]}).distill.input
    return TeacherModule(OnnxTeacher(path, declared))


def _fail(message: str) -> int:
    print(f"drface eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """`drface eval`: returns 0 on success, 2 on a user error (message on stderr)."""
    started = time.perf_counter()
    keep_freed_memory()
    try:
        settings = EvalSettings(
            batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress
        )
    except ValueError as exc:
        return _fail(str(exc))
    from training.binsets import BinSetError  # binsets embeds with this module's functions

    try:
        if args.teacher is not None:
            model, card, name = _teacher_model(args.teacher, args.config), None, args.teacher.name
        else:
            loaded = load_artifact(args.weights, device=args.device)
            model, card = loaded.model, loaded.card
            name = f"{'trained' if card.trained else 'UNTRAINED'}, {card.name}"
        threshold = served_threshold(card)
        if _protocol_kind(args) == "bin":
            results, curves, images = _evaluate_bins(model, args, settings, threshold)
        else:
            protocols = _load_protocols(args)
            scored = score_protocols(model, protocols, settings=settings)
            results = {name: result.report(threshold) for name, result in scored.items()}
            curves = {name: result.roc() for name, result in scored.items()}
            images = len(_union_images(protocols)[0])
    except (EvaluationError, ProtocolError, ArtifactError, ConfigError, TeacherError, BinSetError) as exc:
        return _fail(str(exc))
    elapsed = time.perf_counter() - started
    if args.plots is not None:
        source = args.teacher if args.teacher is not None else Path(args.weights)
        path = save_roc_plot(curves, args.plots / "roc.png", title=f"ROC: {source.name}")
        print(f"ROC curves saved to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model: {args.teacher or args.weights} ({name})")
        print(format_report(results))
    print(f"evaluated {images} images in {elapsed:.1f} s ({images / elapsed:.1f} images/s)", file=sys.stderr)
    return 0

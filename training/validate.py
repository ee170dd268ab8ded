"""Verification during and after training: held-out identities (threshold calibration) and CFP (monitoring).

The served thresholds come from the held-out *training-data* identities, never from CFP, so CFP stays an
honest test; CFP is then also reported at those thresholds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from model.align import FACE_SIZE
from model.artifact import save_npy, write_atomic
from model.detect import FaceDetector
from training.metrics import accuracy_at_threshold, best_threshold, far_key, roc_curve
from training.photos import EvalSettings, embed_aligned_faces, load_face
from training.protocols import default_cfp_root, load_cfp
from training.scoring import cosine_scores, evaluate_embeddings, served_threshold


def threshold_key(far: float) -> str:
    """Model-card key of the threshold at false-accept rate `far`, e.g. 1e-3 -> 'far_1e-3'."""
    return far_key(far).removeprefix("tar_at_")


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Lowest cosine threshold whose false accept rate (score >= threshold on different pairs) is <= `far`."""
    roc = roc_curve(scores, same)
    index = int(np.flatnonzero(roc.fpr <= far).max())
    if np.isfinite(roc.thresholds[index]):
        return float(roc.thresholds[index])
    return float(
        np.max(scores[~same]) + 1e-6
    )  # not even one false accept allowed: just above the top impostor


OPERATING_FARS = (1e-2, 1e-3, 1e-4)  # operating points of the model card, besides the best-accuracy one


def all_pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every unordered pair of (M, D) `embeddings` -> (scores (P,), same (P,) bool),
    P = M (M - 1) / 2, with `same` from the identity `labels` (M,)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    rows, cols = np.triu_indices(len(unit), k=1)
    scores = (unit @ unit.T)[rows, cols]  # (M, M) once, not (P, D) gathers: P is ~M^2 / 2
    return scores, labels[rows] == labels[cols]


def operating_points(scores: np.ndarray, same: np.ndarray, best_accuracy: float) -> dict[str, dict[str, Any]]:
    """The card's operating points from every held-out pair: for the best-accuracy threshold and for each
    target FAR in OPERATING_FARS, the threshold with the FAR and TAR measured at it and the pair counts."""
    impostor, genuine = scores[~same], scores[same]
    named = {"best_accuracy": best_accuracy}
    named.update({threshold_key(far): threshold_at_far(scores, same, far) for far in OPERATING_FARS})
    return {
        name: {
            "threshold": float(threshold),
            "far": float(np.mean(impostor >= threshold)),
            "tar": float(np.mean(genuine >= threshold)),
            "impostor_pairs": int(impostor.size),
            "genuine_pairs": int(genuine.size),
        }
        for name, threshold in named.items()
    }


def holdout_report(
    model: nn.Module,
    faces_bgr: np.ndarray,
    pairs: np.ndarray,
    same: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
) -> dict[str, Any]:
    """Verification metrics on held-out identities plus the operating points calibrated on them.

    faces_bgr (M, 112, 112, 3) uint8 aligned with identity `labels` (M,); pairs (P, 2) balanced pairs into it
    with same (P,) bool. Keys: those of `metrics.verification_report` (10 balanced folds over `pairs`),
    `operating_points` (see `operating_points`, from all M (M - 1) / 2 pairs, so a FAR of 1e-4 rests on every
    impostor pair there is) and `thresholds` {name: threshold} of those points.
    """
    embeddings = embed_aligned_faces(model, faces_bgr, batch_size=batch_size)
    report: dict[str, Any] = dict(evaluate_embeddings(embeddings, pairs, same))
    best = best_threshold(cosine_scores(embeddings, pairs), same)[0]
    points = operating_points(*all_pair_scores(embeddings, labels), best)
    report["operating_points"] = points
    report["thresholds"] = {name: point["threshold"] for name, point in points.items()}
    return report


def find_cfp_root(setting: Path | str | None, data_roots: list[Path]) -> Path | None:
    """The CFP root to monitor with: the setting, or for 'auto' a `cfp` folder beside a data root, else
    `drface eval`'s default ($DRFACE_DATA_ROOT/cfp or ../shared/data/cfp); None when off or absent."""
    if setting is None:
        return None
    if setting != "auto":
        return Path(setting)
    candidates = [Path(root).resolve().parent / "cfp" for root in data_roots]
    found = next((c for c in candidates if (c / "Protocol").is_dir()), None)
    return found or default_cfp_root()


class AlignedCfp:
    """CFP with every image detected + aligned once (cached as .npy), then embedded per evaluation.

    `drface eval` detects on every call; during training that would cost minutes per epoch, so the aligned
    crops are kept in memory and on disk (`cache_dir/cfp-<digest>.npy`).
    """

    def __init__(self, root: Path, splits: list[str], cache_dir: Path | None, batch_size: int) -> None:
        self.protocols = load_cfp(root, splits)
        self.images = next(iter(self.protocols.values())).images  # one image list shared by all splits
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._faces: np.ndarray | None = None

    def faces(self) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR aligned crops of all images (computed on first use)."""
        if self._faces is None:
            self._faces = _cached(self.cache_dir, self.images, lambda: align_photos(self.images))
        return self._faces

    def evaluate(
        self, model: nn.Module, folds: int, thresholds: dict[str, float]
    ) -> dict[str, dict[str, Any]]:
        """{split: report} on the first `folds` folds; `thresholds` are also applied (served accuracy)."""
        faces = self.faces()
        kept = {name: np.isin(p.folds, np.unique(p.folds)[:folds]) for name, p in self.protocols.items()}
        needed = np.unique(np.concatenate([p.pairs[kept[n]].ravel() for n, p in self.protocols.items()]))
        embedded = embed_aligned_faces(model, faces[needed], batch_size=self.batch_size)
        embeddings = np.zeros((len(faces), embedded.shape[1]), np.float32)
        embeddings[needed] = embedded
        served = served_threshold(thresholds)
        reports = {}
        for name, protocol in self.protocols.items():
            keep = kept[name]
            pairs, labels = protocol.pairs[keep], protocol.labels[keep]
            report: dict[str, Any] = dict(
                evaluate_embeddings(embeddings, pairs, labels, protocol.folds[keep], served)
            )
            scores = cosine_scores(embeddings, pairs)
            for key, value in thresholds.items():
                report[f"accuracy_at_{key}"] = accuracy_at_threshold(scores, labels, value)
            report["folds"] = folds
            reports[name] = report
        return reports


def align_photos(paths: list[Path], workers: int = 2) -> np.ndarray:
    """Detect + align each photo like `drface eval` does (no face: centre crop) -> (N, 112, 112, 3) uint8."""
    detector, settings = FaceDetector(), EvalSettings()
    faces = np.empty((len(paths), FACE_SIZE, FACE_SIZE, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        iterator = pool.map(lambda path: load_face(path, detector, settings)[0], paths)
        for i, face in enumerate(tqdm(iterator, total=len(paths), desc="aligning CFP", unit="img")):
            faces[i] = face
    return faces


def _cached(cache_dir: Path | None, paths: list[Path], compute: Callable[[], np.ndarray]) -> np.ndarray:
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256("\n".join(str(Path(p).resolve()) for p in paths).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"cfp-{digest}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    array = compute()
    write_atomic(path, lambda temp: save_npy(temp, array))
    return array

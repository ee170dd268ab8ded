"""Training data: aligned folder-per-identity datasets decoded once into memory, identity split, augmentation.

Images live as one uint8 array (N, 112, 112, 3) BGR, as `model.align` produces them (6,600 faces = 250 MB),
so a training step costs one gather and a few tensor ops instead of per-image decoding; on 2 CPU cores
DataLoader workers would only compete with the model for the cores. Batches are rebuilt from
(seed, epoch, step) alone, so a resumed run sees exactly the batches and augmentations the uninterrupted run
would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.config import AugmentConfig, DataConfig

log = logging.getLogger(__name__)

FACE_SIZE = 112
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
UNLABELLED = -1  # label of a face without identity: it trains through the distillation loss only


class DatasetError(ValueError):
    """A dataset folder that cannot be used for training (missing, empty, unreadable images)."""


@dataclass(frozen=True)
class Identity:
    """One person: display name (`<root name>/<folder>`) and their image files."""

    name: str
    files: tuple[Path, ...]


def scan_identities(root: Path) -> list[Identity]:
    """Identities of a folder-per-identity dataset, sorted by name; images sorted by file name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    identities = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = tuple(sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        if files:
            identities.append(Identity(f"{root.name}/{folder.name}", files))
    if not identities:
        raise DatasetError(f"no identity folders with images in {root} (expected <root>/<identity>/<photo>)")
    return identities


def looks_aligned(files: Sequence[Path], samples: int = 8) -> bool:
    """True when a spread sample of the images are all 112x112 (the output of `drface prepare`)."""
    step = max(1, len(files) // samples)
    for path in files[::step][:samples]:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.shape[:2] != (FACE_SIZE, FACE_SIZE):
            return False
    return True


def _read_face(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image {path}")
    if image.shape[:2] != (FACE_SIZE, FACE_SIZE):
        image = cv2.resize(image, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return image


def _cache_key(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_faces(files: Sequence[Path], cache_dir: Path | None = None) -> np.ndarray:
    """Decode aligned faces into one (N, 112, 112, 3) uint8 BGR array; cached as .npy keyed by the files."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"faces-{_cache_key(files)}.npy"
        if cache_path.is_file():
            return np.load(cache_path, allow_pickle=False, mmap_mode=None)
    faces = np.empty((len(files), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        faces[i] = _read_face(path)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp.npy")
        np.save(tmp, faces, allow_pickle=False)
        tmp.replace(cache_path)
    return faces


def scan_flat(folder: Path) -> list[Path]:
    """The images of a flat folder of unlabelled faces (sub-folders included), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"unlabelled folder not found: {folder}")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.parts)
    )
    if not files:
        raise DatasetError(f"no images in unlabelled folder {folder}")
    return files


def resolve_aligned_root(root: Path, config: DataConfig, cache_dir: Path, flat: bool = False) -> Path:
    """The aligned version of `root`: itself, or its prepared copy under `cache_dir/aligned/<name>`."""
    mode = config.prepared
    if mode == "auto":
        files = scan_flat(root) if flat else [f for i in scan_identities(root) for f in i.files]
        mode = "aligned" if looks_aligned(files) else "raw"
    if mode == "aligned":
        return Path(root)
    from training.prepare import PrepareConfig, prepare_dataset, summary_line, write_report

    destination = Path(cache_dir) / "aligned" / Path(root).name
    log.info("preparing raw photos %s -> %s", root, destination)
    # Resumable: faces already aligned into the cache are not redone.
    outcomes = prepare_dataset(PrepareConfig(src=Path(root), dst=destination))
    print(summary_line(outcomes, write_report(destination, outcomes)), file=sys.stderr)
    return destination


@dataclass
class FaceData:
    """Everything training needs from the dataset, in memory.

    `train_faces` (N, 112, 112, 3) uint8 BGR with `train_labels` (N,) int64 in [0, num_classes);
    `holdout_faces` (M, 112, 112, 3) with `holdout_pairs` (P, 2) indices, `holdout_same` (P,) bool and
    `holdout_labels` (M,) identity index; `unlabelled_faces` (U, 112, 112, 3) train through distillation only.
    """

    train_faces: np.ndarray
    train_labels: np.ndarray
    class_names: list[str]
    holdout_faces: np.ndarray
    holdout_pairs: np.ndarray
    holdout_same: np.ndarray
    holdout_labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unlabelled_faces: np.ndarray = field(
        default_factory=lambda: np.empty((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    )
    teacher_embeddings: np.ndarray | None = None  # (N + U, Dt): train faces, then unlabelled ones
    summary: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def all_training_faces(self) -> tuple[np.ndarray, np.ndarray]:
        """Labelled then unlabelled faces (N + U, 112, 112, 3), labels (N + U,): UNLABELLED for the latter."""
        if not len(self.unlabelled_faces):
            return self.train_faces, self.train_labels
        faces = np.concatenate([self.train_faces, self.unlabelled_faces])
        labels = np.concatenate(
            [self.train_labels, np.full(len(self.unlabelled_faces), UNLABELLED, np.int64)]
        )
        return faces, labels


def split_identities(
    identities: Sequence[Identity], holdout: int, seed: int
) -> tuple[list[Identity], list[Identity]]:
    """(train, held-out) identities; held-out ones are drawn at random among those with >= 2 images."""
    eligible = [i for i, ident in enumerate(identities) if len(ident.files) >= 2]
    holdout = min(holdout, max(0, len(eligible) - 2))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=holdout, replace=False).tolist()) if holdout else set()
    train = [ident for i, ident in enumerate(identities) if i not in chosen]
    held = [ident for i, ident in enumerate(identities) if i in chosen]
    return train, held


def build_pairs(labels: np.ndarray, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced verification pairs over images with identity `labels` (M,): ((P, 2) int64, (P,) bool)."""
    rng = np.random.default_rng(seed)
    genuine = [
        (a, b)
        for label in np.unique(labels)
        for idx in [np.flatnonzero(labels == label)]
        for k, a in enumerate(idx)
        for b in idx[k + 1 :]
    ]
    genuine_arr = np.array(genuine, dtype=np.int64).reshape(-1, 2)
    half = min(len(genuine_arr), max_pairs // 2)
    if len(genuine_arr) > half:
        genuine_arr = genuine_arr[rng.choice(len(genuine_arr), size=half, replace=False)]
    impostors: set[tuple[int, int]] = set()
    attempts = 0
    while len(impostors) < half and attempts < 100 * max(half, 1):
        a, b = rng.integers(0, len(labels), size=2)
        attempts += 1
        if labels[a] != labels[b]:
            impostors.add((int(min(a, b)), int(max(a, b))))
    impostor_arr = np.array(sorted(impostors), dtype=np.int64).reshape(-1, 2)
    pairs = np.concatenate([genuine_arr, impostor_arr])
    same = np.concatenate([np.ones(len(genuine_arr), bool), np.zeros(len(impostor_arr), bool)])
    return pairs, same


def load_face_data(config: DataConfig, cache_dir: Path) -> FaceData:
    """Scan, prepare if raw, filter, split and decode the datasets in `config.roots`."""
    identities: list[Identity] = []
    for root in config.roots:
        identities.extend(scan_identities(resolve_aligned_root(Path(root), config, cache_dir)))
    kept = [ident for ident in identities if len(ident.files) >= config.min_images_per_identity]
    if len(kept) < 2:
        raise DatasetError(
            f"only {len(kept)} identities have >= {config.min_images_per_identity} images "
            "(data.min_images_per_identity); need at least 2"
        )
    train_ids, held_ids = split_identities(kept, config.holdout_identities, config.split_seed)
    train_files = [f for ident in train_ids for f in ident.files]
    train_labels = np.concatenate(
        [np.full(len(ident.files), k, dtype=np.int64) for k, ident in enumerate(train_ids)]
    )
    held_files = [f for ident in held_ids for f in ident.files]
    held_labels = np.array([k for k, ident in enumerate(held_ids) for _ in ident.files], dtype=np.int64)
    tensor_cache = Path(cache_dir) / "decoded"
    train_faces = decode_faces(train_files, tensor_cache)
    held_faces = (
        decode_faces(held_files, tensor_cache)
        if held_files
        else np.empty((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    )
    pairs, same = (
        build_pairs(held_labels, config.holdout_pairs, config.split_seed)
        if held_ids
        else (np.empty((0, 2), np.int64), np.empty(0, bool))
    )
    unlabelled_files = [
        f
        for folder in config.unlabelled
        for f in scan_flat(resolve_aligned_root(Path(folder), config, cache_dir, flat=True))
    ]
    unlabelled_faces = (
        decode_faces(unlabelled_files, tensor_cache)
        if unlabelled_files
        else np.empty((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    )
    summary = {
        "roots": [str(r) for r in config.roots],
        "unlabelled": [str(u) for u in config.unlabelled],
        "unlabelled_images": len(unlabelled_files),
        "identities_found": len(identities),
        "identities_dropped_too_few_images": len(identities) - len(kept),
        "min_images_per_identity": config.min_images_per_identity,
        "train_identities": len(train_ids),
        "train_images": len(train_files),
        "holdout_identities": len(held_ids),
        "holdout_images": len(held_files),
        "holdout_pairs": int(len(pairs)),
        "dataset_digest": hashlib.sha256(json.dumps([i.name for i in kept]).encode()).hexdigest()[:16],
    }
    return FaceData(
        train_faces=train_faces,
        train_labels=train_labels,
        class_names=[ident.name for ident in train_ids],
        holdout_faces=held_faces,
        holdout_pairs=pairs,
        holdout_same=same,
        holdout_labels=held_labels,
        unlabelled_faces=unlabelled_faces,
        summary=summary,
    )


# ---------------------------------------------------------------- batches


def epoch_permutation(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The image order of `epoch` (num_images,) int64: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped, so every rank has equal work)."""
    return num_images // batch_size


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """Augmentation randomness of one global batch: a function of (seed, epoch, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step + 7)


def to_model_input(faces_bgr: torch.Tensor) -> torch.Tensor:
    """(B, 112, 112, 3) uint8 BGR -> (B, 3, 112, 112) float32 RGB in [-1, 1], as `faces_to_tensor` does."""
    return faces_bgr.flip(-1).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


AUGMENT_DRAWS = (
    7  # uniform numbers per sample: zoom, shift x, shift y, flip, brightness, contrast, saturation
)


def augment(batch: torch.Tensor, config: AugmentConfig, u: torch.Tensor) -> torch.Tensor:
    """Light augmentation of a model-input batch (B, 3, H, W) float RGB in [-1, 1]; returns a new tensor.

    `u` (B, AUGMENT_DRAWS) uniform [0, 1) numbers drive it; they are drawn for every sample whatever is
    switched off, so each switch changes only its own effect.
    """
    b = batch.shape[0]
    out = batch
    if config.scale > 0 or config.translate > 0:
        zoom = 1.0 + config.scale * (2 * u[:, 0] - 1)
        shift = config.translate * (2 * u[:, 1:3] - 1) * 2  # affine_grid spans [-1, 1] = 2 units per image
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = 1.0 / zoom
        theta[:, 1, 1] = 1.0 / zoom
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if config.flip:
        flip = (u[:, 3] < 0.5).view(b, 1, 1, 1)
        out = torch.where(flip, out.flip(-1), out)
    if config.brightness > 0 or config.contrast > 0 or config.saturation > 0:
        x = (out + 1.0) * 0.5
        brightness = (1.0 + config.brightness * (2 * u[:, 4] - 1)).view(b, 1, 1, 1)
        contrast = (1.0 + config.contrast * (2 * u[:, 5] - 1)).view(b, 1, 1, 1)
        saturation = (1.0 + config.saturation * (2 * u[:, 6] - 1)).view(b, 1, 1, 1)
        x = x * brightness
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = gray + (x - gray) * saturation
        out = x.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
    return out


class BatchSource:
    """Global batches of the in-memory training set, sliced for one DDP rank.

    The set is the labelled faces followed by the unlabelled ones (label UNLABELLED); `teacher` (N, Dt) holds
    each face's teacher embedding when distilling. Global batch `step` of `epoch` is
    `perm[step*B:(step+1)*B]`; rank r of w takes rows [r*B/w, (r+1)*B/w), so a w-rank run sees the same
    global batches as a single-process run with the same global batch size.
    """

    def __init__(
        self,
        faces: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        augment_config: AugmentConfig,
        rank: int = 0,
        world_size: int = 1,
        teacher: np.ndarray | None = None,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the world size {world_size}")
        if teacher is not None and len(teacher) != len(labels):
            raise ValueError(f"{len(teacher)} teacher embeddings for {len(labels)} faces")
        self.faces = torch.from_numpy(faces)
        self.labels = torch.from_numpy(labels)
        self.teacher = torch.from_numpy(teacher) if teacher is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.augment_config = augment_config
        self.rank = rank
        self.world_size = world_size
        self.steps = steps_per_epoch(len(labels), batch_size)
        if self.steps == 0:
            raise DatasetError(f"{len(labels)} training images are fewer than one batch of {batch_size}")
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's images (b, 3, 112, 112) float [-1, 1], labels (b,) int64 (UNLABELLED for faces without
        identity) and teacher embeddings (b, Dt) or None, of global batch `step`."""
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(len(self.labels), self.seed, epoch)
            self._perm_epoch = epoch
        index = self._perm[step * self.batch_size : (step + 1) * self.batch_size]
        draws = torch.rand(
            (self.batch_size, AUGMENT_DRAWS), generator=batch_generator(self.seed, epoch, step)
        )
        local = self.batch_size // self.world_size
        rows = slice(self.rank * local, (self.rank + 1) * local)
        index, draws = index[rows], draws[rows]
        images = augment(to_model_input(self.faces[index]), self.augment_config, draws)
        teacher = self.teacher[index] if self.teacher is not None else None
        return images, self.labels[index], teacher

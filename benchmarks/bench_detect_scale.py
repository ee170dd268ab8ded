"""Detection at a scale chosen from the image size vs today's working range: time and missed faces on CFP.

Today (`DetectorConfig` defaults) a photo is detected at its own size when its longer side is 256-640 px,
downscaled above 640, and padded + scaled up to 256 below 256, so the detector's input, and its time, grow
with the photo. The variants bring every photo to one working size chosen from its size (longer side ->
`side`, a quarter-size border first when it is smaller, as today). For each variant, on CFP's photos (every
`--every`-th of the 7,000: frontal and profile, 77 to 1663 px): photos where no face is found, the detector's
wall and CPU ms per photo (one onnxruntime thread, as served; the variants alternate per photo so a change of
load hits all), and how far the largest face's landmarks move from today's, in % of the eye distance.
With `--accuracy` (all 7,000 photos), each variant's aligned faces also go through the shipped network
(image + mirror, as served) and the full CFP protocol (10 folds, the evaluation's own scoring): what the
moved landmarks cost in accuracy. The baseline row then equals the model card's CFP numbers.

    python benchmarks/bench_detect_scale.py [--every 1] [--accuracy] [--sides 256 192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]

from drface_steps import DrfaceSteps  # noqa: E402
from load_test import default_data_root, load_average  # noqa: E402

from model.align import align_face  # noqa: E402
from model.detect import DetectorConfig, FaceDetector  # noqa: E402
from model.pipeline import find_faces  # noqa: E402
from training.photos import embed_aligned_faces  # noqa: E402
from training.protocols import Protocol, load_cfp  # noqa: E402
from training.scoring import evaluate_embeddings  # noqa: E402

BASELINE = "today: 256-640 px range"


def variants(sides: list[int]) -> dict[str, DetectorConfig]:
    """Today's config and one per working side (min_side = max_side = side)."""
    configs = {BASELINE: DetectorConfig(num_threads=1)}
    for side in sides:
        configs[f"longer side -> {side} px"] = DetectorConfig(num_threads=1, min_side=side, max_side=side)
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding cfp/")
    parser.add_argument("--every", type=int, default=1, help="every n-th CFP photo (1: all 7,000)")
    parser.add_argument("--sides", type=int, nargs="+", default=[320, 256, 192])
    parser.add_argument(
        "--accuracy", action="store_true", help="CFP accuracy through each variant's faces (needs --every 1)"
    )
    args = parser.parse_args(argv)
    if args.accuracy and args.every != 1:
        parser.error("--accuracy needs every photo of the protocol: --every 1")
    protocols = load_cfp(args.data_root / "cfp", ["FF", "FP"])
    images = protocols["cfp_fp"].images[:: args.every]  # both splits share all 7,000
    steps = DrfaceSteps()  # the service's decode (limits) and threads
    detectors = {name: FaceDetector(config) for name, config in variants(args.sides).items()}
    names = list(detectors)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    missed = dict.fromkeys(names, 0)
    shift: dict[str, list[float]] = {name: [] for name in names[1:]}
    crops = {name: [] for name in names} if args.accuracy else None
    print(f"{len(images)} CFP photos; load average before: {load_average()}", flush=True)
    for i, path in enumerate(images):
        image = steps.decode(path.read_bytes())
        found = {}
        order = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
        for name in order:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            detections = detectors[name].detect(image)
            cpu[name].append((time.process_time() - start_cpu) * 1000)
            wall[name].append((time.perf_counter() - start_wall) * 1000)
            if detections:
                found[name] = detections[0].landmarks
            else:
                missed[name] += 1
            if crops is not None:  # aligned as `drface eval` aligns (no face: centre crop), untimed
                crops[name].append(
                    align_face(image, detections[0].landmarks)
                    if detections
                    else find_faces(image, detectors[name], limit=1, no_face="center_crop")[0].aligned
                )
        if BASELINE in found:
            reference = found[BASELINE]
            eyes = float(np.linalg.norm(reference[1] - reference[0])) or 1.0
            for name in names[1:]:
                if name in found:
                    shift[name].append(
                        100 * float(np.linalg.norm(found[name] - reference, axis=1).mean()) / eyes
                    )
    print(f"load average after: {load_average()}\n")
    print(
        "| detection | photos without a face | wall ms/photo (mean, p50) | CPU ms/photo (mean) "
        "| landmark shift vs today, % of eye distance (p50, p95) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        moved = (
            "-" if name == BASELINE else f"{np.median(shift[name]):.1f}, {np.percentile(shift[name], 95):.1f}"
        )
        print(
            f"| {name} | {missed[name]} of {len(images)} | {np.mean(wall[name]):.1f}, "
            f"{np.median(wall[name]):.1f} | {np.mean(cpu[name]):.1f} | {moved} |"
        )
    for name in names[1:]:
        print(f"{name}: {np.mean(cpu[BASELINE]) / np.mean(cpu[name]):.2f}x less CPU than today")
    if crops is not None:
        print_accuracy(crops, protocols, steps)
    return 0


def print_accuracy(
    crops: dict[str, list[np.ndarray]], protocols: dict[str, Protocol], steps: DrfaceSteps
) -> None:
    """Each variant's faces through the served network (image + mirror) and the full CFP protocol."""
    print(f"\nload average: {load_average()}")
    print("| detection | CFP-FF accuracy | CFP-FP accuracy | CFP-FF AUC | CFP-FP AUC |")
    print("| --- | --- | --- | --- | --- |")
    for name, faces in crops.items():
        embeddings = embed_aligned_faces(steps.network_module, np.stack(faces), batch_size=32)
        accuracy, auc = [], []
        for protocol in protocols.values():  # cfp_ff, cfp_fp: the same image list
            report = evaluate_embeddings(embeddings, protocol.pairs, protocol.labels, protocol.folds)
            accuracy.append(f"{100 * report['accuracy']:.2f}% ± {100 * report['accuracy_std']:.2f}")
            auc.append(f"{report['auc']:.4f}")
        print(f"| {name} | {' | '.join(accuracy)} | {' | '.join(auc)} |", flush=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())

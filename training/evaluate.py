"""`drface eval`: verification accuracy of a model on CFP (FF, FP), a pairs file or `.bin` verification sets.

The command only: reading photos and embedding them is `training/photos.py`, scoring protocols
`training/scoring.py`, ROC figures `training/plots.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from model.allocator import keep_freed_memory
from model.artifact import DEFAULT_WEIGHTS, ArtifactError, load_artifact
from training.config import ConfigError, load_config
from training.metrics import MetricError, RocCurve, roc_curve
from training.photos import EvalSettings, EvaluationError
from training.plots import save_roc_plot
from training.protocols import (
    CFP_SPLITS,
    DATA_ROOT_ENV,
    Protocol,
    ProtocolError,
    default_cfp_root,
    load_cfp,
    load_pairs_file,
)
from training.scoring import score_protocols, served_threshold, union_images
from training.teacher import OnnxTeacher, TeacherError, TeacherModule

BIN_ALL_FOLDS = 10


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
    """Human-readable table of the protocols' reports (`ScoredProtocol.report`, percentages)."""
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
        threshold = served_threshold(card.thresholds if card is not None else None)
        if _protocol_kind(args) == "bin":
            results, curves, images = _evaluate_bins(model, args, settings, threshold)
        else:
            protocols = _load_protocols(args)
            scored = score_protocols(model, protocols, settings=settings)
            results = {name: result.report(threshold) for name, result in scored.items()}
            curves = {name: result.roc() for name, result in scored.items()}
            images = len(union_images(protocols)[0])
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

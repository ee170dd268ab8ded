"""`drface train`: config -> data -> `Trainer.fit()` -> model artifact (weights + card) in the run folder.

Single process:   drface train --data ALIGNED_DIR [ALIGNED_DIR ...] --out runs/x
Several processes: torchrun --nproc_per_node=N -m app.cli train ...   (DDP, gloo on CPU / nccl on CUDA)

The run folder holds `<name>.safetensors` + `<name>.json` (the artifact the service loads), `config.yaml`,
`metrics.jsonl`, `tensorboard/`, `curves.png` and `checkpoints/` (last.pt, best.pt).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.allocator import keep_freed_memory
from model.artifact import ModelCard, save_artifact
from training.binsets import BinSetError, load_bin
from training.checkpoint import BEST_NAME, LAST_NAME, CheckpointError, load_checkpoint
from training.config import ConfigError, TrainConfig, config_to_yaml, load_config, parse_set_items
from training.data import DatasetError, FaceData, decode_faces, load_face_data
from training.distributed import DistContext, barrier, setup, teardown
from training.loop import FitResult, Trainer
from training.monitor import CURVES_NAME, METRICS_NAME, RunLog, plot_curves
from training.small_data import data_notes, fit_batch_to_data
from training.teacher import OnnxTeacher, TeacherError, teacher_embeddings
from training.validate import AlignedCfp, find_cfp_root

EXIT_USAGE = 2
TEACHER_CHUNK_FACES = 16_384  # streamed faces decoded at a time for the teacher: 0.6 GB


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `drface train`; every flag is a shortcut for a config field (see `--set`)."""
    parser.add_argument(
        "--config", type=Path, help="YAML recipe (default: configs/default.yaml, the shipped model)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="dataset folder(s) and/or insightface .rec file(s) -> data.roots",
    )
    parser.add_argument(
        "--unlabelled",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="flat folders of faces without identity labels (distillation only) -> data.unlabelled",
    )
    parser.add_argument("--teacher", type=Path, help="ONNX face-embedding model to distil -> distill.teacher")
    parser.add_argument("--out", type=Path, help="run folder -> out")
    parser.add_argument("--epochs", type=int, help="-> epochs")
    parser.add_argument("--batch-size", type=int, help="global batch size -> batch_size")
    parser.add_argument("--lr", type=float, help="peak learning rate -> optim.lr")
    parser.add_argument("--seed", type=int, help="-> runtime.seed")
    parser.add_argument("--plain", action="store_true", help="plain MobileFaceNet (model.drconv=false)")
    parser.add_argument("--region-num", type=int, help="DRConv regions m -> model.region_num")
    parser.add_argument("--cfp", type=Path, help="CFP root for monitoring -> eval.cfp_root")
    parser.add_argument("--no-cfp", action="store_true", help="no CFP monitoring (eval.cfp_root=null)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="-> runtime.device")
    parser.add_argument("--threads", type=int, help="torch CPU threads -> runtime.num_threads")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field by its dotted name, e.g. --set head.scale=30 --set optim.schedule=poly",
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted-key overrides from the dedicated flags, then `--set` (which wins)."""
    flags: dict[str, Any] = {
        "data.roots": [str(p) for p in args.data] if args.data else None,
        "data.unlabelled": [str(p) for p in args.unlabelled] if args.unlabelled else None,
        "distill.teacher": str(args.teacher) if args.teacher else None,
        "out": str(args.out) if args.out else None,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optim.lr": args.lr,
        "runtime.seed": args.seed,
        "model.drconv": False if args.plain else None,
        "model.region_num": args.region_num,
        "eval.cfp_root": str(args.cfp) if args.cfp else None,
        "runtime.device": args.device,
        "runtime.num_threads": args.threads,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    if args.no_cfp:
        overrides["eval.cfp_root"] = None
    overrides.update(parse_set_items(args.set))
    return overrides


def hardware_summary(context: DistContext) -> dict[str, Any]:
    """What the run ran on, for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    summary: dict[str, Any] = {
        "device": str(context.device.type),
        "world_size": context.world_size,
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if context.device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(context.device)
    return summary


def _load_data(config: TrainConfig, context: DistContext) -> FaceData:
    """Rank 0 prepares / decodes / runs the teacher (filling the caches) before the other ranks read them."""
    data = load_training_data(config) if context.is_main else None
    barrier(context)
    return data if data is not None else load_training_data(config)


def _all_teacher_embeddings(data: FaceData, teacher: OnnxTeacher, config: TrainConfig) -> np.ndarray:
    """(N + U, Dt) teacher embeddings of the training faces; streamed faces are decoded chunk by chunk."""
    run = {
        "teacher": teacher,
        "cache_dir": _cache_dir(config),
        "batch_size": config.distill.batch_size,
        "progress": config.runtime.progress,
    }
    if data.stream_refs is None:
        return teacher_embeddings(data.all_training_faces()[0], **run)
    refs = data.stream_refs
    return np.concatenate(
        [
            teacher_embeddings(decode_faces(refs[start : start + TEACHER_CHUNK_FACES]), **run)
            for start in range(0, len(refs), TEACHER_CHUNK_FACES)
        ]
    )


def load_training_data(config: TrainConfig) -> FaceData:
    """The data of `config`, with each training face's teacher embedding when distilling (caches filled)."""
    data = load_face_data(config.data, _cache_dir(config))
    if config.distill.teacher is not None:
        teacher = OnnxTeacher(config.distill.teacher, config.distill.input, config.distill.threads)
        data.teacher_embeddings = _all_teacher_embeddings(data, teacher, config)
        data.summary["teacher"] = {
            "file": teacher.path.name,
            "sha256": teacher.sha256,
            "embedding_dim": teacher.embedding_dim,
            "licence": config.provenance.teacher_licence,
        }
    return data


def _cache_dir(config: TrainConfig) -> Path:
    return config.data.cache_dir or (config.out.resolve().parent / ".cache")


def _load_cfp(config: TrainConfig) -> AlignedCfp | None:
    """CFP for monitoring (aligned lazily, cached), or None when switched off or absent."""
    root = find_cfp_root(config.eval.cfp_root, config.data.roots)
    if root is None:
        return None
    return AlignedCfp(root, list(config.eval.cfp_tasks), _cache_dir(config), config.eval.batch_size)


def _finalize(
    trainer: Trainer, config: TrainConfig, result: FitResult, wall_start: float
) -> tuple[Path, dict[str, Any]]:
    """Rank 0: best weights -> final held-out + CFP evaluation -> artifact + curves.

    Returns (weights path, final evaluation by protocol name)."""
    out = config.out
    best_path = trainer.checkpoint_dir / BEST_NAME
    shipped_epoch = trainer.epoch
    if config.eval.select_by != "last" and best_path.is_file():
        best = load_checkpoint(best_path)
        trainer.net.load_state_dict(best["backbone"])
        shipped_epoch = int(best["epoch"])
    results = trainer.evaluate(final=True)
    holdout = results.get("holdout", {})
    thresholds = dict(holdout.get("thresholds", {}))
    evaluation = {
        name: {k: v for k, v in report.items() if k not in ("thresholds", "operating_points")}
        for name, report in results.items()
    }
    card = ModelCard.for_backbone(
        trainer.net.config,
        name=config.name,
        version=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        trained=True,
        thresholds=thresholds,
        operating_points=holdout.get("operating_points", {}),
        eval=evaluation,
        data={
            **trainer.data.summary,
            "licences": config.provenance.data_licences,
            "weights_terms": config.provenance.weights_terms,
        },
        training={
            "epochs": config.epochs,
            "shipped_epoch": shipped_epoch,
            "selected_by": config.eval.select_by,
            "train_seconds": round(result.train_seconds, 1),
            "wall_seconds_this_session": round(time.perf_counter() - wall_start, 1),
            "images_per_second": round(result.images_per_second, 1),
            "hardware": hardware_summary(trainer.context),
            "threshold_source": "holdout identities of the training data (not CFP)",
            "recipe": config.model_dump(mode="json"),
        },
        notes="Thresholds are cosine similarities of flip-summed, L2-normalised embeddings.",
    )
    prefix = out / config.name
    save_artifact(prefix, trainer.net, card)
    plot_curves(out / METRICS_NAME, out / CURVES_NAME)
    return prefix.with_name(prefix.name + ".safetensors"), evaluation


def unwritable_folder(folder: Path) -> Path | None:
    """The folder (or its nearest existing ancestor) in which this process cannot create files, else None.

    Checked before any work, so that a run folder owned by another user (a Docker bind mount created by root)
    stops training with a sentence instead of a traceback half-way through preparing the data.
    """
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    return existing


def _unwritable_message(folder: Path) -> str:
    try:
        owner = f"owned by uid {folder.stat().st_uid}, "
    except OSError:
        owner = ""
    what = "is not a folder" if folder.exists() and not folder.is_dir() else "is not writable"
    return (
        f"{folder} {what} ({owner}this process runs as uid {os.getuid()}): choose another --out "
        "(and data.cache_dir), or make the folder writable for this user. In Docker, see docs/deployment.md "
        "(the runs folder)."
    )


def _print_summary(weights: Path, results: dict[str, Any]) -> None:
    print(f"artifact: {weights}", file=sys.stderr)
    for name, report in results.items():
        if isinstance(report, dict) and "accuracy" in report:
            print(f"  {name}: accuracy {100 * report['accuracy']:.2f}%", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """`drface train`: 0 when done, 2 for a bad config/data/checkpoint, 128+signal when stopped by one."""
    try:
        config = load_config(args.config, overrides_from_args(args))
    except ConfigError as exc:
        print(f"drface train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    last = config.out / "checkpoints" / LAST_NAME
    if last.is_file() and not args.resume:
        print(
            f"drface train: {config.out} already holds a checkpoint; pass --resume to continue it or choose "
            "another --out",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for folder in (config.out, _cache_dir(config)):
        blocked = unwritable_folder(folder)
        if blocked is not None:
            print(f"drface train: cannot write {folder}: {_unwritable_message(blocked)}", file=sys.stderr)
            return EXIT_USAGE
    if config.runtime.num_threads is not None:
        torch.set_num_threads(config.runtime.num_threads)
    keep_freed_memory()
    if config.runtime.deterministic:
        torch.use_deterministic_algorithms(True)
    wall_start = time.perf_counter()
    context = setup(config.runtime.device)
    log = None
    try:
        data = _load_data(config, context)
        config, batch_notes = fit_batch_to_data(config, len(data.training_labels()), context.world_size)
        data.summary["warnings"] = batch_notes + data_notes(data.summary)
        if context.is_main:
            for note in data.summary["warnings"]:
                print(f"drface train: warning: {note}", file=sys.stderr)
            config.out.mkdir(parents=True, exist_ok=True)
            (config.out / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
            log = RunLog(config.out)
            print(
                f"drface train: {data.summary['train_identities']} identities, "
                f"{data.summary['train_images']} images; held out {data.summary['holdout_identities']} "
                f"identities ({data.summary['holdout_pairs']} pairs); {data.summary['loader']} loader; "
                f"world size {context.world_size}, device {context.device}",
                file=sys.stderr,
            )
        cfp = _load_cfp(config) if context.is_main else None
        bin_sets = [load_bin(path) for path in config.eval.bin_sets] if context.is_main else []
        trainer = Trainer(config, data, context, config.out, log=log, cfp=cfp, bin_sets=bin_sets)
        if args.resume:
            trainer.resume()
            if context.is_main:
                print(
                    f"drface train: resumed at epoch {trainer.epoch + 1}, step {trainer.step}",
                    file=sys.stderr,
                )
        result = trainer.fit()
        if not result.completed:
            reason = f"stopped by signal {result.signum}" if result.signum else "session step budget spent"
            if context.is_main:
                print(
                    f"drface train: {reason}; checkpoint saved to {last}. "
                    "Continue with the same command plus --resume.",
                    file=sys.stderr,
                )
            return 128 + result.signum if result.signum else 0
        if context.is_main:
            weights, evaluation = _finalize(trainer, config, result, wall_start)
            _print_summary(weights, evaluation)
        barrier(context)
        return 0
    except (DatasetError, CheckpointError, TeacherError, BinSetError) as exc:
        print(f"drface train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:  # a folder below the checked ones, owned by another user
        print(f"drface train: permission denied: {exc.filename} ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if log is not None:
            log.close()
        teardown(context)

"""The training loop: one `Trainer` owns model, head, optimiser and position; `fit()` runs epochs to the end.

Position = (epoch, step): the next global batch to train. Everything else (learning rate, margins, batch
contents, augmentation) is a function of the position and the seed, so a checkpoint of the weights, optimiser,
scaler, RNG states and position resumes the run exactly.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.mobilefacenet import MobileFaceNet
from training.binsets import BinSet, evaluate_bin
from training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from training.config import TrainConfig
from training.data import BatchSource, FaceData
from training.distill import DistillLoss
from training.distributed import DistContext, average_gradients, barrier, max_over_ranks
from training.monitor import RunLog
from training.partial_fc import ShardedMarginHead, clip_grad_norm_
from training.schedule import learning_rate, margins
from training.streaming import StreamingBatches, StreamingBatchSource
from training.validate import AlignedCfp, holdout_report

# Sections of the config that must match between a checkpoint and the run resuming it.
RESUME_FIXED_SECTIONS = ("data", "model", "head", "augment", "distill")
# Fields of those sections that change how batches are made, not which: a run may resume with others.
RESUME_FREE_FIELDS = {"data": ("loader", "memory_budget_gb", "workers")}


def _fixed_part(config: dict[str, Any], section: str) -> Any:
    """The part of a config section that must match to resume. Fields added to drface after the checkpoint
    was written take their defaults, so an older checkpoint resumes when the new fields are left alone."""
    value = config.get(section)
    if isinstance(value, dict):
        section_type = TrainConfig.model_fields[section].annotation
        with contextlib.suppress(ValidationError):
            value = section_type.model_validate(value).model_dump(mode="json")
        return {k: v for k, v in value.items() if k not in RESUME_FREE_FIELDS.get(section, ())}
    return value


def build_batch_source(
    data: FaceData, config: TrainConfig, context: DistContext
) -> BatchSource | StreamingBatchSource:
    """In-memory batches, or DataLoader workers decoding them when the data is streamed (same batches)."""
    args = (config.batch_size, config.runtime.seed, config.augment, context.rank, context.world_size)
    if data.stream_refs is not None:
        dataset = StreamingBatches(
            data.stream_refs, data.training_labels(), *args, teacher=data.teacher_embeddings
        )
        return StreamingBatchSource(dataset, config.data.workers)
    faces, labels = data.all_training_faces()
    return BatchSource(faces, labels, *args, teacher=data.teacher_embeddings, device=context.device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype on CUDA per runtime.precision; None = fp32 (always on CPU)."""
    if device.type != "cuda" or config.runtime.precision == "fp32":
        return None
    if config.runtime.precision == "bf16" or (
        config.runtime.precision == "auto" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float16


def parameter_groups(
    backbone: nn.Module, head: nn.Module, config: TrainConfig, extra: nn.Module | None = None
) -> list[dict[str, Any]]:
    """[backbone decayed, backbone not decayed (norms, biases, PReLU), extra (e.g. the distillation
    projection, decayed), head]; the head is always last."""
    decay, no_decay = [], []
    for param in backbone.parameters():
        if not param.requires_grad:
            continue
        (no_decay if config.optim.no_decay_norm_bias and param.ndim <= 1 else decay).append(param)
    head_decay = config.optim.head_weight_decay
    extra_params = list(extra.parameters()) if extra is not None else []
    return [
        {"params": decay, "weight_decay": config.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        *([{"params": extra_params, "weight_decay": config.optim.weight_decay}] if extra_params else []),
        {
            "params": [head.weight],
            "weight_decay": config.optim.weight_decay if head_decay is None else head_decay,
        },
    ]


def build_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.momentum, 0.999))
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)


class StopRequested:
    """SIGINT/SIGTERM handler: remember the signal; the loop finishes the current step, saves and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class FitResult:
    """How `fit` ended: completed, or stopped by a signal (exit code 128 + signal number)."""

    completed: bool
    signum: int | None = None
    epochs_done: int = 0
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)
    final_eval: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Model + margin head + optimiser + position, on one rank."""

    def __init__(
        self,
        config: TrainConfig,
        data: FaceData,
        context: DistContext,
        out_dir: Path,
        log: RunLog | None = None,
        cfp: AlignedCfp | None = None,
        bin_sets: list[BinSet] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.context = context
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log = log
        self.cfp = cfp
        self.bin_sets = bin_sets or []
        device = context.device

        seed_everything(config.runtime.seed)
        self.memory_format = torch.channels_last if config.runtime.channels_last else torch.contiguous_format
        self.net: MobileFaceNet = MobileFaceNet(config.model).to(device, memory_format=self.memory_format)
        self.head = ShardedMarginHead(
            self.net.config.embedding_dim,
            data.num_classes,
            context,
            scale=config.head.scale,
            init_seed=config.runtime.seed,
        ).to(device)
        self.backbone: nn.Module = self.net
        if context.distributed and device.type == "cuda" and config.runtime.sync_batchnorm:
            self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)  # same object, BN layers replaced
        if context.distributed:
            self.backbone = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.distill: DistillLoss | None = None
        if data.teacher_embeddings is not None:
            self.distill = DistillLoss(
                config.distill.loss,
                self.net.config.embedding_dim,
                data.teacher_embeddings.shape[1],
                init_seed=config.runtime.seed,
            ).to(device)
        self.optimizer = build_optimizer(parameter_groups(self.net, self.head, config, self.distill), config)
        self.amp_dtype = autocast_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.source = build_batch_source(data, config, context)
        self.steps_per_epoch = self.source.steps
        self.total_steps = self.steps_per_epoch * config.epochs
        # unweighted distillation loss summed over the current log window (reset by _Progress)
        self.distill_loss_sum = torch.zeros((), device=device)
        # position and bookkeeping (all in the checkpoint)
        self.epoch = 0
        self.step = 0
        self.train_seconds = 0.0
        self.best: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}

    # ------------------------------------------------------------------ one step

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def _set_schedules(self) -> float:
        lr = learning_rate(self.global_step, self.total_steps, self.steps_per_epoch, self.config.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        m = margins(self.global_step / self.steps_per_epoch, self.config.head)
        self.head.margin_mul, self.head.margin_arc, self.head.margin_cos = (
            m.margin_mul,
            m.margin_arc,
            m.margin_cos,
        )
        return lr

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Train on global batch (epoch, step) -> (loss, accuracy, lr); does not advance the position.

        loss = ArcFace loss on the labelled rows + distill.weight * distillation loss on all rows."""
        lr = self._set_schedules()
        images, labels, teacher = self.source.batch(self.epoch, self.step)
        images = images.to(self.context.device, memory_format=self.memory_format, non_blocking=True)
        labels = labels.to(self.context.device, non_blocking=True)
        self.backbone.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            self.context.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            embeddings = self.backbone(images)
        loss, accuracy = self.head(embeddings.float(), labels)
        if self.distill is not None and teacher is not None:
            teacher = teacher.to(self.context.device, non_blocking=True)
            distill_loss = self.distill(embeddings.float(), teacher)
            self.distill_loss_sum += distill_loss.detach()  # logged unweighted, per log window
            loss = loss + self.config.distill.weight * distill_loss
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        replicated = list(self.net.parameters())
        if self.distill is not None:
            average_gradients(list(self.distill.parameters()), self.context)
            replicated += list(self.distill.parameters())
        clip_grad_norm_(replicated, [self.head.weight], self.config.optim.grad_clip_norm, self.context)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), accuracy.detach(), lr

    # ------------------------------------------------------------------ checkpoints

    def _head_param_index(self) -> int:
        return sum(len(g["params"]) for g in self.optimizer.param_groups) - 1

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint payload; a collective when distributed (the head shards are gathered)."""
        optimizer_state = self.optimizer.state_dict()
        head_index = self._head_param_index()
        # state_dict() shares the per-parameter dicts with the live optimiser: replace, never mutate them
        head_state = dict(optimizer_state["state"].get(head_index, {}))
        optimizer_state["state"] = {**optimizer_state["state"], head_index: head_state}
        for key, value in list(head_state.items()):
            if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == self.head.weight.shape[0]:
                head_state[key] = self.head.gather_rows_of(value)
        return {
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "backbone": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "head_weight": self.head.full_weight().cpu(),
            "distill": {k: v.detach().cpu() for k, v in self.distill.state_dict().items()}
            if self.distill is not None
            else {},
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "train_seconds": self.train_seconds,
            "best": self.best,
            "last_eval": self.last_eval,
            "class_names": list(self.data.class_names),
            "config": self.config.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint written by `state_dict` (any world size)."""
        if state["class_names"] != list(self.data.class_names):
            raise CheckpointError("checkpoint was trained on other identities than the current data")
        saved_config = state["config"]
        current = self.config.model_dump(mode="json")
        for section in RESUME_FIXED_SECTIONS:
            if _fixed_part(saved_config, section) != _fixed_part(current, section):
                raise CheckpointError(
                    f"config section '{section}' differs from the checkpoint's; cannot resume"
                )
        if (
            saved_config.get("batch_size") != current["batch_size"]
            or state["steps_per_epoch"] != self.steps_per_epoch
        ):
            raise CheckpointError("batch_size differs from the checkpoint's; cannot resume")
        self.net.load_state_dict(state["backbone"])
        if self.distill is not None:
            self.distill.load_state_dict(state["distill"])
        with torch.no_grad():
            self.head.weight.copy_(self.head.shard_of(state["head_weight"]).to(self.head.weight.device))
        optimizer_state = state["optimizer"]
        head_index = self._head_param_index()
        head_state = dict(optimizer_state["state"].get(head_index, {}))
        optimizer_state = {**optimizer_state, "state": {**optimizer_state["state"], head_index: head_state}}
        for key, value in list(head_state.items()):
            if torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == self.head.num_classes:
                head_state[key] = self.head.shard_of(value)
        self.optimizer.load_state_dict(optimizer_state)
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.best = dict(state["best"])
        self.last_eval = dict(state["last_eval"])

    def save(self) -> None:
        """Write checkpoints/last.pt (rank 0); every rank must call it (the head gather is a collective)."""
        state = self.state_dict()
        if self.context.is_main:
            save_checkpoint(self.checkpoint_dir / LAST_NAME, state)
        barrier(self.context)

    def resume(self) -> None:
        self.load_state_dict(load_checkpoint(self.checkpoint_dir / LAST_NAME))

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, final: bool = False) -> dict[str, Any]:
        """Held-out verification (+ CFP and .bin sets when configured) on rank 0; {} on other ranks.

        CFP uses `eval.cfp_folds` folds during training, `eval.final_cfp_folds` when `final`; its accuracy is
        also reported at the thresholds calibrated on the held-out identities.
        """
        if not self.context.is_main:
            return {}
        results: dict[str, Any] = {}
        if len(self.data.holdout_pairs):
            results["holdout"] = holdout_report(
                self.net,
                self.data.holdout_faces,
                self.data.holdout_pairs,
                self.data.holdout_same,
                self.data.holdout_labels,
                self.config.eval.batch_size,
            )
        if self.cfp is not None:
            thresholds = results.get("holdout", {}).get("thresholds", {})
            folds = self.config.eval.final_cfp_folds if final else self.config.eval.cfp_folds
            results.update(self.cfp.evaluate(self.net, folds, thresholds))
        served = results.get("holdout", {}).get("thresholds", {}).get("best_accuracy")
        for binset in self.bin_sets:
            results[binset.name] = evaluate_bin(self.net, binset, self.config.eval.batch_size, served)
        return results

    def _selection_score(self, results: dict[str, Any]) -> float | None:
        select = self.config.eval.select_by
        if select == "last":
            return None
        if select not in results:  # CFP not available: fall back to the held-out identities
            select = "holdout"
        if select not in results:
            return None
        return float(results[select]["accuracy"])

    def _after_epoch(self) -> None:
        """Evaluate when due, keep the best weights, checkpoint."""
        epochs = self.config.epochs
        due = self.epoch % self.config.eval.every_epochs == 0 or self.epoch == epochs
        if due:
            results = self.evaluate()
            if self.context.is_main and results:
                self.last_eval = {"epoch": self.epoch, **results}
                flat = {
                    f"{name}_{key}": value
                    for name, report in results.items()
                    for key, value in report.items()
                    if isinstance(value, (int, float))
                }
                if self.log is not None:
                    self.log.write(
                        "eval", self.global_step, epoch=self.epoch, epoch_progress=self.epoch, **flat
                    )
                score = self._selection_score(results)
                if score is not None and score >= self.best.get("score", -math.inf):
                    self.best = {"score": score, "epoch": self.epoch, "metric": self.config.eval.select_by}
                    save_checkpoint(
                        self.checkpoint_dir / BEST_NAME,
                        {
                            "backbone": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                            **self.best,
                        },
                    )
        self.save()

    # ------------------------------------------------------------------ the loop

    def _stopped(self, signum: int | None) -> FitResult:
        return FitResult(
            completed=False,
            signum=signum,
            epochs_done=self.epoch,
            train_seconds=self.train_seconds,
            best=self.best,
        )

    def _should_stop(self, stop: StopRequested, session_steps: int) -> bool:
        """A signal arrived on any rank (all ranks then agree on `stop.signum`), or this session's step budget
        (runtime.stop_after_steps) is spent."""
        signum = max_over_ranks(stop.signum or 0, self.context)
        stop.signum = signum or None
        budget = self.config.runtime.stop_after_steps
        return signum > 0 or (budget is not None and session_steps >= budget)

    def fit(self) -> FitResult:
        """Train from the current position to the last epoch.

        Stops early, after finishing the current step and writing checkpoints/last.pt, on SIGINT/SIGTERM
        (`signum` set) or when `runtime.stop_after_steps` steps were done in this session (`signum` None).
        """
        config = self.config
        session_steps = 0
        with StopRequested() as stop:
            while self.epoch < config.epochs:
                progress = _Progress(self, show=self.context.is_main and config.runtime.progress)
                stopping = False
                while self.step < self.steps_per_epoch and not stopping:
                    started = time.perf_counter()
                    loss, accuracy, lr = self.train_step()
                    self.step += 1
                    session_steps += 1
                    self.train_seconds += time.perf_counter() - started
                    progress.update(loss, accuracy, lr)
                    stopping = self._should_stop(stop, session_steps)
                progress.close()
                if self.step < self.steps_per_epoch:  # stopped mid-epoch
                    self.save()
                    return self._stopped(stop.signum)
                self.epoch, self.step = self.epoch + 1, 0
                self._after_epoch()
                if stopping and self.epoch < config.epochs:
                    return self._stopped(stop.signum)
        return FitResult(
            completed=True,
            epochs_done=self.epoch,
            train_seconds=self.train_seconds,
            images_per_second=self.total_steps * config.batch_size / max(self.train_seconds, 1e-9),
            best=self.best,
            final_eval=self.last_eval,
        )


class _Progress:
    """The epoch's tqdm bar (loss, accuracy, images/s, run ETA) and the periodic `train` records."""

    def __init__(self, trainer: Trainer, show: bool) -> None:
        from tqdm import tqdm

        self.trainer = trainer
        config = trainer.config
        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            initial=trainer.step,
            desc=f"epoch {trainer.epoch + 1}/{config.epochs}",
            disable=not show,
            dynamic_ncols=True,
        )
        self.every = config.runtime.log_every_steps
        self._reset()

    def _reset(self) -> None:
        device = self.trainer.context.device
        self.loss = torch.zeros((), device=device)
        self.trainer.distill_loss_sum = torch.zeros((), device=device)
        self.accuracy = torch.zeros((), device=device)
        self.steps = 0
        self.start = time.perf_counter()

    def update(self, loss: torch.Tensor, accuracy: torch.Tensor, lr: float) -> None:
        """Accumulate one step; every `log_every_steps` (and at the epoch end) report the window's means."""
        trainer = self.trainer
        self.loss += loss
        self.accuracy += accuracy
        self.steps += 1
        self.bar.update(1)
        if self.steps < self.every and trainer.step < trainer.steps_per_epoch:
            return
        images_per_second = (
            self.steps * trainer.config.batch_size / max(time.perf_counter() - self.start, 1e-9)
        )
        record = {
            "epoch": trainer.epoch,
            "epoch_progress": trainer.epoch + trainer.step / trainer.steps_per_epoch,
            "loss": float(self.loss.item()) / self.steps,  # .item() syncs the GPU: only once per window
            **(
                {"distill_loss": float(trainer.distill_loss_sum.item()) / self.steps}
                if trainer.distill is not None
                else {}
            ),
            "accuracy": float(self.accuracy.item()) / self.steps,
            "lr": lr,
            "margin_arc": trainer.head.margin_arc,
            "margin_cos": trainer.head.margin_cos,
            "images_per_second": images_per_second,
        }
        eta = (trainer.total_steps - trainer.global_step) * trainer.config.batch_size / images_per_second
        self.bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            acc=f"{100 * record['accuracy']:.1f}%",
            img_s=f"{images_per_second:.1f}",
            eta=_format_seconds(eta),
            refresh=False,
        )
        if trainer.log is not None:
            trainer.log.write("train", trainer.global_step, **record)
        self._reset()

    def close(self) -> None:
        self.bar.close()


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"

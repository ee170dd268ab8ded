"""`TrainConfig`: every knob of `drface train`, validated by pydantic and loaded from YAML.

The shipped model's recipe is `configs/default.yaml`; `drface train` without `--config` uses it. Overrides
(`--set section.field=value` and the dedicated flags) are applied to the YAML mapping *before* validation, so
one error path reports every bad field by its dotted name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.mobilefacenet import BackboneConfig
from model.validation import error_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_PACKAGE = "training.recipes"  # the repository's configs/ folder, installed (pyproject.toml)
DEFAULT_CONFIG_NAME = "default.yaml"


def default_config_path() -> Path:
    """The shipped recipe: `configs/default.yaml` in a source checkout, else the installed package data.

    A source checkout is recognised by its pyproject.toml beside the packages, so that an installed copy never
    shadows the file being edited, and a stray `configs/` in site-packages is never read.
    """
    checkout = REPO_ROOT / "configs" / DEFAULT_CONFIG_NAME
    if (REPO_ROOT / "pyproject.toml").is_file() and checkout.is_file():
        return checkout
    try:
        packaged = resources.files(RECIPES_PACKAGE) / DEFAULT_CONFIG_NAME
    except ModuleNotFoundError:
        return checkout  # neither: read_yaml reports this path as missing
    return Path(str(packaged))


DEFAULT_CONFIG_PATH = default_config_path()


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the offending field(s)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the photos come from and how they are split and augmented."""

    roots: list[Path] = Field(
        default_factory=list,
        description="Folder-per-identity datasets (`<root>/<identity>/<photo>`) or insightface RecordIO "
        "files (`train.rec` beside its `train.idx`), merged; identities are namespaced by root name. Folders "
        "hold aligned 112x112 faces (output of `drface prepare`) or raw photos, prepared on the fly into "
        "`cache_dir` (see `prepared`); a .rec holds aligned faces. `--data PATH [PATH ...]` sets it.",
    )
    prepared: Literal["auto", "aligned", "raw"] = Field(
        "auto",
        description="'aligned': images of `roots` are already 112x112 aligned faces; 'raw': run the prepare "
        "step (detect + 5-point align) into `cache_dir` first; 'auto': aligned if every sampled image is "
        "112x112. Unlabelled folders are always 'auto'.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where raw roots are prepared to, and where the decoded uint8 tensor cache lives. "
        "Default: `<out>/../.cache` (shared between runs of the same output parent).",
    )
    min_images_per_identity: int = Field(
        2,
        ge=1,
        description="Identities with fewer images are dropped (a class with one photo teaches little).",
    )
    holdout_identities: int = Field(
        16,
        ge=0,
        description="Number of identities held out of training (never seen as classes) for monitoring and "
        "for calibrating the served threshold on non-CFP data. 0 disables.",
    )
    holdout_max_fraction: float = Field(
        0.25,
        gt=0,
        le=0.5,
        description="At most this fraction of the identities (with >= 2 images) is held out, so small data "
        "keeps most identities for training; fewer than 2 held-out identities (no impostor pairs) hold out "
        "none. 300 identities keep the 40 of the shipped recipe; 18 hold out 4.",
    )
    holdout_pairs: int = Field(
        2000,
        ge=10,
        description="Maximum verification pairs built from the held-out identities (half genuine).",
    )
    split_seed: int = Field(0, description="Seed of the identity split (independent of the training seed).")
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="'memory': decode every training face once into RAM (fastest, 37,632 bytes a face); "
        "'stream': DataLoader workers decode and augment each batch from the files or the .rec; 'auto': "
        "memory when the training faces fit in `memory_budget_gb`, else stream. Both give the same batches.",
    )
    memory_budget_gb: float = Field(
        8.0, gt=0, description="'auto' loader: largest decoded training set kept in RAM, GiB (~228k faces)."
    )
    workers: int = Field(
        2,
        ge=0,
        le=64,
        description="Streaming: DataLoader worker processes per rank (0 = in the main process).",
    )
    unlabelled: list[Path] = Field(
        default_factory=list,
        description="Flat folders of faces without identity labels (raw photos or aligned 112x112 crops). "
        "They train through the distillation loss only, so they need `distill.teacher`. "
        "`--unlabelled DIR [DIR ...]` sets it.",
    )


class AugmentConfig(_Section):
    """Light, on-tensor augmentation; heavy augmentation is known to hurt face recognition."""

    flip: bool = Field(True, description="Random horizontal flip with probability 0.5.")
    brightness: float = Field(0.2, ge=0, le=1, description="Brightness factor drawn from [1-b, 1+b].")
    contrast: float = Field(0.2, ge=0, le=1, description="Contrast factor drawn from [1-c, 1+c].")
    saturation: float = Field(0.2, ge=0, le=1, description="Saturation factor drawn from [1-s, 1+s].")
    scale: float = Field(
        0.05, ge=0, le=0.3, description="Zoom factor drawn from [1-scale, 1+scale] around the face centre."
    )
    translate: float = Field(
        0.03, ge=0, le=0.2, description="Shift drawn from [-t, t] times the image size, per axis."
    )


class HeadConfig(_Section):
    """Combined margin head: logit s * (cos(m1*theta + m2) - m3) for the true class, s * cos(theta) else."""

    scale: float = Field(
        32.0, gt=0, description="Logit scale s. ~30-32 converges on small data; 64 is for MS1M."
    )
    margin_mul: float = Field(
        1.0, ge=1, description="m1, multiplicative angular margin (SphereFace); 1 = off."
    )
    margin_arc: float = Field(
        0.5, ge=0, lt=1.6, description="m2, additive angular margin (ArcFace), radians."
    )
    margin_cos: float = Field(0.0, ge=0, lt=1, description="m3, additive cosine margin (CosFace).")
    softmax_warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="Epochs trained with all margins off (plain normalised softmax) before the ramp.",
    )
    margin_warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="Epochs over which the margins ramp linearly from 0 (m1 from 1) to their values, "
        "after the softmax warm-up.",
    )


class OptimConfig(_Section):
    """Optimiser and learning-rate schedule."""

    name: Literal["sgd", "adamw"] = Field("sgd", description="SGD with momentum (default) or AdamW.")
    lr: float = Field(0.1, gt=0, description="Peak learning rate for a global batch of `batch_size`.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW: beta1).")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD only).")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay of the backbone convolutions.")
    head_weight_decay: float | None = Field(
        None, ge=0, description="Weight decay of the class centres; None = same as `weight_decay`."
    )
    no_decay_norm_bias: bool = Field(
        True, description="Exclude BatchNorm/PReLU parameters and biases from weight decay."
    )
    warmup_epochs: float = Field(1.0, ge=0, description="Linear learning-rate warm-up from ~0, in epochs.")
    schedule: Literal["cosine", "poly", "constant"] = Field(
        "cosine", description="Decay after warm-up, down to `min_lr` at the last step."
    )
    poly_power: float = Field(2.0, gt=0, description="Exponent of the polynomial decay.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the schedule.")
    grad_clip_norm: float | None = Field(
        5.0, gt=0, description="Clip the global gradient L2 norm to this value; None disables."
    )


class EvalConfig(_Section):
    """Monitoring during training and the thresholds written into the model card."""

    every_epochs: int = Field(
        1, ge=1, description="Evaluate every this many epochs (and always after the last)."
    )
    cfp_root: Path | Literal["auto"] | None = Field(
        "auto",
        description="CFP root for monitoring with the `drface eval` machinery. 'auto': a `cfp` folder next "
        "to a data root, else `drface eval`'s default ($DRFACE_DATA_ROOT/cfp, ../shared/data/cfp), when "
        "present; None: skip CFP.",
    )
    cfp_tasks: list[Literal["cfp_ff", "cfp_fp"]] = Field(
        default_factory=lambda: ["cfp_ff", "cfp_fp"],
        description="CFP splits evaluated: frontal-frontal and frontal-profile.",
    )
    cfp_folds: int = Field(
        10, ge=2, le=10, description="How many of CFP's 10 folds to use during training (fewer = cheaper)."
    )
    final_cfp_folds: int = Field(
        10, ge=2, le=10, description="Folds used for the final CFP numbers in the model card."
    )
    select_by: Literal["holdout", "cfp_ff", "cfp_fp", "last"] = Field(
        "holdout",
        description="Which verification accuracy picks the best checkpoint that becomes the artifact. "
        "'holdout' keeps CFP an untouched test set; 'last' ships the final epoch.",
    )
    batch_size: int = Field(64, ge=1, description="Batch size for embedding evaluation images.")
    bin_sets: list[Path] = Field(
        default_factory=list,
        description="Verification .bin sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...) evaluated at every "
        "evaluation with the standard 10 folds; reported under their file stem, never used to select.",
    )


class DistillInputConfig(_Section):
    """How the teacher wants its input: aligned faces are resized, reordered and normalised to this."""

    size: int = Field(112, ge=16, le=1024, description="Side of the square input, pixels.")
    channel_order: Literal["rgb", "bgr"] = Field("rgb", description="Channel order the teacher expects.")
    layout: Literal["nchw", "nhwc"] = Field("nchw", description="Tensor layout of the teacher's input.")
    mean: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0],
        min_length=3,
        max_length=3,
        description="Per-channel value subtracted from 0-255 pixels (in `channel_order`).",
    )
    std: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        min_length=3,
        max_length=3,
        description="Per-channel divisor applied after the mean (in `channel_order`); must be > 0.",
    )

    @model_validator(mode="after")
    def _positive_std(self) -> DistillInputConfig:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class DistillConfig(_Section):
    """Knowledge distillation from a pretrained ONNX face-embedding model (training time only).

    The student keeps training its ArcFace head on labelled faces; the distillation loss is added on every
    face, labelled or not. The teacher's embeddings are computed once per face and cached under
    `data.cache_dir`.
    """

    teacher: Path | None = Field(None, description="ONNX teacher file; None = no distillation. `--teacher`.")
    input: DistillInputConfig = Field(default_factory=DistillInputConfig)
    loss: Literal["projected_cosine", "similarity"] = Field(
        "projected_cosine",
        description="'projected_cosine': 1 - cos(P e_student, e_teacher) through a linear projection P "
        "(student dim -> teacher dim) that is trained and then dropped; 'similarity': mean squared error "
        "between the batch's student and teacher cosine-similarity matrices (no extra weights).",
    )
    weight: float = Field(1.0, gt=0, description="Weight of the distillation loss next to the ArcFace loss.")
    batch_size: int = Field(32, ge=1, le=4096, description="Faces per teacher call while filling the cache.")
    threads: int | None = Field(None, ge=1, description="onnxruntime threads for the teacher; None = all.")


class ProvenanceConfig(_Section):
    """Licence terms written into the model card: the user knows them, drface cannot guess them."""

    teacher_licence: str = Field("not declared", description="Licence of the distillation teacher file.")
    data_licences: dict[str, str] = Field(
        default_factory=dict,
        description="Terms of each training data set, by folder name (data.roots and data.unlabelled).",
    )
    weights_terms: str = Field(
        "not declared", description="Terms that follow for the trained weights from the data and teacher."
    )


class RuntimeConfig(_Section):
    """Device, precision, threads, seeds, logging."""

    seed: int = Field(0, description="Seed of weights, data order and augmentation (python, numpy, torch).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' = CUDA when available.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast dtype on CUDA ('auto' = bf16 if supported, else fp16 with GradScaler). "
        "CPU always trains in fp32.",
    )
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = torch's default.")
    channels_last: bool = Field(
        True,
        description="Train in channels-last memory layout: faster on CPU, DRConv-MobileFaceNet most "
        "(docs/training.md, benchmarks/bench_train.py); the saved weights are the same either way.",
    )
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms (slower on CUDA).")
    sync_batchnorm: bool = Field(
        True,
        description="DDP on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm). On CPU each "
        "rank normalises over its own slice (torch has no CPU SyncBatchNorm).",
    )
    log_every_steps: int = Field(10, ge=1, description="Steps between JSONL/TensorBoard training records.")
    progress: bool = Field(True, description="Show the tqdm progress bar (rank 0 only).")
    stop_after_steps: int | None = Field(
        None,
        ge=1,
        description="End this session after this many optimiser steps (checkpointed; `--resume` continues). "
        "For time-sliced machines; the schedule still spans all `epochs`.",
    )


class TrainConfig(_Section):
    """Everything `drface train` needs; `configs/default.yaml` is the shipped model's recipe."""

    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # The backbone's own config (every architecture option), stored in the model card as it is.
    model: BackboneConfig = Field(default_factory=BackboneConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    provenance: ProvenanceConfig = Field(default_factory=ProvenanceConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    epochs: int = Field(30, ge=1, description="Number of passes over the training identities' images.")
    batch_size: int = Field(
        128, ge=2, description="Global batch size (split evenly across DDP ranks; must divide by world size)."
    )
    min_steps_per_epoch: int = Field(
        8,
        ge=1,
        description="Small data: `batch_size` is halved (and `optim.lr` scaled with it) until an epoch "
        "has at least this many steps, down to 2 faces per rank. 6,000 faces keep the batch of 128.",
    )
    out: Path = Field(Path("runs/default"), description="Run folder: artifact, metrics, curves, checkpoints.")
    name: str = Field("drface", description="Artifact file prefix inside the run folder.")

    @model_validator(mode="before")
    @classmethod
    def _flatten_model_options(cls, data: Any) -> Any:
        """Older recipes kept the backbone fields other than drconv and region_num in `model.options`."""
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and isinstance(model.get("options"), dict):
            model = {key: value for key, value in model.items() if key != "options"} | model["options"]
            data = {**data, "model": model}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not self.data.roots:
            raise ValueError("data.roots: no dataset given (set data.roots or pass --data DIR)")
        if self.data.unlabelled and self.distill.teacher is None:
            raise ValueError(
                "data.unlabelled: unlabelled faces train only through a teacher; set distill.teacher "
                "(--teacher PATH.onnx)"
            )
        return self


def _format_errors(error: ValidationError, source: str) -> str:
    lines = error_lines(
        error.errors(), empty_location="(root)", messages={"extra_forbidden": "unknown field"}
    )
    return "\n  ".join([f"invalid training config ({source}):", *lines])


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: 0.1, true, null, [FF, FP], text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse override value {text!r}: {exc}") from exc


def apply_override(mapping: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `mapping[a][b][c] = value` for `dotted_key` 'a.b.c', creating sections as needed."""
    parts = dotted_key.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted_key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_set_items(items: list[str]) -> dict[str, Any]:
    """['optim.lr=0.05', ...] -> {'optim.lr': 0.05, ...}; a missing '=' is a ConfigError."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=0.05")
        overrides[key.strip()] = _parse_value(text)
    return overrides


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path` (empty file = {}); ConfigError when missing or not a mapping."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path}: top level must be a mapping of sections")
    return loaded


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Validate YAML `path` (default: the shipped recipe) with dotted `overrides` applied first.

    Relative paths inside the YAML stay relative to the current working directory (like the CLI flags).
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    mapping = read_yaml(source)
    for key, value in (overrides or {}).items():
        apply_override(mapping, key, value)
    try:
        return TrainConfig.model_validate(mapping)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(source))) from None


def config_to_yaml(config: TrainConfig) -> str:
    """The fully resolved config as YAML (written into the run folder for reproducibility)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

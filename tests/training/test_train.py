"""`drface train` end to end on a few real identities (faces94, aligned by the real `drface prepare`).

One straight 3-epoch run is shared: it must lower the loss and produce an artifact the service can load and
embed with; a run interrupted mid-epoch 2 and resumed must reproduce its weights bit for bit, and so must the
same faces packed by `drface pack` into a .rec and streamed by DataLoader workers; a 2-rank gloo DDP run
(torchrun) streaming the .rec must agree with it; SIGTERM must leave a loadable checkpoint. A .bin set made
by the project's writer from the same faces is evaluated by `drface eval --protocol bin` and during training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from app.cli import main as cli_main
from model.artifact import file_sha256, load_artifact
from model.embed import embed_faces
from training.binsets import write_bin
from training.checkpoint import load_checkpoint
from training.monitor import read_records

pytestmark = [pytest.mark.data, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = ["anpage", "asamma", "asewil", "astefa", "drbost", "ekavaz"]
IMAGES_PER_IDENTITY = 12
NAME = "tiny"


@pytest.fixture(scope="module")
def aligned_root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 faces94 identities x 12 photos, detected and aligned by `training.prepare` (the real pipeline)."""
    from training.prepare import PrepareConfig, prepare_dataset

    base = tmp_path_factory.mktemp("faces")
    raw = base / "raw"
    for identity in IDENTITIES:
        (raw / identity).mkdir(parents=True)
        for photo in sorted((data_root / "faces94" / identity).glob("*.jpg"))[:IMAGES_PER_IDENTITY]:
            (raw / identity / photo.name).symlink_to(photo)
    aligned = base / "aligned"
    prepare_dataset(PrepareConfig(src=raw, dst=aligned, workers=1))
    return aligned


@pytest.fixture(scope="module")
def config_path(aligned_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny recipe: 4 training identities (48 photos), 2 held out, batch 16, 3 epochs, one thread, no CFP."""
    recipe = {
        "data": {
            "roots": [str(aligned_root)],
            "prepared": "aligned",
            "min_images_per_identity": 2,
            "holdout_identities": 2,
            "holdout_max_fraction": 0.5,
            "holdout_pairs": 100,
            "cache_dir": str(tmp_path_factory.mktemp("cache")),
        },
        "model": {
            "drconv": True,
            "region_num": 4,
            "options": {"width_multiplier": 0.5, "embedding_dim": 128},
        },
        "head": {"scale": 16.0, "margin_arc": 0.2, "softmax_warmup_epochs": 0, "margin_warmup_epochs": 1},
        "optim": {"lr": 0.05, "warmup_epochs": 0},
        "eval": {"cfp_root": None, "every_epochs": 1},
        "runtime": {"num_threads": 1, "progress": False, "log_every_steps": 1},
        "epochs": 3,
        "batch_size": 16,
        "min_steps_per_epoch": 1,
        "name": NAME,
    }
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _train(config_path: Path, out: Path, *extra: str) -> int:
    return cli_main(["train", "--config", str(config_path), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def straight_run(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    assert _train(config_path, out) == 0
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"{NAME}.safetensors"))


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_records(run / "metrics.jsonl") if r["kind"] == "train"]


def test_training_lowers_the_loss_and_writes_a_loadable_artifact(straight_run: Path):
    losses = _losses(straight_run)
    assert len(losses) == 9  # 48 training images / batch 16 = 3 steps per epoch, 3 epochs
    assert sum(losses[-2:]) < sum(losses[:2])
    for produced in (
        "curves.png",
        "config.yaml",
        "tensorboard",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (straight_run / produced).exists(), produced

    loaded = load_artifact(straight_run / f"{NAME}.safetensors")
    card = loaded.card
    assert card.trained and card.region_num == 4
    assert set(card.thresholds) == {"best_accuracy", "far_1e-2", "far_1e-3", "far_1e-4"}
    assert set(card.operating_points) == set(card.thresholds)
    assert card.operating_points["far_1e-3"]["threshold"] == card.thresholds["far_1e-3"]
    assert card.data["train_identities"] == 4 and card.data["holdout_identities"] == 2
    assert "holdout" in card.eval and card.training["train_seconds"] > 0
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    embeddings = embed_faces(loaded.model, faces)
    assert embeddings.shape == (2, card.embedding_dim)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))


def test_interrupted_and_resumed_run_matches_the_straight_run(
    straight_run: Path, config_path: Path, tmp_path
):
    out = tmp_path / "resumed"
    # 4 steps: the resume starts mid-epoch 2, with an evaluation and a checkpoint behind it
    assert _train(config_path, out, "--set", "runtime.stop_after_steps=4") == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 1)
    assert not (out / f"{NAME}.safetensors").exists()
    assert _train(config_path, out) == 2  # refuses to overwrite a run without --resume
    assert _train(config_path, out, "--resume") == 0
    straight, resumed = _weights(straight_run), _weights(out)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


@pytest.fixture(scope="module")
def packed_rec(aligned_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 6 identities packed by `drface pack` into an insightface .rec (+ .idx, property)."""
    rec = tmp_path_factory.mktemp("rec") / "train.rec"
    assert cli_main(["pack", str(aligned_root), str(rec)]) == 0
    return rec


@pytest.fixture(scope="module")
def bin_path(aligned_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-pair .bin written by `training.binsets.write_bin`: genuine and impostor pairs alternate."""
    people = [
        sorted(f for f in folder.iterdir() if f.suffix in (".png", ".jpg"))
        for folder in sorted(p for p in aligned_root.iterdir() if p.is_dir())
    ]
    images, same = [], []
    for k in range(40):
        a = people[k % len(people)]
        b = a if k % 2 == 0 else people[(k + 1) % len(people)]
        images += [a[k % len(a)].read_bytes(), b[(k + 3) % len(b)].read_bytes()]
        same.append(k % 2 == 0)
    path = tmp_path_factory.mktemp("bin") / "tinybin.bin"
    write_bin(path, images, same)
    return path


def test_a_packed_rec_streamed_by_workers_and_resumed_matches_the_folder_run(
    straight_run: Path, config_path: Path, packed_rec: Path, bin_path: Path, tmp_path
):
    out = tmp_path / "rec"
    flags = ["--data", str(packed_rec), "--set", "data.loader=stream", "--set", "data.workers=2"]
    flags += ["--set", f"eval.bin_sets=[{bin_path}]"]
    assert _train(config_path, out, *flags, "--set", "runtime.stop_after_steps=4") == 0
    assert _train(config_path, out, *flags, "--resume") == 0
    straight, streamed = _weights(straight_run), _weights(out)
    for name in straight:
        assert torch.equal(straight[name], streamed[name]), name
    card = load_artifact(out / f"{NAME}.safetensors").card
    assert card.data["loader"] == "stream" and card.data["train_identities"] == 4
    assert card.eval["tinybin"]["pairs"] == 40 and 0 <= card.eval["tinybin"]["accuracy"] <= 1


def test_eval_scores_bin_sets_with_ten_folds(straight_run: Path, bin_path: Path, capsys):
    weights = straight_run / f"{NAME}.safetensors"
    command = ["eval", "--weights", str(weights), "--protocol", "bin", "--data", str(bin_path), str(bin_path)]
    assert cli_main([*command, "--json", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ["tinybin"] and results["tinybin"]["pairs"] == 40
    assert {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-3"} <= set(results["tinybin"])


def test_two_process_ddp_run_on_a_rec_agrees_with_single_process(
    straight_run: Path, config_path: Path, packed_rec: Path, tmp_path
):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "app.cli", "train", "--config", str(config_path), "--out", str(out),
        "--data", str(packed_rec), "--set", "data.loader=stream", "--set", "data.workers=1",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single, ddp = _losses(straight_run), _losses(out)
    assert len(ddp) == len(single)  # the same global batches
    # Same weights and global batch at step 1: only BatchNorm differs (statistics over each rank's 8 images,
    # not 16; SyncBatchNorm needs CUDA), and that difference grows over the run, so later steps only have to
    # show the same learning.
    assert ddp[0] == pytest.approx(single[0], rel=0.25)
    assert sum(ddp[-2:]) < sum(ddp[:2])
    assert load_artifact(out / f"{NAME}.safetensors").card.training["hardware"]["world_size"] == 2


def test_sigterm_mid_epoch_leaves_a_loadable_checkpoint(config_path: Path, tmp_path):
    out = tmp_path / "sigterm"
    command = [sys.executable, "-m", "app.cli", "train", "--config", str(config_path), "--out", str(out),
               "--epochs", "50"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by signal" in stderr and "--resume" in stderr
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] * state["steps_per_epoch"] + state["step"] >= 1
    assert state["epoch"] < 50


@pytest.fixture(scope="module")
def teacher_path(data_root: Path) -> Path:
    files = sorted((data_root.parent / "teachers" / "sface").glob("*.onnx"))
    if not files:
        pytest.skip("no SFace teacher in ../shared/teachers/sface")
    return files[0]


@pytest.fixture(scope="module")
def unlabelled_raw(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 6 raw photos of people outside IDENTITIES: aligned on the fly, no labels."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for identity in ("kaknig", "klclar", "lfso"):
        for photo in sorted((data_root / "faces94" / identity).glob("*.jpg"))[:2]:
            (folder / photo.name).symlink_to(photo)
    return folder


def test_distillation_run_with_unlabelled_faces_resumes_exactly_and_reuses_the_teacher_cache(
    config_path: Path, teacher_path: Path, unlabelled_raw: Path, tmp_path
):
    flags = ["--teacher", str(teacher_path), "--unlabelled", str(unlabelled_raw), "--epochs", "2"]
    cache = tmp_path / "cache"
    flags += ["--set", f"data.cache_dir={cache}"]
    assert _train(config_path, tmp_path / "straight", *flags) == 0
    shards = sorted((cache / "teacher").rglob("part-*.npz"))
    assert shards  # 48 labelled + 6 unlabelled faces, run once through the teacher

    card = load_artifact(tmp_path / "straight" / f"{NAME}.safetensors").card
    assert card.data["unlabelled_images"] == 6 and card.data["train_images"] == 48
    assert card.data["teacher"]["sha256"] == file_sha256(teacher_path)
    assert card.embedding_dim == 128  # the projection to the teacher's 128-d is dropped from the artifact
    assert card.training["recipe"]["distill"]["teacher"] == str(teacher_path)
    records = [r for r in read_records(tmp_path / "straight" / "metrics.jsonl") if r["kind"] == "train"]
    assert all(0.0 <= r["distill_loss"] <= 2.0 for r in records)  # 1 - cosine, logged unweighted

    out = tmp_path / "resumed"
    assert _train(config_path, out, *flags, "--set", "runtime.stop_after_steps=2") == 0
    assert _train(config_path, out, *flags, "--resume") == 0
    assert sorted((cache / "teacher").rglob("part-*.npz")) == shards  # nothing recomputed
    straight, resumed = _weights(tmp_path / "straight"), _weights(out)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_unlabelled_faces_without_a_teacher_are_refused(
    config_path: Path, unlabelled_raw: Path, tmp_path, capsys
):
    assert _train(config_path, tmp_path / "x", "--unlabelled", str(unlabelled_raw)) == 2
    assert "distill.teacher" in capsys.readouterr().err

"""Model artifacts: save -> load round trip, atomic files, clear errors, the shipped default."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from model import BackboneConfig, build_backbone, embed_faces
from model.artifact import (
    DEFAULT_WEIGHTS,
    ArtifactCorruptError,
    ArtifactMismatchError,
    ArtifactNotFoundError,
    ModelCard,
    artifact_paths,
    load_artifact,
    load_card,
    save_artifact,
)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _card(config: BackboneConfig, **fields) -> ModelCard:
    return ModelCard.for_backbone(config, name="test", version="0", trained=False, **fields)


def _trained_like(config: BackboneConfig) -> torch.nn.Module:
    """A network whose BN statistics are not the defaults, so a round trip that dropped buffers would show."""
    torch.manual_seed(0)
    model = build_backbone(**config.model_dump())
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 112, 112))
    return model.eval()


@pytest.mark.parametrize("drconv", [True, False])
def test_save_then_load_gives_identical_embeddings(tmp_path, faces, drconv):
    config = BackboneConfig(drconv=drconv, region_num=4)
    model = _trained_like(config)
    card = _card(config, thresholds={"best_accuracy": 0.31, "far_1e-3": 0.42}, notes="round trip")
    written = save_artifact(tmp_path / "net", model, card)
    loaded = load_artifact(tmp_path / "net.safetensors")
    assert not loaded.model.training
    assert loaded.card == written
    assert loaded.card.thresholds["far_1e-3"] == 0.42
    assert torch.equal(embed_faces(loaded.model, faces), embed_faces(model, faces))


def test_artifact_files_are_safetensors_and_json_without_temp_leftovers(tmp_path):
    config = BackboneConfig(region_num=4)
    save_artifact(tmp_path / "net", build_backbone(**config.model_dump()), _card(config))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.safetensors"]
    card = json.loads((tmp_path / "net.json").read_text())
    assert card["backbone"]["region_num"] == 4 and len(card["weights_sha256"]) == 64


def test_load_accepts_prefix_weights_or_card_path(tmp_path):
    assert artifact_paths(tmp_path / "a") == artifact_paths(tmp_path / "a.json")
    assert artifact_paths(tmp_path / "a.safetensors") == (tmp_path / "a.safetensors", tmp_path / "a.json")
    assert artifact_paths(tmp_path / "drface-v1.2") == (
        tmp_path / "drface-v1.2.safetensors",
        tmp_path / "drface-v1.2.json",
    )


def test_missing_files_raise_not_found(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="weights"):
        load_artifact(tmp_path / "absent.safetensors")
    config = BackboneConfig(drconv=False)
    save_artifact(tmp_path / "net", build_backbone(**config.model_dump()), _card(config))
    (tmp_path / "net.json").unlink()
    with pytest.raises(ArtifactNotFoundError, match="card"):
        load_artifact(tmp_path / "net.safetensors")


def test_truncated_weights_raise_corrupt(tmp_path):
    config = BackboneConfig(drconv=False)
    save_artifact(tmp_path / "net", build_backbone(**config.model_dump()), _card(config))
    weights = tmp_path / "net.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactCorruptError, match="checksum"):
        load_artifact(weights)
    # without a recorded checksum the safetensors reader itself must fail cleanly
    card = json.loads((tmp_path / "net.json").read_text())
    card["weights_sha256"] = None
    (tmp_path / "net.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactCorruptError, match="cannot read weights"):
        load_artifact(weights)


def test_invalid_card_raises_corrupt(tmp_path):
    config = BackboneConfig(drconv=False)
    save_artifact(tmp_path / "net", build_backbone(**config.model_dump()), _card(config))
    (tmp_path / "net.json").write_text("{not json")
    with pytest.raises(ArtifactCorruptError, match="card"):
        load_artifact(tmp_path / "net")


def test_weights_of_another_architecture_raise_mismatch(tmp_path):
    small, large = BackboneConfig(drconv=False, embedding_dim=128), BackboneConfig(drconv=False)
    save_artifact(tmp_path / "net", build_backbone(**small.model_dump()), _card(small))
    card = json.loads((tmp_path / "net.json").read_text())
    card.update(backbone=large.model_dump(mode="json"), embedding_dim=512, weights_sha256=None)
    (tmp_path / "net.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactMismatchError, match="do not fit"):
        load_artifact(tmp_path / "net")


def test_saving_with_a_card_for_another_network_is_refused(tmp_path):
    with pytest.raises(ArtifactMismatchError):
        save_artifact(tmp_path / "net", build_backbone(drconv=False), _card(BackboneConfig()))
    assert not any(tmp_path.iterdir())


def test_card_must_agree_with_its_backbone():
    with pytest.raises(ValidationError, match="embedding_dim"):
        ModelCard(
            name="x", version="0", trained=False, backbone=BackboneConfig(), embedding_dim=128, region_num=8
        )
    with pytest.raises(ValidationError, match="region_num"):
        ModelCard(
            name="x",
            version="0",
            trained=False,
            backbone=BackboneConfig(drconv=False),
            embedding_dim=512,
            region_num=8,
        )


def test_shipped_default_artifact_loads_and_says_what_it_is(faces):
    card = load_card(DEFAULT_WEIGHTS)
    # the shipped model is trained: it carries thresholds calibrated off CFP and its 10-fold CFP evaluation
    assert card.trained and {"best_accuracy", "far_1e-3"} <= set(card.thresholds)
    assert card.eval["cfp_ff"]["folds"] == card.eval["cfp_fp"]["folds"] == 10
    assert card.training["hardware"]["device"] and card.training["train_seconds"] > 0
    loaded = load_artifact(DEFAULT_WEIGHTS)
    assert loaded.card.backbone.drconv
    embeddings = embed_faces(loaded.model, faces)
    assert embeddings.shape == (2, loaded.card.embedding_dim)

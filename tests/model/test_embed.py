"""embed_faces: normalised flip-sum embeddings, eval mode, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import build_backbone, embed_faces


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_backbone(region_num=4).train()
    with torch.no_grad():
        net(torch.randn(4, 3, 112, 112))  # non-default BN statistics
    return net.eval()


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_embeddings_are_unit_length_float32(model, faces):
    embeddings = embed_faces(model, faces)
    assert embeddings.shape == (3, 512) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))


def test_flip_embedding_is_the_normalised_sum_of_image_and_mirror(model, faces):
    with torch.no_grad():
        expected = F.normalize(model(faces) + model(torch.flip(faces, dims=[3])), dim=1)
    torch.testing.assert_close(embed_faces(model, faces), expected, rtol=1e-5, atol=1e-5)


def test_flip_makes_a_face_and_its_mirror_embed_identically(model, faces):
    torch.testing.assert_close(embed_faces(model, faces), embed_faces(model, torch.flip(faces, dims=[3])))


def test_without_flip_the_embedding_is_the_normalised_network_output(model, faces):
    with torch.no_grad():
        expected = F.normalize(model(faces), dim=1)
    torch.testing.assert_close(embed_faces(model, faces, flip=False), expected, rtol=1e-5, atol=1e-5)


def test_a_network_in_training_mode_is_run_in_eval_mode_and_restored(model, faces):
    expected = embed_faces(model, faces)
    running_mean = model.stem[1].running_mean.clone()
    model.train()
    try:
        torch.testing.assert_close(embed_faces(model, faces), expected)
        assert model.training
        assert torch.equal(model.stem[1].running_mean, running_mean)  # BN statistics untouched
    finally:
        model.eval()


def test_bad_input_is_rejected(model):
    with pytest.raises(ValueError, match="112"):
        embed_faces(model, torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError):
        embed_faces(model, torch.zeros(1, 3, 112, 112, dtype=torch.uint8))

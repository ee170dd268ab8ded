"""Training data: identity split, held-out pairs, batch order, rank slicing and light augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.pipeline import faces_to_tensor
from training.config import AugmentConfig
from training.data import (
    AUGMENT_DRAWS,
    BatchSource,
    Identity,
    augment,
    build_pairs,
    epoch_permutation,
    split_identities,
)

OFF = AugmentConfig(flip=False, brightness=0, contrast=0, saturation=0, scale=0, translate=0)


def _identities(sizes: list[int]) -> list[Identity]:
    return [Identity(f"root/{i}", tuple(Path(f"{i}_{k}.png") for k in range(n))) for i, n in enumerate(sizes)]


def test_split_holds_out_whole_identities_with_two_images_or_more():
    identities = _identities([1, 5, 3, 2, 8, 4, 1, 6])
    train, held = split_identities(identities, holdout=3, seed=0)
    assert len(held) == 3 and len(train) == 5
    assert {i.name for i in train}.isdisjoint({i.name for i in held})
    assert all(len(i.files) >= 2 for i in held)
    assert split_identities(identities, 3, seed=0) == (train, held)  # deterministic


def test_pairs_are_balanced_and_labelled_by_identity():
    labels = np.repeat(np.arange(5), 4)
    pairs, same = build_pairs(labels, max_pairs=40, seed=1)
    assert same.sum() == (~same).sum() == 20
    np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same)
    assert len({tuple(p) for p in pairs}) == len(pairs)


def test_model_input_matches_the_service_preprocessing():
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    expected = torch.from_numpy((faces[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 127.5)
    torch.testing.assert_close(faces_to_tensor(torch.from_numpy(faces)), faces_to_tensor(list(faces)))
    torch.testing.assert_close(faces_to_tensor(torch.from_numpy(faces)), expected)


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = epoch_permutation(50, seed=1, epoch=0), epoch_permutation(50, seed=1, epoch=1)
    assert sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, b)
    assert torch.equal(a, epoch_permutation(50, seed=1, epoch=0))


def test_ranks_split_the_same_global_batch():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    labels = np.arange(40) % 7
    teacher = rng.standard_normal((40, 5)).astype(np.float32)
    config = AugmentConfig()
    single = BatchSource(faces, labels, 8, seed=3, augment_config=config, teacher=teacher)
    ranks = [BatchSource(faces, labels, 8, 3, config, r, 2, teacher) for r in range(2)]
    images, batch_labels, batch_teacher = single.batch(epoch=1, step=2)
    parts = [source.batch(epoch=1, step=2) for source in ranks]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), images)
    assert torch.equal(torch.cat([p[1] for p in parts]), batch_labels)
    assert torch.equal(torch.cat([p[2] for p in parts]), batch_teacher)
    # each row's teacher embedding is that face's
    index = epoch_permutation(40, 3, 1)[16:24]
    assert torch.equal(batch_teacher, torch.from_numpy(teacher)[index])
    assert single.steps == 5


def test_augmentation_off_is_identity_and_flip_mirrors():
    batch = faces_to_tensor(
        torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), np.uint8))
    )
    draws = torch.full((2, AUGMENT_DRAWS), 0.5)
    torch.testing.assert_close(augment(batch, OFF, draws), batch)
    flip_only = OFF.model_copy(update={"flip": True})
    draws[:, 3] = torch.tensor([0.1, 0.9])  # first sample flips, second does not
    out = augment(batch, flip_only, draws)
    torch.testing.assert_close(out[0], batch[0].flip(-1))
    torch.testing.assert_close(out[1], batch[1])


def test_augmentation_is_light_and_stays_in_range():
    v, u = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    smooth = (
        torch.stack([torch.sin(u / 9), torch.cos(v / 11), torch.sin((u + v) / 13)]) * 0.9
    )  # a smooth "face"
    batch = smooth.expand(16, 3, 112, 112)
    draws = torch.rand((16, AUGMENT_DRAWS), generator=torch.Generator().manual_seed(0))
    out = augment(batch, AugmentConfig(flip=False), draws)
    assert out.min() >= -1 and out.max() <= 1
    change = (out - batch).abs().mean().item()
    heavy = AugmentConfig(flip=False, brightness=1, contrast=1, saturation=1, scale=0.3, translate=0.2)
    assert 0.01 < change < 0.25 < (augment(batch, heavy, draws) - batch).abs().mean().item()


def test_batch_size_must_divide_by_world_size():
    with pytest.raises(ValueError, match="divisible"):
        BatchSource(np.zeros((10, 112, 112, 3), np.uint8), np.zeros(10, np.int64), 5, 0, OFF, 0, 2)

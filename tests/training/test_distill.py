"""Distillation losses: what they are zero for, and that they pull the student towards the teacher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.distill import DistillLoss


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(16, 32, generator=generator), torch.randn(16, 8, generator=generator)


def test_projected_cosine_is_zero_when_the_projection_maps_student_onto_teacher():
    loss = DistillLoss("projected_cosine", student_dim=32, teacher_dim=8)
    student, _ = _pair()
    with torch.no_grad():
        teacher = F.normalize(student @ loss.projection.t(), dim=1)
    assert loss(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(student, -teacher).item() == pytest.approx(2.0, abs=1e-6)


def test_similarity_loss_ignores_rotations_and_sizes():
    loss = DistillLoss("similarity", student_dim=32, teacher_dim=8)
    assert not list(loss.parameters())
    teacher = torch.randn(16, 8)
    rotation, _ = torch.linalg.qr(torch.randn(32, 32))
    student = torch.cat([teacher, torch.zeros(16, 24)], dim=1) @ rotation * 3.0  # 32-d, rotated, rescaled
    assert loss(student, F.normalize(teacher, dim=1)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["projected_cosine", "similarity"])
def test_gradient_steps_bring_the_student_closer_to_the_teacher(kind):
    loss = DistillLoss(kind, student_dim=32, teacher_dim=8)
    student, teacher = _pair(1)
    student.requires_grad_(True)
    teacher = F.normalize(teacher, dim=1)
    optimizer = torch.optim.Adam([student, *loss.parameters()], lr=0.05)  # scale-free: both losses
    start = loss(student, teacher).item()
    for _ in range(100):
        optimizer.zero_grad()
        loss(student, teacher).backward()
        optimizer.step()
    assert loss(student, teacher).item() < 0.5 * start


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown distillation loss"):
        DistillLoss("kl", 4, 4)

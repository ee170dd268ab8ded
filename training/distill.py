"""Distillation losses: pull the student's embedding towards a teacher's, whatever the two sizes.

- 'projected_cosine': loss = 1 - mean_b cos(P s_b, t_b) with a linear P (D_student -> D_teacher) trained along
  with the student and dropped afterwards (it is not part of the served network).
- 'similarity': loss = mean over the batch's (B, B) pairs of (cos(s_i, s_j) - cos(t_i, t_j))^2: the student
  copies the teacher's similarity structure, which needs no extra weights and no equal sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillLoss(nn.Module):
    """`forward(student (B, Ds) float, teacher (B, Dt) L2-normalised) -> loss scalar`."""

    def __init__(self, kind: str, student_dim: int, teacher_dim: int, init_seed: int = 0) -> None:
        super().__init__()
        self.kind = kind
        if kind == "projected_cosine":
            weight = torch.empty(teacher_dim, student_dim)
            nn.init.kaiming_uniform_(
                weight, a=5**0.5, generator=torch.Generator().manual_seed(init_seed + 17)
            )
            self.projection = nn.Parameter(weight)
        elif kind != "similarity":
            raise ValueError(f"unknown distillation loss {kind!r}")

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.kind == "projected_cosine":
            return 1.0 - F.cosine_similarity(student @ self.projection.t(), teacher, dim=1).mean()
        s = F.normalize(student, dim=1)
        t = F.normalize(teacher, dim=1)
        return (s @ s.t() - t @ t.t()).pow(2).mean()

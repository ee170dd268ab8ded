"""Figures of evaluation results: ROC curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.metrics import RocCurve

_PLOT_MIN_FPR = 1e-4


def save_roc_plot(curves: dict[str, RocCurve], path: Path, title: str = "") -> Path:
    """ROC curves (TPR vs FPR, log-scale FPR) of each split into one PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5), dpi=100)
    for name, roc in curves.items():
        # Straight segments between ROC points (the curve the AUC integrates); FPR 0 is clipped onto the
        # log axis' left edge.
        axis.plot(np.maximum(roc.fpr, _PLOT_MIN_FPR), roc.tpr, label=f"{name} (AUC {100 * roc.auc:.2f}%)")
    axis.set_xscale("log")
    axis.set_xlim(_PLOT_MIN_FPR, 1.0)
    axis.set_ylim(0.0, 1.01)
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.set_title(title or "ROC")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path

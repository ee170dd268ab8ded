"""Where training numbers go: a JSONL file (one record per line), TensorBoard, and PNG curves at the end.

Only rank 0 creates a `RunLog`; the JSONL file is appended to, so a resumed run continues the same history.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """Append records {"kind": "train"|"eval"|..., "epoch", "step", ...numbers} to JSONL and TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / METRICS_NAME
        self._file = self.path.open("a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when logging

            self._writer = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_DIR))

    def write(self, kind: str, global_step: int, **values: Any) -> None:
        """One record; numeric values also become TensorBoard scalars `<kind>/<name>` at `global_step`."""
        record = {"kind": kind, "global_step": global_step, **values}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(f"{kind}/{name}", value, global_step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics JSONL file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_curves(metrics_path: Path, out_path: Path) -> Path:
    """Loss, training accuracy and verification accuracy against epochs, from a metrics JSONL file -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        epochs = [r["epoch_progress"] for r in train]
        axes[0].plot(epochs, [r["loss"] for r in train], lw=1)
        axes[1].plot(epochs, [100 * r["accuracy"] for r in train], lw=1)
    axes[0].set(title="training loss (margin cross-entropy)", xlabel="epoch", ylabel="loss")
    axes[1].set(title="training accuracy (nearest class centre)", xlabel="epoch", ylabel="%")
    names = sorted({k for r in evals for k in r if k.endswith("_accuracy")})
    for name in names:
        points = [(r["epoch_progress"], 100 * r[name]) for r in evals if name in r]
        axes[2].plot(*zip(*points, strict=True), marker="o", label=name.removesuffix("_accuracy"))
    axes[2].set(title="verification accuracy", xlabel="epoch", ylabel="%")
    if names:
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path

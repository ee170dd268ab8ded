"""How hard each loss pulls: the backbone gradient norm of the ArcFace loss and of the weighted distillation
loss, on the first batches of a recipe, from freshly initialised weights (what `distill.weight` balances), and
the unweighted distillation loss itself (1 - cos(P s, t) for projected_cosine).

    python scripts/distill_balance.py --data DIR [DIR ...] --unlabelled DIR --teacher T.onnx [--batches 3]
    ... --checkpoint runs/x/checkpoints/last.pt    # the same for a run's weights and projection

Uses the same data, teacher cache and Trainer as `drface train`; writes nothing but the caches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint
from training.config import load_config
from training.distributed import setup
from training.loop import Trainer
from training.train import load_training_data


def gradient_norm(trainer: Trainer, loss: torch.Tensor) -> float:
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return float(torch.sqrt(sum(p.grad.pow(2).sum() for p in trainer.net.parameters() if p.grad is not None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--unlabelled", type=Path, nargs="*", default=[])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("runs/.cache"))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a run's last.pt instead of fresh weights"
    )
    args = parser.parse_args()
    config = load_config(
        args.config,
        {
            "data.roots": [str(p) for p in args.data],
            "data.unlabelled": [str(p) for p in args.unlabelled],
            "data.cache_dir": str(args.cache),
            "distill.teacher": str(args.teacher),
            "eval.cfp_root": None,
            "out": str(args.cache / "balance-probe"),
        },
    )
    data = load_training_data(config)
    trainer = Trainer(config, data, setup("cpu"), config.out)
    assert trainer.distill is not None
    if args.checkpoint is not None:
        state = load_checkpoint(args.checkpoint)
        trainer.net.load_state_dict(state["backbone"])
        trainer.distill.load_state_dict(state["distill"])
        print(f"weights of {args.checkpoint} (epoch {state['epoch']}, step {state['step']})")
    weight = config.distill.weight
    header = f"{'batch':>5} {'labelled':>8} {'ArcFace grad':>12} {f'{weight:g} x distill grad':>20}"
    print(header + f" {'distill loss':>12}")
    for step in range(args.batches):
        images, labels, teacher = trainer.source.batch(0, step)
        arc = gradient_norm(trainer, trainer.head(trainer.net(images), labels)[0])
        distill_loss = trainer.distill(trainer.net(images), teacher)
        kd = gradient_norm(trainer, weight * distill_loss)
        print(
            f"{step:>5} {int((labels >= 0).sum()):>8} {arc:>12.2f} {kd:>20.2f} {distill_loss.item():>12.3f}"
        )


if __name__ == "__main__":
    main()

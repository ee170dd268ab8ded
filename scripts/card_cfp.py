"""Add the 10-fold CFP results to model cards, as `drface train` does when CFP is at hand.

    python scripts/card_cfp.py runs/gpu/*/drface-default.safetensors [--cfp ../shared/data/cfp]

For a model trained where CFP is not (a GPU machine given only the training faces). CFP is detected and
aligned once (cached in --cache-dir) and each model is scored as training's final evaluation scores it: the
official 10 folds of CFP-FF and CFP-FP, plus the accuracy at each of the card's own operating points. The
results go into the card's `eval` (written atomically); the weights and their checksum are not touched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.artifact import load_artifact, save_card
from training.validate import AlignedCfp, find_cfp_root

CFP_SPLITS = ["cfp_ff", "cfp_fp"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path, help="artifacts (.safetensors beside its .json card)")
    parser.add_argument("--cfp", default="auto", help="CFP root (default: ../shared/data/cfp)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/.cache"), help="aligned-CFP cache")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = find_cfp_root(args.cfp, [])
    if root is None or not (root / "Protocol").is_dir():
        parser.error(f"CFP not found ({args.cfp}); pass --cfp DIR")
    cfp = AlignedCfp(root, CFP_SPLITS, args.cache_dir, batch_size=64)
    for path in args.models:
        loaded = load_artifact(path)
        card = loaded.card
        reports = cfp.evaluate(loaded.model, args.folds, dict(card.thresholds))
        save_card(path, card.model_copy(update={"eval": {**card.eval, **reports}}))
        summary = ", ".join(
            f"{name} {100 * r['accuracy']:.2f}% ± {100 * r['accuracy_std']:.2f}"
            for name, r in reports.items()
        )
        print(f"{path}: {summary}", flush=True)


if __name__ == "__main__":
    main()

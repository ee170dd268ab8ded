"""Ablation table from the model cards of `scripts/ablation.sh`: mean +- std over seeds, per arm.

    python scripts/ablation_table.py runs/ablation

Reads <runs>/<arm>-s<seed>/drface-default.json. Prints a Markdown table: CFP-FF and CFP-FP 10-fold accuracy
(%), held-out-identity accuracy (%), training time (min), each as mean +- std over the seeds (population std;
the std of a single seed is shown as 0). Arms with no finished run are listed as missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ARMS = {
    "plain": "plain MobileFaceNet",
    "drconv-m4": "DRConv-MobileFaceNet, m = 4",
    "drconv-m8": "DRConv-MobileFaceNet, m = 8 (default)",
}
CARD_NAME = "drface-default.json"


def _cell(values: list[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def collect(runs: Path) -> dict[str, list[dict]]:
    """arm -> the finished runs' cards, in seed order."""
    cards: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for card_path in sorted(runs.glob(f"*-s*/{CARD_NAME}")):
        arm = card_path.parent.name.rsplit("-s", 1)[0]
        if arm in cards:
            cards[arm].append(json.loads(card_path.read_text(encoding="utf-8")))
    return cards


def table(cards: dict[str, list[dict]]) -> str:
    """Markdown table of every arm (percentages and minutes)."""
    lines = [
        "| backbone | seeds | CFP-FF % | CFP-FP % | held-out % | training min |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, label in ARMS.items():
        runs = cards[arm]
        if not runs:
            lines.append(f"| {label} | 0 | missing | missing | missing | missing |")
            continue

        def metric(name: str, runs: list[dict] = runs) -> list[float]:
            return [100 * card["eval"][name]["accuracy"] for card in runs]

        minutes = [card["training"]["train_seconds"] / 60 for card in runs]
        seeds = ", ".join(str(card["training"]["recipe"]["runtime"]["seed"]) for card in runs)
        lines.append(
            f"| {label} | {seeds} | {_cell(metric('cfp_ff'))} | {_cell(metric('cfp_fp'))} | "
            f"{_cell(metric('holdout'))} | {_cell(minutes, 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", type=Path, help="folder holding <arm>-s<seed>/ run folders")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"ablation_table: {args.runs} is not a folder", file=sys.stderr)
        return 2
    print(table(collect(args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

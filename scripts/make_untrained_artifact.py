"""Write the placeholder default artifact: a deterministic, randomly initialised (UNTRAINED) DRConv model.

It lets the service and eval run end to end before a trained model ships; its embeddings carry no identity
information. Replace it by saving a trained model under the same prefix.

    python scripts/make_untrained_artifact.py [--prefix model/weights/drface-default] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.artifact import DEFAULT_WEIGHTS, ModelCard, save_artifact  # noqa: E402
from model.mobilefacenet import BackboneConfig, MobileFaceNet  # noqa: E402

NOTES = (
    "UNTRAINED: randomly initialised weights (seed {seed}), a placeholder so the service and eval run "
    "before a trained model ships. Embeddings and similarity scores from it are meaningless; "
    "do not use it to verify faces."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=DEFAULT_WEIGHTS.with_suffix(""))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    config = BackboneConfig()
    model = MobileFaceNet(config).eval()
    card = ModelCard.for_backbone(
        config,
        name="drface-untrained",
        version="0.0.0",
        trained=False,
        notes=NOTES.format(seed=args.seed),
        training={"seed": args.seed, "steps": 0},
    )
    written = save_artifact(args.prefix, model, card)
    print(f"wrote {args.prefix}.safetensors and .json (sha256 {written.weights_sha256[:12]}...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

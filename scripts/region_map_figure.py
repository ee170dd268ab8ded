"""Figure of DRConv region maps: a few CFP identities, frontal and profile, one row per photo.

Each row: every DRConv layer's guided mask of one aligned face, one colour per region (the colours of the
service's `/v1/region-map?format=png`), white dots where alignment puts the eyes, nose tip and mouth corners.
CFP photos are real people's: by default the figure shows the masks only, no pixel of the photo, so it can be
committed; `--show-faces` adds the aligned face and blends the masks onto it, for looking at locally.

    python scripts/region_map_figure.py --out docs/region_maps.png
    python scripts/region_map_figure.py --show-faces --out /tmp/region_maps_faces.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from app.region_png import color_regions, overlay_regions
from model.align import ARCFACE_TEMPLATE_112
from model.artifact import DEFAULT_WEIGHTS, load_artifact
from model.detect import FaceDetector
from model.pipeline import faces_to_tensor
from training.photos import EvalSettings, load_face
from training.protocols import default_cfp_root

CAPTION_PX = 18


def _captioned(image: np.ndarray, caption: str, scale: int = 2) -> np.ndarray:
    """(112, 112, 3) face -> upscaled panel with a caption strip above it."""
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    strip = np.full((CAPTION_PX, big.shape[1], 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(strip, caption, (3, CAPTION_PX - 5), font, 0.4, (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([strip, big])


def _mask_panel(mask: np.ndarray, regions: int) -> np.ndarray:
    """(h, w) region indices -> (112, 112, 3) opaque colours with the 5 template landmarks as white dots."""
    panel = np.ascontiguousarray(color_regions(mask, regions))
    for x, y in ARCFACE_TEMPLATE_112:
        cv2.circle(panel, (round(x), round(y)), 2, (255, 255, 255), -1, cv2.LINE_AA)
    return panel


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--cfp", type=Path, default=default_cfp_root(), help="CFP root (Data/Images/...)")
    parser.add_argument("--identities", nargs="+", default=["001", "002", "003"], help="CFP identity folders")
    parser.add_argument("--out", type=Path, default=Path("docs/region_maps.png"))
    parser.add_argument("--show-faces", action="store_true", help="include the photos (never commit that)")
    args = parser.parse_args()
    if args.cfp is None:
        parser.error("CFP data not found: pass --cfp")

    loaded = load_artifact(args.weights)
    detector, settings = FaceDetector(), EvalSettings()
    rows = []
    for identity in args.identities:
        for pose in ("frontal", "profile"):
            face, _ = load_face(args.cfp / "Data" / "Images" / identity / pose / "01.jpg", detector, settings)
            with torch.inference_mode():
                masks = loaded.model.region_masks(faces_to_tensor([face]))
            if args.show_faces:
                panels = [_captioned(face, f"{identity} {pose}")]
                panels += [
                    _captioned(overlay_regions(face, m.mask[0].numpy(), m.regions), m.name) for m in masks
                ]
            else:
                panels = [
                    _captioned(_mask_panel(m.mask[0].numpy(), m.regions), f"{identity} {pose} {m.name}")
                    for m in masks
                ]
            rows.append(np.hstack(panels))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows))
    print(f"wrote {args.out} ({loaded.card.name}, trained={loaded.card.trained})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

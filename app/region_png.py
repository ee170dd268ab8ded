"""Region maps as a picture: the aligned face, then one panel per DRConv layer with its regions overlaid.

Each panel upsamples the layer's (h, w) mask to the 112x112 face with nearest-neighbour (so every cell keeps
one region) and blends one colour per region onto the face. A legend maps colours to region indices.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from app.engine import LayerMask
from model.align import FACE_SIZE

PANEL_SCALE = 2  # each 112 px face is drawn at 224 px
PANELS_PER_ROW = 4
OVERLAY_ALPHA = 0.5  # weight of the region colour in the blend
CAPTION_PX = 22
LEGEND_ROW_PX = 24
MARGIN_PX = 6
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.42
_TEXT_BGR = (20, 20, 20)
_BACKGROUND_BGR = (255, 255, 255)


def region_colors(count: int) -> np.ndarray:
    """(count, 3) uint8 BGR colours; region j always gets the same colour (golden-ratio hue steps)."""
    colors = []
    for j in range(count):
        hue = (j * 0.618033988749895) % 1.0
        value = 1.0 if j % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((round(b * 255), round(g * 255), round(r * 255)))
    return np.array(colors, dtype=np.uint8).reshape(count, 3)


def region_colors_hex(count: int) -> list[str]:
    """CSS colours `#rrggbb` of regions 0..count-1, the colours of `region_colors`, for web clients."""
    return [f"#{r:02x}{g:02x}{b:02x}" for b, g, r in region_colors(count).tolist()]


def color_regions(mask: np.ndarray, regions: int) -> np.ndarray:
    """(h, w) int mask in [0, regions) -> (112, 112, 3) uint8 BGR, a colour per region (nearest)."""
    full = cv2.resize(mask.astype(np.int32), (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_NEAREST)
    return region_colors(regions)[np.clip(full, 0, regions - 1)]


def overlay_regions(face_bgr: np.ndarray, mask: np.ndarray, regions: int) -> np.ndarray:
    """(112, 112, 3) uint8 face and (h, w) int mask in [0, regions) -> (112, 112, 3) uint8 blended overlay."""
    colored = color_regions(mask, regions)
    blended = face_bgr.astype(np.float32) * (1 - OVERLAY_ALPHA) + colored.astype(np.float32) * OVERLAY_ALPHA
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def render_region_png(face_bgr: np.ndarray, layers: list[LayerMask]) -> bytes:
    """PNG bytes: the aligned face and one overlay per layer (captioned), in rows, with a colour legend."""
    panels = [("aligned face", face_bgr)]
    panels += [
        (
            f"{layer.name} ({layer.mask.shape[0]}x{layer.mask.shape[1]})",
            overlay_regions(face_bgr, layer.mask, layer.regions),
        )
        for layer in layers
    ]
    side = FACE_SIZE * PANEL_SCALE
    columns = min(PANELS_PER_ROW, len(panels))
    rows = -(-len(panels) // columns)
    regions = max((layer.regions for layer in layers), default=0)
    legend_rows = -(-regions // 8) if regions else 0
    cell_w, cell_h = side + MARGIN_PX, side + CAPTION_PX + MARGIN_PX
    canvas = np.full(
        (rows * cell_h + legend_rows * LEGEND_ROW_PX + MARGIN_PX, columns * cell_w + MARGIN_PX, 3),
        _BACKGROUND_BGR,
        dtype=np.uint8,
    )
    for i, (caption, image) in enumerate(panels):
        x = MARGIN_PX + (i % columns) * cell_w
        y = MARGIN_PX + (i // columns) * cell_h
        _put_text(canvas, _fit(caption, side), (x, y + CAPTION_PX - 8))
        big = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
        canvas[y + CAPTION_PX : y + CAPTION_PX + side, x : x + side] = big
    colors = region_colors(regions)
    legend_top = rows * cell_h + MARGIN_PX
    swatch_w = (canvas.shape[1] - MARGIN_PX) // 8
    for j in range(regions):
        x = MARGIN_PX + (j % 8) * swatch_w
        y = legend_top + (j // 8) * LEGEND_ROW_PX
        cv2.rectangle(canvas, (x, y), (x + 16, y + 16), tuple(int(c) for c in colors[j]), thickness=-1)
        _put_text(canvas, f"region {j}", (x + 20, y + 13))
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _fit(text: str, width_px: int) -> str:
    """Shorten `text` from the left until it fits in `width_px`."""
    while text and cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0] > width_px:
        text = text[1:]
    return text


def _put_text(canvas: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    cv2.putText(canvas, text, origin, _FONT, _FONT_SCALE, _TEXT_BGR, 1, cv2.LINE_AA)

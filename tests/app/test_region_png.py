"""Region-map overlays: one colour per region, nearest-neighbour upsampling, a decodable PNG."""

from __future__ import annotations

import cv2
import numpy as np

from app.engine import LayerMask
from app.region_png import OVERLAY_ALPHA, overlay_regions, region_colors, render_region_png

REGIONS = 8


def test_each_region_has_its_own_colour() -> None:
    colors = region_colors(REGIONS)
    assert colors.shape == (REGIONS, 3)
    assert len({tuple(c) for c in colors}) == REGIONS
    assert np.array_equal(region_colors(3), colors[:3])  # region j's colour does not depend on m


def test_overlay_paints_each_mask_cell_over_its_block_of_face_pixels() -> None:
    face = np.full((112, 112, 3), 100, np.uint8)
    mask = np.arange(4 * 4).reshape(4, 4) % REGIONS  # 4x4 cells of 28x28 face pixels
    overlay = overlay_regions(face, mask, REGIONS).astype(float)
    colors = region_colors(REGIONS).astype(float)
    for row in range(4):
        for col in range(4):
            block = overlay[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28]
            expected = 100 * (1 - OVERLAY_ALPHA) + colors[mask[row, col]] * OVERLAY_ALPHA
            assert np.abs(block - expected).max() <= 1.0


def test_png_decodes_and_holds_the_face_and_one_panel_per_layer() -> None:
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    layers = [LayerMask(f"stage1.{i}.expand", REGIONS, rng.integers(0, REGIONS, (28, 28))) for i in range(5)]
    picture = cv2.imdecode(np.frombuffer(render_region_png(face, layers), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    one_layer = cv2.imdecode(np.frombuffer(render_region_png(face, layers[:1]), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[0] > one_layer.shape[0]  # 6 panels need a second row, 2 panels do not
    assert picture.shape[1] > one_layer.shape[1]

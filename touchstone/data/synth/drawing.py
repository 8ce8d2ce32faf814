"""Small drawing helpers shared by the region renderers: masks, text, blur, shadows.

Text comes from Pillow (FreeType, with a bundled font); blurs, resizes and polygons from
OpenCV, which is several times faster on these small images and keeps synthesis fast.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font: needs no font file on the machine."""
    return ImageFont.load_default(size=max(6, int(size)))  # type: ignore[return-value]


def text_width(text: str, size: int, spacing: float) -> float:
    face = font(size)
    return sum(face.getlength(ch) for ch in text) + spacing * size * (len(text) - 1)


@lru_cache(maxsize=2048)
def _glyph(ch: str, size: int, stroke: int) -> tuple[np.ndarray, int, int]:
    """A glyph's coverage mask and where it sits relative to the pen position."""
    face = font(size)
    left, top, right, bottom = face.getbbox(ch, stroke_width=stroke)
    image = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(image).text(
        (-left, -top), ch, font=face, fill=255, stroke_width=stroke, stroke_fill=255
    )
    return mask_array(image), left, top


def stamp_text(
    canvas: np.ndarray,
    centre: tuple[float, float],
    text: str,
    size: int,
    spacing: float,
    stroke: int = 0,
) -> None:
    """Add `text` centred on `centre` into a float mask, with `spacing` (a share of the font
    size) between letters. Glyphs are cached, so stamping costs a few array additions."""
    face = font(size)
    x = centre[0] - text_width(text, size, spacing) / 2
    _, top, _, bottom = face.getbbox("H")
    y = centre[1] - (top + bottom) / 2
    for ch in text:
        glyph, left, glyph_top = _glyph(ch, size, stroke)
        paste(canvas, glyph, round(x + left), round(y + glyph_top))
        x += face.getlength(ch) + spacing * size


def mask_array(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask, dtype=np.float32) * (1.0 / 255.0)


def blur(array: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return array
    return cv2.GaussianBlur(array, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def shrink(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downsample by area averaging: antialiases shapes drawn at a larger scale."""
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA)


def threshold(soft: np.ndarray, level: float, softness: float) -> np.ndarray:
    """Re-cut a blurred mask: a lower level makes strokes bolder, more softness blurs edges."""
    return np.clip((soft - level) * (1.0 / max(softness, 1e-3)) + 0.5, 0.0, 1.0)


def shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(array, (dy, dx), axis=(0, 1))


def drop_shadow(mask: np.ndarray, offset: int, sigma: float, strength: float) -> np.ndarray:
    """Darkening factor (1 = none) that an object with `mask` casts on what lies under it.

    A shadow is soft, so it is blurred at a quarter of the resolution.
    """
    side = mask.shape[0]
    quarter = max(1, side // 4)
    soft = blur(shrink(mask, quarter, quarter), sigma / 4)
    soft = cv2.resize(soft, (side, side), interpolation=cv2.INTER_LINEAR)
    return 1.0 - strength * shifted(soft, offset, offset)


# numpy broadcasting over a trailing axis of 3 is several times slower than whole-array
# operations, so colour images are built channel by channel and merged with OpenCV.
def colourise(shade: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
    """A float32 HxWx3 image: the 2-D `shade` times a colour."""
    return cv2.merge([shade * np.float32(c) for c in rgb])


def grey3(plane: np.ndarray) -> np.ndarray:
    return cv2.merge([plane, plane, plane])


def blend(under: np.ndarray, over: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`over` where mask is 1, `under` where it is 0."""
    return cv2.blendLinear(over, under, mask, 1.0 - mask)


def fill_polygons(mask: np.ndarray, polygons: list[np.ndarray], value: float = 1.0) -> None:
    """Fill polygons (arrays of x, y canvas pixels) into a float mask, antialiased, in place."""
    shift = 4  # sub-pixel precision: coordinates in 1/16 pixel
    points = [np.round(np.asarray(p) * (1 << shift)).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, points, value, lineType=cv2.LINE_AA, shift=shift)


def paste(canvas: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    """Add a 2-D patch into a canvas at (left, top), clipping whatever falls outside."""
    height, width = canvas.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + patch.shape[0], height), min(left + patch.shape[1], width)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] += patch[y0 - top : y1 - top, x0 - left : x1 - left]


def ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 48
) -> np.ndarray:
    """Polygon points of a rotated ellipse (angle in degrees)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    a = np.deg2rad(angle)
    return np.stack(
        [cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)], axis=1
    )


def rectangle(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """Corners of a rectangle of half-sizes rx, ry turned by `angle` degrees."""
    a = np.deg2rad(angle)
    corners = np.array([[-rx, -ry], [rx, -ry], [rx, ry], [-rx, ry]])
    turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return corners @ turn + np.array([cx, cy])


def rounded_rectangle(x0: float, y0: float, x1: float, y1: float, radius: float) -> np.ndarray:
    corners = [
        (x1 - radius, y0 + radius, -90),
        (x1 - radius, y1 - radius, 0),
        (x0 + radius, y1 - radius, 90),
        (x0 + radius, y0 + radius, 180),
    ]
    points = []
    for cx, cy, start in corners:
        t = np.deg2rad(np.linspace(start, start + 90, 10))
        points.append(np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1))
    return np.concatenate(points)

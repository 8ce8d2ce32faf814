"""The phone camera: everything about a photo that must not give the label away.

Viewpoint (rotation, scale, perspective, framing), a moving specular highlight, lighting and
white balance, focus blur, sensor noise and JPEG compression. Each is drawn independently of
the label, so none of them can tell a model which items are fakes.
"""

from __future__ import annotations

import cv2
import numpy as np

from touchstone.data.synth.drawing import blur, colourise
from touchstone.data.synth.materials import TextureBank, linear_light
from touchstone.data.synth.scene import Scene

# A canvas this much larger than the output leaves room for rotation and perspective.
CANVAS_MARGIN = 1.15


def canvas_side(size: int) -> int:
    return round(size * CANVAS_MARGIN)


def photograph(scene: Scene, bank: TextureBank, rng: np.random.Generator, size: int) -> bytes:
    """Photograph a rendered scene and return the JPEG bytes a phone would upload."""
    rgb = photograph_pixels(scene, bank, rng, size)
    quality = int(rng.integers(60, 96))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV's JPEG encoder does not fail on valid arrays
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def photograph_pixels(
    scene: Scene, bank: TextureBank, rng: np.random.Generator, size: int
) -> np.ndarray:
    """The region as the camera sees it (size x size uint8 RGB), before any encoding: phone
    frames (`phone.phone_photo`) place it in a whole photo and encode that once."""
    view = _viewpoint(rng, scene.side, size)
    warped = _warp(scene.planes, view, size, (*scene.fill, 0.0))
    photo = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
    highlight = 255.0 * _specular_band(size, rng) * warped[:, :, 3]
    photo += cv2.merge([highlight, highlight, highlight])
    if rng.random() < 0.7:
        photo = blur(photo, rng.uniform(0.0, 1.3) * size / 224)
    light = linear_light(size, rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.25))
    light *= rng.uniform(0.75, 1.2)  # exposure
    temperature = rng.normal(0, 0.05)
    balance = (1 + temperature, 1.0, 1 - temperature)
    photo = cv2.multiply(photo, colourise(light, balance))
    photo = cv2.scaleAdd(bank.sensor_noise(rng, size), rng.uniform(1.0, 6.0), photo)
    return np.clip(photo, 0, 255).astype(np.uint8)


def _warp(
    image: np.ndarray, view: np.ndarray, size: int, fill: tuple[float, ...] | float
) -> np.ndarray:
    return cv2.warpPerspective(
        image,
        view,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


def _specular_band(side: int, rng: np.random.Generator) -> np.ndarray:
    """A soft highlight stripe where a window or lamp reflects; smooth, so made small."""
    small = max(8, side // 4)
    coords = np.arange(small, dtype=np.float32) / (small - 1) - 0.5
    angle = rng.uniform(0, np.pi)
    distance = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    band = np.exp(-(((distance - rng.uniform(-0.3, 0.3)) / 0.12) ** 2)).astype(np.float32)
    return cv2.resize(band, (side, side), interpolation=cv2.INTER_LINEAR)


def _viewpoint(rng: np.random.Generator, canvas: int, size: int) -> np.ndarray:
    """A matrix mapping output pixels to canvas pixels: a hand-held phone's framing."""
    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(1.0, 1.25)  # > 1 zooms in
    half = size / 2 / scale
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = canvas / 2 + rng.normal(0, 0.03, 2) * size
    out_corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    in_corners = centre + (unit * half) @ rotation.T + rng.normal(0, 0.035, (4, 2)) * size
    return cv2.getPerspectiveTransform(out_corners, in_corners.astype(np.float32))

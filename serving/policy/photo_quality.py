"""Photo quality: is a photo good enough for anyone, model or reviewer, to judge the item from
it? Brightness and sharpness (variance of the Laplacian) on a small grey copy, which the
reduced decode the service reads (`touchstone.imaging.decode_reduced`) already is nearly: its
size is judged on the photo's full size."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from serving.policy.config import PolicyConfig

# Photo problems: stable codes the app turns into its own words.
TOO_SMALL = "too_small"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
BLURRED = "blurred"
PHOTO_PROBLEMS: tuple[str, ...] = (TOO_SMALL, TOO_DARK, TOO_BRIGHT, BLURRED)
PROBLEM_WORDS = {
    TOO_SMALL: "too small",
    TOO_DARK: "too dark",
    TOO_BRIGHT: "too bright (blown out)",
    BLURRED: "blurred",
}


@dataclass(frozen=True)
class PhotoQuality:
    usable: bool
    problems: list[str]  # codes from PHOTO_PROBLEMS, in that order
    brightness: float  # mean luma, 0..255
    sharpness: float  # variance of the Laplacian at photo_quality.sharpness_side_px
    width: int  # the photo's full size
    height: int


def assess_photo(
    image: Image.Image, config: PolicyConfig, full_size: tuple[int, int] | None = None
) -> PhotoQuality:
    """Measure one decoded photo against `config.photo_quality`. `image` may be a reduced
    decode of a photo of `full_size` (width, height): too small is judged on that."""
    limits = config.photo_quality
    width, height = full_size or image.size
    if min(width, height, *image.size) == 0:
        return PhotoQuality(False, [TOO_SMALL], 0.0, 0.0, width, height)
    grey = _grey(image, limits.sharpness_side_px)
    brightness = float(grey.mean())
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    problems = []
    if min(width, height) < limits.min_side_px:
        problems.append(TOO_SMALL)
    if brightness < limits.min_brightness:
        problems.append(TOO_DARK)
    elif brightness > limits.max_brightness:
        problems.append(TOO_BRIGHT)
    # A dark or blown-out photo has little contrast left, so its Laplacian is low whatever the
    # focus: only an exposed photo can be called blurred, and the member is told to fix the light.
    elif sharpness < limits.min_sharpness:
        problems.append(BLURRED)
    return PhotoQuality(not problems, problems, brightness, sharpness, width, height)


def _grey(image: Image.Image, side: int) -> np.ndarray:
    """The photo in grey, shrunk to at most `side` px on its longer side."""
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    factor = max(image.size) // side
    if factor > 1:
        # An integer box shrink in Pillow first: converting a 12 MP photo to grey would cost
        # more than everything else here together.
        image = image.reduce(factor)
    grey = np.asarray(image if image.mode == "L" else image.convert("L"))
    height, width = grey.shape
    if max(height, width) > side:
        scale = side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey

"""Any decoded photo to 8-bit sRGB by one fixed rule, so a photo has the same pixels in
training, evaluation and serving."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

from touchstone.errors import PhotoError

# Transparent areas are composited over white, the usual backdrop of product photos.
BACKGROUND_RGB = (255, 255, 255)
_SRGB_PROFILE = ImageCms.createProfile("sRGB")
# 16-bit grey to 8-bit, rounded: one table lookup a pixel, no float copy of the photo.
_SIXTEEN_TO_EIGHT = np.rint(np.arange(65536) / 257.0).astype(np.uint8)
_CHUNK_PIXELS = 1 << 18


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by one fixed rule.

    - an embedded ICC profile is honoured (phones shoot Display P3; we work in sRGB);
    - transparency (RGBA, LA, PA, palette with a transparent index) is composited over white;
    - 16- and 32-bit integer greys are scaled from 0..65535 to 0..255 (Pillow's own conversion
      clips them to white instead).
    """
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "CMYK", "L"):
        converted = _convert_icc(image, icc)
        if converted is not None:
            return converted
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        # Pasted through its own alpha onto opaque white: the same pixels as alpha_composite,
        # with one full-size copy instead of four.
        backdrop = Image.new("RGB", rgba.size, BACKGROUND_RGB)
        backdrop.paste(rgba, mask=rgba)
        return backdrop
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_sixteen_bit_to_grey(image), mode="L").convert("RGB")
    if mode == "LAB":
        lab_to_srgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), _SRGB_PROFILE, "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, lab_to_srgb)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise PhotoError("unreadable_image", f"unsupported colour mode {mode}") from exc


def _sixteen_bit_to_grey(image: Image.Image) -> np.ndarray:
    """0..65535 to 0..255, rounded, a block of rows at a time: the only extra memory is the
    8-bit result (a float64 copy of a 50 MP photo would take 400 MB)."""
    width, height = image.size
    grey = np.empty((height, width), np.uint8)
    rows = max(1, _CHUNK_PIXELS // width)
    for top in range(0, height, rows):
        block = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if block.dtype.itemsize > 2:  # 32-bit "I": clip to the 16-bit range first
            block = np.clip(block, 0, 65535)
        grey[top : top + rows] = _SIXTEEN_TO_EIGHT[block]
    return grey


def _convert_icc(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(
            image, source, _SRGB_PROFILE, outputMode="RGB", renderingIntent=0
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None  # a broken profile: fall back to the plain conversion

"""Photo decoding and preprocessing shared by data tools, training, evaluation and serving.

Every path that turns bytes into pixels goes through `decode_photo`, so that a photo looks the
same to the trainer and to the server: EXIF orientation applied, any colour mode converted to
RGB by one fixed rule, and oversized images refused from their header before any decoding.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# 50 megapixels admits every phone camera's full-resolution output (48 MP sensors) and refuses
# decompression bombs long before they allocate memory.
DEFAULT_MAX_PIXELS = 50_000_000
# Transparent areas are composited over white, the usual backdrop of product photos.
BACKGROUND_RGB = (255, 255, 255)

_SRGB_PROFILE = ImageCms.createProfile("sRGB")


class PhotoError(ValueError):
    """A photo that cannot be used. `code` is stable and becomes the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


PhotoSource = bytes | str | os.PathLike[str] | BinaryIO


def decode_photo(source: PhotoSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a photo into an upright RGB image, or raise PhotoError.

    Error codes: `missing_file`, `empty_file`, `not_an_image`, `too_many_pixels`,
    `truncated_image`, `unreadable_image`.
    """
    if isinstance(source, bytes):
        if not source:
            raise PhotoError("empty_file", "the file is empty (0 bytes)")
        return _decode(io.BytesIO(source), max_pixels)
    if hasattr(source, "read"):
        return _decode(source, max_pixels)  # type: ignore[arg-type]
    path = Path(source)  # type: ignore[arg-type]
    try:
        if path.stat().st_size == 0:
            raise PhotoError("empty_file", "the file is empty (0 bytes)")
        with path.open("rb") as stream:
            return _decode(stream, max_pixels)
    except FileNotFoundError as exc:
        raise PhotoError("missing_file", f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise PhotoError("missing_file", f"a directory, not an image file: {path}") from exc
    except PermissionError as exc:
        raise PhotoError("unreadable_image", f"permission denied: {path}") from exc


def _decode(stream: BinaryIO, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own limit below is stricter than Pillow's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise PhotoError(
            "too_many_pixels", f"image refused as a decompression bomb: {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise PhotoError("not_an_image", "not an image in a format we can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        code = "truncated_image" if "truncated" in str(exc).lower() else "unreadable_image"
        raise PhotoError(code, f"cannot read the image header: {exc}") from exc

    width, height = image.size
    if width * height > max_pixels:
        raise PhotoError(
            "too_many_pixels",
            f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
        )
    if width == 0 or height == 0:
        raise PhotoError("unreadable_image", f"image has no pixels ({width}x{height})")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated formats: the first frame is the photo
        image.load()
    except OSError as exc:
        text = str(exc).lower()
        code = (
            "truncated_image"
            if "truncated" in text or "broken data" in text
            else "unreadable_image"
        )
        raise PhotoError(code, f"cannot decode the image: {exc}") from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise PhotoError("unreadable_image", f"cannot decode the image: {exc}") from exc

    image = _apply_orientation(image)
    return to_rgb(image)


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: the pixels are still the photo as stored
        return image


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
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(np.clip(values, 0, 65535) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "LAB":
        lab_to_srgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), _SRGB_PROFILE, "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, lab_to_srgb)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise PhotoError("unreadable_image", f"unsupported colour mode {mode}") from exc


def _convert_icc(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(
            image, source, _SRGB_PROFILE, outputMode="RGB", renderingIntent=0
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None  # a broken profile: fall back to the plain conversion


@dataclass(frozen=True)
class BBox:
    """A crop box in pixels of the upright (EXIF-rotated) photo; x1 and y1 are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def parse(cls, text: str) -> BBox:
        """Parse `x0,y0,x1,y1`; raise ValueError with a reason a person can act on."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise ValueError(f"bbox {text!r} needs four numbers x0,y0,x1,y1")
        try:
            numbers = [float(p) for p in parts]
        except ValueError as exc:
            raise ValueError(f"bbox {text!r} holds something that is not a number") from exc
        if any(not np.isfinite(n) or n != int(n) for n in numbers):
            raise ValueError(f"bbox {text!r} must hold whole pixel numbers")
        x0, y0, x1, y1 = (int(n) for n in numbers)
        if min(x0, y0) < 0:
            raise ValueError(f"bbox {text!r} has a negative coordinate")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"bbox {text!r} is empty: x1 must exceed x0 and y1 must exceed y0")
        return cls(x0, y0, x1, y1)

    def fits(self, width: int, height: int) -> bool:
        return self.x1 <= width and self.y1 <= height

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"


def crop_to_bbox(image: Image.Image, bbox: BBox | None) -> Image.Image:
    if bbox is None:
        return image
    if not bbox.fits(*image.size):
        raise PhotoError(
            "bad_bbox", f"bbox {bbox} lies outside the {image.width}x{image.height} photo"
        )
    return image.crop((bbox.x0, bbox.y0, bbox.x1, bbox.y1))


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: travels with the weights (timm's pretrained_cfg) and is
    written into the model card, so that trainer and server cannot drift."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    crop_pct: float = 1.0


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resize_and_crop(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize the shorter side to input_size / crop_pct, then centre-crop a square."""
    scaled = round(prep.input_size / prep.crop_pct)
    width, height = image.size
    if width <= height:
        new_size = (scaled, max(scaled, round(height * scaled / width)))
    else:
        new_size = (max(scaled, round(width * scaled / height)), scaled)
    resized = image.resize(new_size, _RESAMPLE[prep.interpolation])
    left = (new_size[0] - prep.input_size) // 2
    top = (new_size[1] - prep.input_size) // 2
    return resized.crop((left, top, left + prep.input_size, top + prep.input_size))


def normalize(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, scaled to 0..1 then normalised with the model's mean/std."""
    array = pixels.astype(np.float32) / 255.0
    array = (array - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_model_input(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The evaluation-time transform: the one that serving runs on every photo."""
    return normalize(np.asarray(resize_and_crop(image, prep)), prep)

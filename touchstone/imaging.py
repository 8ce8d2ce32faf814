"""Photo decoding shared by data tools, training, evaluation and serving (the model's own
preprocessing, in `touchstone.preprocessing`, is re-exported here).

Every path that turns bytes into pixels goes through `decode_photo`, so that a photo looks the
same to the trainer and to the server: EXIF orientation applied, any colour mode converted to
RGB by one fixed rule, and oversized images refused from their header before any decoding.

Photos come from strangers, so decoding is also the service's first line of defence:
- only the formats phones send are decoded (JPEG, PNG, WebP, HEIC/HEIF), told apart by their
  first bytes before any decoder sees them, so the rest of Pillow's 40-odd parsers never run;
- the pixel limit is checked from the header, before any pixel is allocated;
- decodes run under a process-wide semaphore (`decode_slots`) sized to the memory a decode of
  the largest accepted photo can take, so a burst of uploads decodes a few at a time;
- a decoder failing in any way on hostile bytes is a PhotoError, never another exception.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# The model's preprocessing lives in its own module; imported from here as it always was.
from touchstone.preprocessing import (  # noqa: F401
    Preprocessing,
    normalize,
    resize_and_crop,
    to_model_input,
)

# HEIC is what iPhones send; pillow-heif decodes it through Pillow (registered once, here).
pillow_heif.register_heif_opener()

# 50 megapixels admits every phone camera's full-resolution output (48 MP sensors) and refuses
# decompression bombs long before they allocate memory.
DEFAULT_MAX_PIXELS = 50_000_000
# Transparent areas are composited over white, the usual backdrop of product photos.
BACKGROUND_RGB = (255, 255, 255)
# The most memory one decode takes, per pixel of the photo: 8 for the costliest accepted
# kinds (RGBA PNG; 16-bit PNG and HEIC 7 to 7.5; JPEG 4) with benchmarks/hostile_decode.py,
# and a margin.
PEAK_BYTES_PER_PIXEL = 10
# The share of the machine's (or container's) memory that photo decodes may take together.
DECODE_MEMORY_SHARE = 0.5

# The formats phones send, as Pillow names their decoders.
ACCEPTED_FORMATS = {"JPEG": ["JPEG", "MPO"], "PNG": ["PNG"], "WEBP": ["WEBP"], "HEIF": ["HEIF"]}
# Their file names' endings, for tools that pick photos from folders (`touchstone data import`).
ACCEPTED_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
# HEIF brands of HEVC-coded photos (iPhone: heic; some Android phones: mif1 with heic).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_HEAD_BYTES = 64

_SRGB_PROFILE = ImageCms.createProfile("sRGB")
# 16-bit grey to 8-bit, rounded: one table lookup a pixel, no float copy of the photo.
_SIXTEEN_TO_EIGHT = np.rint(np.arange(65536) / 257.0).astype(np.uint8)
_CHUNK_PIXELS = 1 << 18


class PhotoError(ValueError):
    """A photo that cannot be used. `code` is stable and becomes the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


PhotoSource = bytes | str | os.PathLike[str] | BinaryIO


def sniff_format(head: bytes) -> str | None:
    """The accepted format these first bytes announce (a key of ACCEPTED_FORMATS), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        # An ISO media file: major brand, minor version, then compatible brands up to the box's
        # end. AVIF shares the container (brand avif) and is not accepted.
        box_end = min(int.from_bytes(head[:4], "big"), len(head))
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
        if head[8:12] in _HEIF_BRANDS or brands & (_HEIF_BRANDS - {b"mif1", b"msf1"}):
            return "HEIF"
    return None


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or its container's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on Windows: assume a small machine
        total = 4 * 2**30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def default_decode_slots(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """How many photos of up to `max_pixels` may be decoded at once: as many as fit in
    DECODE_MEMORY_SHARE of memory, and no more than the cores (more would not decode faster)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fit = int(memory_bytes() * DECODE_MEMORY_SHARE) // (max_pixels * PEAK_BYTES_PER_PIXEL)
    return max(1, min(cores or 1, fit))


_slots_lock = threading.Lock()
_slots_count = default_decode_slots()
_slots = threading.BoundedSemaphore(_slots_count)


def set_decode_slots(count: int) -> None:
    """Size the process-wide decode semaphore (the service calls this once at start)."""
    global _slots, _slots_count
    if count < 1:
        raise ValueError("decode slots must be at least 1")
    with _slots_lock:
        _slots, _slots_count = threading.BoundedSemaphore(count), count


def _fresh_slots_after_fork() -> None:
    # A process forked while another thread held a slot or the lock (a DataLoader worker, say)
    # would never see them given back: it starts with its own.
    global _slots, _slots_lock
    _slots_lock, _slots = threading.Lock(), threading.BoundedSemaphore(_slots_count)


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_fresh_slots_after_fork)


def decode_slots() -> int:
    """How many photos this process decodes at once at most."""
    return _slots_count


@contextlib.contextmanager
def _decode_slot() -> Iterator[None]:
    slots = _slots  # the semaphore taken is the one given back, even if resized meanwhile
    with slots:
        yield


def decode_photo(source: PhotoSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a photo into an upright RGB image, or raise PhotoError.

    Error codes: `missing_file`, `empty_file`, `not_an_image`, `unsupported_image_format`,
    `too_many_pixels`, `truncated_image`, `unreadable_image`.
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


def photo_pixels(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """How many pixels the photo in `data` has, from its header alone (nothing is decoded), so
    that the memory its decoding takes can be reserved first; PhotoError as `decode_photo`."""
    if not data:
        raise PhotoError("empty_file", "the file is empty (0 bytes)")
    with _open(io.BytesIO(data), max_pixels) as image:
        return image.width * image.height


def _decode(stream: BinaryIO, max_pixels: int) -> Image.Image:
    image = _open(stream, max_pixels)
    with _decode_slot():
        try:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated formats: the first frame is the photo
            image.load()
            return to_rgb(_apply_orientation(image))
        except (PhotoError, MemoryError):
            raise
        except Exception as exc:  # as in _open
            code = "truncated_image" if _sounds_truncated(exc) else "unreadable_image"
            raise PhotoError(code, f"cannot decode the image: {exc}") from exc


def _open(stream: BinaryIO, max_pixels: int) -> Image.Image:
    """The photo with its header read and checked, its pixels not yet decoded."""
    if not stream.seekable():
        stream = io.BytesIO(stream.read())
    start = stream.tell()
    head = stream.read(_HEAD_BYTES)
    stream.seek(start)
    kind = sniff_format(head)
    if kind is None:
        raise _refusal(head)
    try:
        with warnings.catch_warnings():
            # Our own limit below is stricter than Pillow's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the decoder the first bytes named may read them.
            image = Image.open(stream, formats=ACCEPTED_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise PhotoError(
            "too_many_pixels", f"image refused as a decompression bomb: {exc}"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # hostile bytes can trip any error in a parser
        code = "truncated_image" if _sounds_truncated(exc) else "unreadable_image"
        detail = "" if isinstance(exc, UnidentifiedImageError) else f": {exc}"
        raise PhotoError(code, f"cannot read the {kind} header{detail}") from exc

    width, height = image.size
    if width * height > max_pixels:
        raise PhotoError(
            "too_many_pixels",
            f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
        )
    if width == 0 or height == 0:
        raise PhotoError("unreadable_image", f"image has no pixels ({width}x{height})")
    return image


def _sounds_truncated(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, EOFError) or "truncated" in text or "broken data" in text


def _refusal(head: bytes) -> PhotoError:
    """Why bytes that are no accepted format are refused: another image format (Pillow's own
    signature checks, which read nothing past these bytes), or no image at all."""
    Image.init()
    for name, (_factory, accepts) in Image.OPEN.items():
        try:
            known = accepts is not None and accepts(head)
        except Exception:  # a check that cannot read a short head says no
            known = False
        if known:
            return PhotoError(
                "unsupported_image_format", f"a {name} image; send JPEG, PNG, WebP or HEIC"
            )
    return PhotoError("not_an_image", "not an image: send JPEG, PNG, WebP or HEIC")


def _apply_orientation(image: Image.Image) -> Image.Image:
    # A malformed EXIF block is ignored: the pixels are still the photo as stored. In place:
    # no second copy of the photo.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)
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

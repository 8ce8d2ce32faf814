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
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

# The crop box and the model's preprocessing live in their own modules; imported from here as
# they always were.
from touchstone.bbox import BBox
from touchstone.colour import to_rgb
from touchstone.errors import PhotoError
from touchstone.preprocessing import (  # noqa: F401
    Preprocessing,
    normalize,
    resize_and_crop,
    shorter_side,
    to_model_input,
)

# HEIC is what iPhones send; pillow-heif decodes it through Pillow (registered once, here).
pillow_heif.register_heif_opener()

# 50 megapixels admits every phone camera's full-resolution output (48 MP sensors) and refuses
# decompression bombs long before they allocate memory.
DEFAULT_MAX_PIXELS = 50_000_000
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
# EXIF orientations 5 to 8 turn the photo a quarter: its width and height swap.
ORIENTATION_TAG = 0x0112
SWAPS_AXES = frozenset({5, 6, 7, 8})
_T = TypeVar("_T")


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
    """Decode a photo into an upright RGB image at full size, or raise PhotoError.

    Error codes: `missing_file`, `empty_file`, `not_an_image`, `unsupported_image_format`,
    `too_many_pixels`, `truncated_image`, `unreadable_image`.
    """
    return _from_source(source, lambda stream: _decode(stream, max_pixels))


@dataclass(frozen=True)
class ReducedPhoto:
    """A photo decoded no larger than the model (and the quality checks) need."""

    image: Image.Image  # upright RGB, cropped to the bbox if one was given, `factor` x smaller
    width: int  # the whole photo's upright size at full resolution
    height: int
    factor: int


def decode_reduced(
    source: PhotoSource,
    min_side: int,
    *,
    bbox: BBox | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ReducedPhoto:
    """Decode a photo straight to the smallest size whose shorter side (of the bbox, when one is
    given) is still at least `min_side` pixels. A 12 MP JPEG decodes at 1/8 scale with JPEG's
    DCT scaling (4x faster, 1/64 of the memory); other formats decode whole and are shrunk by an
    integer box filter. Orientation, colour and errors as `decode_photo`, plus `bad_bbox`.

    Training, evaluation, serving and the heatmap all read photos through this, so the model
    sees the same pixels everywhere."""
    return _from_source(source, lambda stream: _decode_reduced(stream, min_side, bbox, max_pixels))


def decode_for_model(
    source: PhotoSource,
    prep: Preprocessing,
    *,
    bbox: BBox | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ReducedPhoto:
    """The photo as a model with this preprocessing reads it, in training, evaluation, serving
    and the heatmap alike: `decode_reduced` down to `shorter_side(prep)`. Its model input is
    `to_model_input(.image, prep)`."""
    return decode_reduced(source, shorter_side(prep), bbox=bbox, max_pixels=max_pixels)


def _from_source(source: PhotoSource, decode: Callable[[BinaryIO], _T]) -> _T:
    if isinstance(source, bytes):
        if not source:
            raise PhotoError("empty_file", "the file is empty (0 bytes)")
        return decode(io.BytesIO(source))
    if hasattr(source, "read"):
        return decode(source)  # type: ignore[arg-type]
    path = Path(source)  # type: ignore[arg-type]
    try:
        if path.stat().st_size == 0:
            raise PhotoError("empty_file", "the file is empty (0 bytes)")
        with path.open("rb") as stream:
            return decode(stream)
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


def reduced_pixels(data: bytes, min_side: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """How many pixels `decode_reduced(data, min_side)` allocates, from the header alone: a
    JPEG only its DCT-scaled size; other formats decode whole before they are reduced, so the
    whole photo and its reduced copy. PhotoError as `decode_photo`."""
    if not data:
        raise PhotoError("empty_file", "the file is empty (0 bytes)")
    with _open(io.BytesIO(data), max_pixels) as image:
        width, height = image.size
        factor = _reduction(image, width, height, min_side)
        reduced = -(-width // factor) * -(-height // factor)
        if image.format in ACCEPTED_FORMATS["JPEG"]:
            return reduced
        return width * height + (reduced if factor > 1 else 0)


def _reduction(image: Image.Image, width: int, height: int, min_side: int) -> int:
    """The factor a photo (or its bbox, `width` x `height`) is decoded smaller by so its
    shorter side stays at least `min_side`; for a JPEG one its DCT can scale by."""
    factor = max(1, min(width, height) // max(1, min_side))
    if image.format in ACCEPTED_FORMATS["JPEG"]:
        return min(8, 1 << (factor.bit_length() - 1))  # the DCT scales by 1/2, 1/4, 1/8
    return factor


def _decode(stream: BinaryIO, max_pixels: int) -> Image.Image:
    image = _open(stream, max_pixels)
    with _decode_slot(), _decoder_errors():
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated formats: the first frame is the photo
        image.load()
        return to_rgb(_apply_orientation(image))


def _decode_reduced(
    stream: BinaryIO, min_side: int, bbox: BBox | None, max_pixels: int
) -> ReducedPhoto:
    image = _open(stream, max_pixels)
    width, height = image.size
    with contextlib.suppress(Exception):  # a malformed EXIF block: the photo as stored
        if image.getexif().get(ORIENTATION_TAG, 1) in SWAPS_AXES:
            width, height = height, width
    if bbox is not None and not bbox.fits(width, height):
        raise PhotoError("bad_bbox", f"bbox {bbox} lies outside the {width}x{height} photo")
    box = (bbox.x0, bbox.y0, bbox.x1, bbox.y1) if bbox else (0, 0, width, height)
    factor = _reduction(image, box[2] - box[0], box[3] - box[1], min_side)
    with _decode_slot(), _decoder_errors():
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if image.format in ACCEPTED_FORMATS["JPEG"]:
            # Pillow takes the largest scale whose factor divides into both sides (rounded
            # down); the decode then has the sides rounded up.
            image.draft(image.mode, (image.width // factor, image.height // factor))
            image.load()
            image = to_rgb(_apply_orientation(image))
        else:
            # Turned and converted before the shrink: a HEIC is stored as the PNG of its upright
            # sRGB pixels, and reducing that must give exactly the pixels the upload was scored on.
            image.load()
            image = to_rgb(_apply_orientation(image))
            if factor > 1:
                image = image.reduce(factor)
    if bbox is not None:
        scale_x, scale_y = image.width / width, image.height / height
        image = image.crop(
            (
                math.floor(box[0] * scale_x),
                math.floor(box[1] * scale_y),
                min(image.width, math.ceil(box[2] * scale_x)),
                min(image.height, math.ceil(box[3] * scale_y)),
            )
        )
    return ReducedPhoto(image, width, height, factor)


@contextlib.contextmanager
def _decoder_errors() -> Iterator[None]:
    try:
        yield
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


def crop_to_bbox(image: Image.Image, bbox: BBox | None) -> Image.Image:
    if bbox is None:
        return image
    if not bbox.fits(*image.size):
        raise PhotoError(
            "bad_bbox", f"bbox {bbox} lies outside the {image.width}x{image.height} photo"
        )
    return image.crop((bbox.x0, bbox.y0, bbox.x1, bbox.y1))

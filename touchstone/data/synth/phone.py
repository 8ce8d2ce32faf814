"""Whole phone photos: the region photographed on a table, at phone resolution, with EXIF.

Members photograph an item on whatever is at hand: the region fills most of a 12-megapixel 4:3
frame, the table shows around it, and the file carries what a phone writes: the make and model,
when and where (GPS) it was taken, the orientation the phone was held in, and a thumbnail. A
share of them are HEIC, as iPhones send.

The service reads the whole frame (it resizes the shorter side and crops the centre square), so
the region is placed to fill most of that square. Everything is made at the region's own
resolution and upscaled once, with fine noise added at full size: a 12 MP frame then costs
little more than its JPEG encoding.
"""

from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from PIL import Image

import touchstone.imaging  # noqa: F401 - registers the HEIF codec with Pillow
from touchstone.data.synth.materials import linear_light, smooth_noise

# Fictional phones: (Make, Model).
PHONES = (("Lumen", "L12 Pro"), ("Lumen", "L13"), ("Orrin", "Ora 5"), ("Haskel", "HV-9"))
# Tables and backdrops members put items on (RGB): oak, walnut, white, linen, slate, black cloth.
BACKDROPS = (
    (176, 128, 84),
    (104, 70, 48),
    (226, 224, 218),
    (205, 196, 178),
    (92, 98, 104),
    (34, 33, 36),
)
# How phones are held: upright (1), turned a quarter right (6) or left (8), upside down (3).
ORIENTATIONS = (1, 6, 8, 3)
ORIENTATION_SHARES = (0.70, 0.20, 0.05, 0.05)
# The region's side as a share of the frame's shorter side: most of the centre square.
COVERAGE = (0.80, 0.92)
THUMBNAIL_SIDE = 160  # the thumbnail's longer side (160 x 120 for a 4:3 frame), as phones write
JPEG_QUALITY = (88, 96)  # drawn from [88, 96): phone cameras' own settings
HEIC_QUALITY = 60  # pillow-heif's scale: about half the JPEG's bytes, as phones' HEIC files
_HEVC = {"preset": "ultrafast"}
# Stored pixels are the upright photo turned the other way: the tag turns them back.
_STORE = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE}
_NOISE_MARGIN = 128
_GRAIN = 1536
_NOISE_SPREAD = 32.0


def pick_orientation(rng: np.random.Generator) -> int:
    """The EXIF orientation of one photo, in ORIENTATION_SHARES."""
    return ORIENTATIONS[int(rng.choice(len(ORIENTATIONS), p=ORIENTATION_SHARES))]


def phone_photo(
    region: np.ndarray,
    rng: np.random.Generator,
    frame: tuple[int, int] = (4032, 3024),
    kind: Literal["jpeg", "heic"] = "jpeg",
    orientation: int = 1,
) -> bytes:
    """The file a phone would upload of `region` (a square uint8 RGB photo of the region) lying
    on a table: `frame` is the upright photo's width x height; the pixels are stored turned so
    that applying `orientation` (1, 3, 6 or 8) gives the upright photo."""
    if orientation != 1 and orientation not in _STORE:
        raise ValueError(f"orientation {orientation}: phones write 1, 3, 6 or 8")
    width, height = frame
    upright = _upright_frame(region, rng, width, height)
    stored = upright if orientation == 1 else cv2.rotate(upright, _STORE[orientation])
    image = Image.fromarray(stored)
    exif = exif_block(rng, image, orientation)
    out = io.BytesIO()
    if kind == "heic":
        # x265's fastest preset: a 12 MP frame took 7 s against the default's 50 s (quality 80,
        # a shared 2-core machine), and HEIC still costs ten JPEGs.
        image.save(out, format="HEIF", quality=HEIC_QUALITY, exif=exif, enc_params=_HEVC)
    else:
        quality = int(rng.integers(*JPEG_QUALITY))
        image.save(out, format="JPEG", quality=quality, exif=exif)
    return out.getvalue()


def _upright_frame(
    region: np.ndarray, rng: np.random.Generator, width: int, height: int
) -> np.ndarray:
    short = min(width, height)
    placed = short * rng.uniform(*COVERAGE)  # the region's side in the frame, in pixels
    # Compose at the region's own resolution (never above the frame's): no detail is lost, and
    # the backdrop costs a fraction of the frame.
    scale = min(1.0, region.shape[0] / placed)
    work_w, work_h = max(8, round(width * scale)), max(8, round(height * scale))
    side = min(round(placed * scale), work_w, work_h)
    canvas = _backdrop(rng, work_w, work_h)
    centre = np.array([work_w, work_h]) / 2 + rng.normal(0, 0.02, 2) * min(work_w, work_h)
    x0 = int(np.clip(round(centre[0] - side / 2), 0, work_w - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, work_h - side))
    patch = cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = _soft_square(side)
    spot = canvas[y0 : y0 + side, x0 : x0 + side]
    spot += alpha * (patch - spot)
    small = np.clip(canvas, 0, 255).astype(np.uint8)
    full = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    # Sensor noise at full resolution, 0.7 to 2 grey levels (phones denoise): a window at a
    # random offset into a fixed noise image, added in place with saturation.
    noise = _noise(width, height)
    dx, dy = int(rng.integers(_NOISE_MARGIN)), int(rng.integers(_NOISE_MARGIN))
    gain = rng.uniform(0.7, 2.0) / _NOISE_SPREAD
    window = noise[dy : dy + height, dx : dx + width]
    cv2.addWeighted(full, 1.0, window, gain, -128.0 * gain, dst=full)
    return full


def _backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A table: a colour, a soft light gradient, broad mottling and a fine grain, float32 RGB."""
    colour = np.asarray(BACKDROPS[int(rng.integers(len(BACKDROPS)))], np.float32)
    colour = colour + rng.normal(0, 6, 3).astype(np.float32)
    # Light and mottling are smooth: made at 1/8 and upscaled. The grain is per pixel.
    side = max(width, height)
    low = max(8, side // 8)
    mottling = smooth_noise(rng, low, low / 6)
    light = linear_light(low, rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.3))
    smooth = cv2.resize(light * (1.0 + 0.04 * mottling), (side, side))[:height, :width]
    shade = cv2.scaleAdd(cv2.multiply(smooth, _grain(rng, width, height)), 0.06, smooth)
    return shade[:, :, None] * colour[None, None, :]


@lru_cache(maxsize=8)
def _soft_square(side: int) -> np.ndarray:
    """1 inside, falling to 0 over the outer 4% of each edge: the region's edge is not a cut."""
    ramp = max(2.0, 0.04 * side)
    distance = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    edge = np.clip(distance / ramp, 0.0, 1.0)
    return (edge[:, None] * edge[None, :])[:, :, None]


@lru_cache(maxsize=1)
def _grain_field() -> np.ndarray:
    """A table's fine grain, unit spread and a pixel or two wide, made once per process."""
    field = np.random.default_rng(0x6A41).standard_normal((_GRAIN, _GRAIN), np.float32)
    return cv2.GaussianBlur(field, (3, 3), 0.8) / 0.39  # the blur leaves a spread of 0.39


def _grain(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A window of the grain field at a random offset, tiled for canvases larger than it."""
    field = _grain_field()
    if width > _GRAIN // 2 or height > _GRAIN // 2:
        field = np.tile(field, (-(-2 * height // _GRAIN), -(-2 * width // _GRAIN)))
    dy = int(rng.integers(field.shape[0] - height + 1))
    dx = int(rng.integers(field.shape[1] - width + 1))
    return field[dy : dy + height, dx : dx + width]


@lru_cache(maxsize=2)
def _noise(width: int, height: int) -> np.ndarray:
    """Gaussian noise around 128 (spread _NOISE_SPREAD), uint8, a margin larger than the frame:
    made once per process and frame size, then read through windows."""
    rng = np.random.default_rng(0x5E45)
    shape = (height + _NOISE_MARGIN, width + _NOISE_MARGIN, 3)
    noise = rng.standard_normal(shape, dtype=np.float32) * _NOISE_SPREAD + 128.0
    return np.clip(noise, 0, 255).astype(np.uint8)


def exif_block(rng: np.random.Generator, stored: Image.Image, orientation: int) -> bytes:
    """The APP1 EXIF a phone writes (b"Exif\\0\\0" and a TIFF structure): IFD0 with make, model
    and orientation, the Exif IFD with when it was taken, a GPS IFD, and IFD1 with a JPEG
    thumbnail of the stored pixels. Pillow writes no IFD1, so the structure is built here."""
    make, model = PHONES[int(rng.integers(len(PHONES)))]
    taken = datetime(2024, 1, 1) + timedelta(seconds=int(rng.integers(0, 2 * 365 * 86400)))
    stamp = taken.strftime("%Y:%m:%d %H:%M:%S")
    latitude, longitude = rng.uniform(36.0, 58.0), rng.uniform(-9.0, 24.0)  # somewhere in Europe
    altitude = rng.uniform(0.0, 400.0)
    ratio = THUMBNAIL_SIDE / max(stored.size)
    size = (max(1, round(stored.width * ratio)), max(1, round(stored.height * ratio)))
    thumb = stored.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    thumb_out = io.BytesIO()
    thumb.save(thumb_out, format="JPEG", quality=80)
    thumbnail = thumb_out.getvalue()
    dpi = [(72, 1)]
    ifd0 = [
        (0x010F, _ASCII, make),
        (0x0110, _ASCII, model),
        (0x0112, _SHORT, [orientation]),
        (0x011A, _RATIONAL, dpi),
        (0x011B, _RATIONAL, dpi),
        (0x0128, _SHORT, [2]),  # inches
        (0x0131, _ASCII, f"{model} 3.1"),
        (0x0132, _ASCII, stamp),
    ]
    exif_ifd = [
        (0x829A, _RATIONAL, [(1, int(rng.choice([30, 60, 120, 250])))]),  # exposure time
        (0x9000, _UNDEFINED, b"0232"),
        (0x9003, _ASCII, stamp),
        (0x9004, _ASCII, stamp),
        (0x920A, _RATIONAL, [(26, 10)]),  # focal length, mm
        (0xA002, _LONG, [stored.width]),
        (0xA003, _LONG, [stored.height]),
    ]
    gps_ifd = [
        (0x0000, _BYTE, bytes([2, 3, 0, 0])),
        (0x0001, _ASCII, "N"),
        (0x0002, _RATIONAL, _degrees(latitude)),
        (0x0003, _ASCII, "E" if longitude >= 0 else "W"),
        (0x0004, _RATIONAL, _degrees(abs(longitude))),
        (0x0005, _BYTE, bytes([0])),  # above sea level
        (0x0006, _RATIONAL, [(round(altitude * 100), 100)]),
    ]
    ifd1 = [
        (0x0103, _SHORT, [6]),  # JPEG-compressed thumbnail
        (0x011A, _RATIONAL, dpi),
        (0x011B, _RATIONAL, dpi),
        (0x0128, _SHORT, [2]),
        (0x0201, _LONG, [0]),  # its offset and length, filled in below
        (0x0202, _LONG, [len(thumbnail)]),
    ]
    # Layout: header, IFD0, Exif IFD, GPS IFD, IFD1, thumbnail; each IFD's size is known
    # before the offsets that point at the others are.
    ifd0 += [(0x8769, _LONG, [0]), (0x8825, _LONG, [0])]
    at_exif = 8 + _ifd_size(ifd0)
    at_gps = at_exif + _ifd_size(exif_ifd)
    at_ifd1 = at_gps + _ifd_size(gps_ifd)
    at_thumb = at_ifd1 + _ifd_size(ifd1)
    ifd0[-2:] = [(0x8769, _LONG, [at_exif]), (0x8825, _LONG, [at_gps])]
    ifd1[4] = (0x0201, _LONG, [at_thumb])
    tiff = b"II*\x00" + struct.pack("<I", 8)
    tiff += _ifd(ifd0, 8, at_ifd1)
    tiff += _ifd(exif_ifd, at_exif, 0)
    tiff += _ifd(gps_ifd, at_gps, 0)
    tiff += _ifd(ifd1, at_ifd1, 0)
    return b"Exif\x00\x00" + tiff + thumbnail


_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 1, 2, 3, 4, 5, 7
_Entry = tuple[int, int, object]


def _degrees(value: float) -> list[tuple[int, int]]:
    """Degrees, minutes and seconds as EXIF writes a GPS coordinate."""
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return [(degrees, 1), (minutes, 1), (round(seconds * 100), 100)]


def _payload(kind: int, value: object) -> tuple[int, bytes]:
    """(count, bytes) of one entry's value, little-endian."""
    if kind == _ASCII:
        data = str(value).encode("ascii") + b"\x00"
        return len(data), data
    if kind in (_BYTE, _UNDEFINED):
        data = bytes(value)  # type: ignore[call-overload]
        return len(data), data
    values = list(value)  # type: ignore[call-overload]
    if kind == _RATIONAL:
        return len(values), b"".join(struct.pack("<II", n, d) for n, d in values)
    code = "<H" if kind == _SHORT else "<I"
    return len(values), b"".join(struct.pack(code, v) for v in values)


def _ifd_size(entries: list[_Entry]) -> int:
    extra = 0
    for _tag, kind, value in entries:
        data = _payload(kind, value)[1]
        if len(data) > 4:
            extra += len(data) + len(data) % 2
    return 2 + 12 * len(entries) + 4 + extra


def _ifd(entries: list[_Entry], offset: int, next_ifd: int) -> bytes:
    """One IFD at `offset` in the TIFF structure, values over 4 bytes placed right after it."""
    entries = sorted(entries, key=lambda entry: entry[0])
    data_at = offset + 2 + 12 * len(entries) + 4
    table, data = struct.pack("<H", len(entries)), b""
    for tag, kind, value in entries:
        count, payload = _payload(kind, value)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", data_at + len(data))
            data += payload + b"\x00" * (len(payload) % 2)
        table += struct.pack("<HHI", tag, kind, count) + field
    return table + struct.pack("<I", next_ifd) + data

"""Photos as phones send them: 12 megapixels, textured at every scale, turned by EXIF
orientation, with GPS, a thumbnail in EXIF's IFD1 and an ICC profile (JPEG), or HEIC."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms, ImageFilter

# The sensor's size: phones store 4032x3024 and say by EXIF orientation how to turn it.
SENSOR = (4032, 3024)
GPS_MARKER = "TOUCHSTONE-PHONE-GPS"
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
_THUMBNAIL_TAGS = (0x0201, 0x0202)  # JPEGInterchangeFormat, JPEGInterchangeFormatLength


def phone_scene(seed: int = 0, size: tuple[int, int] = SENSOR, blur: float = 0) -> Image.Image:
    """Leather-brown grain at scales from 2 to 256 px, like a close photo of a bag: detail at
    every scale, so it stays textured when decoded at 1/8. `blur`: a Gaussian radius in full
    resolution pixels, a photo out of focus."""
    rng = np.random.default_rng(seed)
    width, height = size
    grey = np.full((height, width), 120.0, np.float32)
    for scale, strength in ((256, 30), (64, 22), (16, 16), (4, 10), (2, 6)):
        small = rng.normal(0, strength, (-(-height // scale), -(-width // scale)))
        layer = Image.fromarray(small.astype(np.float32), "F").resize(
            (width, height), Image.Resampling.BICUBIC
        )
        grey += np.asarray(layer)
    tint = np.asarray([1.15, 0.9, 0.7], np.float32)  # brown
    pixels = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur else image


def phone_exif(orientation: int, thumbnail: Image.Image) -> bytes:
    """An EXIF block as a phone writes it: orientation and GPS in IFD0, and a JPEG thumbnail in
    IFD1 (which Pillow does not write: appended by hand)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TouchstonePhone"  # Make
    exif[0x8825] = {  # the GPS IFD
        0x0001: "N",
        0x0002: (31.0, 14.0, 3.5),
        0x0003: "E",
        0x0004: (121.0, 28.0, 10.0),
        0x0012: GPS_MARKER,  # GPSMapDatum
    }
    block = bytearray(exif.tobytes())
    tiff = 6  # after b"Exif\0\0": offsets count from the TIFF header
    order = "<" if block[tiff : tiff + 2] == b"II" else ">"
    ifd0 = struct.unpack_from(order + "I", block, tiff + 4)[0]
    entries = struct.unpack_from(order + "H", block, tiff + ifd0)[0]
    next_pointer = tiff + ifd0 + 2 + 12 * entries
    buffer = io.BytesIO()
    thumbnail.save(buffer, "JPEG", quality=80)
    thumb = buffer.getvalue()
    if len(block) % 2:
        block += b"\0"
    ifd1 = len(block) - tiff
    thumb_at = ifd1 + 2 + 2 * 12 + 4
    struct.pack_into(order + "I", block, next_pointer, ifd1)
    block += struct.pack(order + "H", 2)
    block += struct.pack(order + "HHII", _THUMBNAIL_TAGS[0], 4, 1, thumb_at)
    block += struct.pack(order + "HHII", _THUMBNAIL_TAGS[1], 4, 1, len(thumb))
    block += struct.pack(order + "I", 0) + thumb
    return bytes(block)


def phone_jpeg(
    seed: int = 0, orientation: int = 6, blur: float = 0, size: tuple[int, int] = SENSOR
) -> bytes:
    """A phone's JPEG: the sensor's pixels as stored, EXIF (orientation, GPS, thumbnail), ICC."""
    scene = phone_scene(seed, size, blur)
    thumbnail = scene.resize((160, 120))
    buffer = io.BytesIO()
    scene.save(
        buffer,
        "JPEG",
        quality=90,
        exif=phone_exif(orientation, thumbnail),
        icc_profile=SRGB_ICC,
    )
    return buffer.getvalue()


def phone_heic(seed: int = 0, orientation: int = 6, size: tuple[int, int] = SENSOR) -> bytes:
    """An iPhone's HEIC: the sensor's pixels, EXIF orientation and GPS."""
    import pillow_heif

    scene = phone_scene(seed, size)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {0x0001: "N", 0x0002: (31.0, 14.0, 3.5), 0x0012: GPS_MARKER}
    heif = pillow_heif.from_pillow(scene)
    buffer = io.BytesIO()
    # x265's fastest preset: the slow default takes ~40 s a 12 MP photo on a small machine.
    heif.save(buffer, quality=50, exif=exif.tobytes(), enc_params={"preset": "ultrafast"})
    return buffer.getvalue()


def upright_size(orientation: int, size: tuple[int, int] = SENSOR) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size

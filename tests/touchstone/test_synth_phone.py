"""Phone-like synthetic photos: whole frames with EXIF (GPS, thumbnail, orientation), a share
of HEIC, upright once decoded, pointed at by the manifest, the same bytes for the same config."""

from __future__ import annotations

import hashlib
import io
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from pydantic import ValidationError

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset
from touchstone.data.synth.phone import COVERAGE, phone_photo
from touchstone.data.validation import validate_manifest
from touchstone.imaging import decode_photo, decode_reduced, sniff_format

SMALL = (640, 480)


def _region(side: int = 192) -> np.ndarray:
    """A region no turn leaves unchanged: red top half, blue bottom half, a green left third."""
    region = np.zeros((side, side, 3), np.uint8)
    region[: side // 2] = (220, 30, 30)
    region[side // 2 :] = (30, 30, 220)
    region[:, : side // 3] = (30, 200, 30)
    return region


def _centre(image: Image.Image, share: float) -> np.ndarray:
    """The centre square of `share` of the shorter side, at 48 x 48."""
    side = round(min(image.size) * share)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((48, 48))
    return np.asarray(square, np.float32)


def _thumbnail(data: bytes) -> Image.Image:
    """The JPEG thumbnail in EXIF's IFD1, cut out of the TIFF structure by its offsets."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        block = image.info["exif"]
    tiff = block[6:] if block.startswith(b"Exif\x00\x00") else block
    ifd1 = exif.get_ifd(ExifTags.IFD.IFD1)
    start, length = ifd1[0x0201], ifd1[0x0202]
    assert ifd1[0x0103] == 6  # JPEG-compressed
    return Image.open(io.BytesIO(tiff[start : start + length]))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_exif_carries_gps_a_thumbnail_and_the_planned_orientation(orientation: int) -> None:
    data = phone_photo(_region(), np.random.default_rng(1), SMALL, "jpeg", orientation)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        stored = image.size
        exif = image.getexif()
    turned = orientation in (6, 8)
    assert stored == ((480, 640) if turned else SMALL)
    assert exif[0x0112] == orientation
    assert exif[0x010F] and exif[0x0110]  # make and model
    assert len(exif.get_ifd(ExifTags.IFD.Exif)[0x9003]) == 19  # DateTimeOriginal
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert gps[1] == "N" and 36 <= gps[2][0] <= 58
    assert gps[3] in "EW" and len(gps[4]) == 3 and gps[6] >= 0
    thumb = _thumbnail(data)
    assert thumb.format == "JPEG"
    assert thumb.size == ((120, 160) if turned else (160, 120))  # of the stored pixels


@pytest.mark.parametrize("kind", ["jpeg", "heic"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_region_is_upright_after_orientation(kind: str, orientation: int) -> None:
    region = _region()
    data = phone_photo(region, np.random.default_rng(2), SMALL, kind, orientation)  # type: ignore[arg-type]
    photo = decode_photo(data)
    assert photo.size == SMALL
    # The inner part of the region, safely inside it wherever the jitter put it.
    seen = _centre(photo, COVERAGE[0] * 0.7)
    expected = _centre(Image.fromarray(region), 0.7)
    upright = np.abs(seen - expected).mean()
    turned = np.abs(seen - np.rot90(expected)).mean()
    assert upright < 20 < turned


def test_heic_photos_are_heic_with_exif() -> None:
    data = phone_photo(_region(), np.random.default_rng(3), SMALL, "heic", 6)
    assert sniff_format(data[:64]) == "HEIF"
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[1] == "N"
    assert exif[0x010F]


def test_a_12_megapixel_photo_decodes_upright_and_reduced() -> None:
    data = phone_photo(_region(448), np.random.default_rng(4), (4032, 3024), "jpeg", 6)
    assert 0.3e6 < len(data) < 8e6
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (3024, 4032)  # stored as the sensor was held
    assert decode_photo(data).size == (4032, 3024)
    reduced = decode_reduced(data, 183)
    assert (reduced.width, reduced.height, reduced.factor) == (4032, 3024, 8)
    assert reduced.image.size == (504, 378)


def test_the_orientation_must_be_one_a_phone_writes() -> None:
    with pytest.raises(ValueError, match="orientation 5"):
        phone_photo(_region(), np.random.default_rng(0), SMALL, "jpeg", 5)


def test_the_frame_must_be_one_the_service_accepts() -> None:
    with pytest.raises(ValidationError, match="frame"):
        SynthConfig(photo="phone", frame=(32, 24))
    with pytest.raises(ValidationError, match="frame"):
        SynthConfig(photo="phone", frame=(10_000, 8_000))


def _fingerprint(manifest: Path) -> str:
    digest = hashlib.sha256(manifest.read_bytes())
    for record in load_manifest(manifest).records:
        digest.update(record.path.read_bytes())
    return digest.hexdigest()


PHONE_SET = SynthConfig(items=6, seed=2, size=96, photo="phone", frame=(320, 240), heic_share=0.3)


def test_a_phone_data_set_points_at_its_files_and_is_valid(tmp_path: Path) -> None:
    manifest_path = generate_dataset(tmp_path, PHONE_SET, workers=1, show_progress=False)
    manifest = load_manifest(manifest_path)
    assert validate_manifest(manifest, show_progress=False).issues == []
    kinds: Counter[str] = Counter()
    orientations: Counter[int] = Counter()
    for record in manifest.records:
        data = record.path.read_bytes()
        assert record.path == (tmp_path / record.image).resolve()
        kind = sniff_format(data[:64])
        assert record.path.suffix == {"JPEG": ".jpg", "HEIF": ".heic"}[kind]  # type: ignore[index]
        kinds[record.path.suffix] += 1
        if kind == "JPEG":
            with Image.open(io.BytesIO(data)) as image:
                orientations[image.getexif()[0x0112]] += 1
        assert decode_photo(data).size == (320, 240)
    assert kinds[".heic"] > 0 and kinds[".jpg"] > kinds[".heic"]
    assert orientations[1] > 0 and set(orientations) - {1}  # some photos were taken turned
    generator = manifest.info.generator
    assert generator is not None and generator["photo"] == "phone"
    assert generator["frame"] == [320, 240]


def test_the_same_phone_config_gives_the_same_bytes(tmp_path: Path) -> None:
    one = generate_dataset(tmp_path / "a", PHONE_SET, workers=1, show_progress=False)
    two = generate_dataset(tmp_path / "b", PHONE_SET, workers=2, show_progress=False)
    assert _fingerprint(one) == _fingerprint(two)
    other = PHONE_SET.model_copy(update={"seed": 3})
    three = generate_dataset(tmp_path / "c", other, workers=1, show_progress=False)
    assert _fingerprint(three) != _fingerprint(one)


def test_thumbnail_offsets_point_inside_the_exif_block() -> None:
    """The hand-built TIFF structure: IFD0 links to IFD1, every offset inside the block."""
    data = phone_photo(_region(), np.random.default_rng(5), SMALL, "jpeg", 1)
    with Image.open(io.BytesIO(data)) as image:
        block = image.info["exif"]
    tiff = block[6:]
    assert tiff[:4] == b"II*\x00"
    ifd0 = struct.unpack_from("<I", tiff, 4)[0]
    entries = struct.unpack_from("<H", tiff, ifd0)[0]
    ifd1 = struct.unpack_from("<I", tiff, ifd0 + 2 + 12 * entries)[0]
    assert 0 < ifd1 < len(tiff)
    assert tiff[-2:] == b"\xff\xd9"  # the thumbnail ends the block

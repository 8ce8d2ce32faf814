"""Decoding must be robust and identical everywhere: odd images are written here, in the test."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from touchstone.imaging import (
    BBox,
    PhotoError,
    Preprocessing,
    crop_to_bbox,
    decode_photo,
    resize_and_crop,
    to_model_input,
)


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to well under a megabyte."""
    row = b"\x00" + bytes((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000))
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    for source in (bomb, path):
        with pytest.raises(PhotoError) as caught:
            decode_photo(source)
        assert caught.value.code == "too_many_pixels"


def test_pixel_limit_is_ours_not_pillows() -> None:
    data = _save(Image.new("RGB", (40, 30), "white"), "PNG")
    assert decode_photo(data, max_pixels=1200).size == (40, 30)
    with pytest.raises(PhotoError) as caught:
        decode_photo(data, max_pixels=1199)
    assert caught.value.code == "too_many_pixels"
    assert "40x30" in caught.value.message


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    image = decode_photo(_save(cmyk, "JPEG", quality=95))
    assert image.mode == "RGB"
    red, green, blue = np.asarray(image)[8, 8].astype(int)
    assert red > 230 and green < 30 and blue < 30


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.zeros((8, 8), np.uint16)
    values[:, :4] = 65535
    values[:, 4:] = 32896  # 128 * 257
    source = Image.fromarray(values)
    data = _save(source, "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    pixels = np.asarray(decode_photo(data))
    assert pixels.shape == (8, 8, 3)
    assert (pixels[:, :4] == 255).all()
    assert (pixels[:, 4:] == 128).all()  # Pillow's own convert would clip this to 255


def test_palette_png_with_transparency_composites_over_white() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 200, 20, 20] + [0] * 762)
    palette.paste(1, (5, 0, 10, 10))
    data = _save(palette, "PNG", transparency=0)
    pixels = np.asarray(decode_photo(data))
    assert pixels[5, 2].tolist() == [255, 255, 255]  # transparent index: white, not black
    assert pixels[5, 7].tolist() == [200, 20, 20]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_over_white(mode: str) -> None:
    colour = (0, 0, 0, 0) if mode == "RGBA" else (0, 0)
    data = _save(Image.new(mode, (4, 4), colour), "PNG")
    assert np.asarray(decode_photo(data)).min() == 255


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to display
    image = decode_photo(_save(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (20, 40)
    top, bottom = np.asarray(image)[2, 10], np.asarray(image)[37, 10]
    assert top[0] > 200 and top[2] < 60  # the left edge is now the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _save(noisy, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError) as caught:
        decode_photo(path)
    assert caught.value.code == "truncated_image"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    for source in (path, b""):
        with pytest.raises(PhotoError) as caught:
            decode_photo(source)
        assert caught.value.code == "empty_file"


def test_not_an_image_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    with pytest.raises(PhotoError) as caught:
        decode_photo(text)
    assert caught.value.code == "not_an_image"
    with pytest.raises(PhotoError) as caught:
        decode_photo(tmp_path / "absent.jpg")
    assert caught.value.code == "missing_file"


def test_broken_icc_profile_falls_back_to_plain_conversion() -> None:
    data = _save(Image.new("RGB", (4, 4), (10, 200, 30)), "PNG", icc_profile=b"not a profile")
    assert np.asarray(decode_photo(data))[0, 0].tolist() == [10, 200, 30]


def test_decoding_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    data = _save(Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)), "JPEG")
    assert np.array_equal(np.asarray(decode_photo(data)), np.asarray(decode_photo(data)))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "not a number"),
        ("0,0,1.5,2", "whole pixel"),
        ("-1,0,5,5", "negative"),
        ("5,0,5,5", "empty"),
        ("0,9,5,5", "empty"),
    ],
)
def test_bbox_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        BBox.parse(text)


def test_crop_to_bbox() -> None:
    image = Image.new("RGB", (50, 40))
    assert crop_to_bbox(image, BBox.parse("10, 5, 30, 25")).size == (20, 20)
    with pytest.raises(PhotoError) as caught:
        crop_to_bbox(image, BBox.parse("10,5,60,25"))
    assert caught.value.code == "bad_bbox"


def test_preprocessing_uses_the_models_normalisation() -> None:
    prep = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    tensor = to_model_input(Image.new("RGB", (64, 48), (255, 0, 128)), prep)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    assert np.allclose(tensor[0], 1.0) and np.allclose(tensor[1], -1.0)
    assert np.allclose(tensor[2], 128 / 255 * 2 - 1, atol=1e-6)
    imagenet = Preprocessing(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert not np.allclose(to_model_input(Image.new("RGB", (8, 8), "red"), imagenet)[0], 1.0)


def test_resize_and_crop_keeps_aspect_then_centres() -> None:
    prep = Preprocessing(input_size=20, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.8)
    wide = Image.new("RGB", (100, 50))
    assert resize_and_crop(wide, prep).size == (20, 20)
    tall = Image.new("RGB", (30, 90))
    assert resize_and_crop(tall, prep).size == (20, 20)

"""Decoding must be robust and identical everywhere: odd images are written here, in the test."""

import io
import os
import struct
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from touchstone import imaging
from touchstone.imaging import (
    BBox,
    PhotoError,
    Preprocessing,
    crop_to_bbox,
    decode_photo,
    resize_and_crop,
    sniff_format,
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


# -- hostile input: a corpus made here, shared with tests/serving/test_hostile_input.py ------


def _textured(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    pixels = np.clip(ramp + rng.normal(0, 30, ramp.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def sample_photos() -> dict[str, bytes]:
    """Small real photos in each accepted format, textured so that every byte matters."""
    image = _textured(24, 16)
    return {
        "jpeg": _save(image, "JPEG", quality=90),
        "png": _save(image, "PNG"),
        "webp": _save(image, "WEBP", quality=80),
        "heic": _save(image, "HEIF", quality=80),
    }


def _png_raw(width: int, height: int, depth: int, colour: int, row: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = zlib.compress((b"\x00" + row) * height)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def odd_photos() -> dict[str, bytes]:
    """Accepted formats in odd modes and sizes: each is a photo and must decode."""
    image = _textured(24, 16)
    exif = Image.Exif()
    exif[0x0112] = 8
    frames = [_textured(24, 16), _textured(16, 24).resize((24, 16))]
    return {
        "16-bit grey PNG": _save(Image.fromarray(np.full((16, 24), 40000, np.uint16)), "PNG"),
        "16-bit RGB PNG": _png_raw(24, 16, 16, 2, bytes(range(144))),
        "CMYK JPEG": _save(image.convert("CMYK"), "JPEG"),
        "grey JPEG": _save(image.convert("L"), "JPEG"),
        "progressive JPEG": _save(image, "JPEG", progressive=True),
        "rotated JPEG": _save(image, "JPEG", exif=exif.tobytes()),
        "palette PNG": _save(image.convert("P"), "PNG", transparency=3),
        "LA PNG": _save(image.convert("LA"), "PNG"),
        "1-bit PNG": _save(image.convert("1"), "PNG"),
        "RGBA WebP": _save(image.convert("RGBA"), "WEBP", lossless=True),
        "animated WebP": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "RGBA HEIC": _save(image.convert("RGBA"), "HEIF"),
        "1x1 JPEG": _save(Image.new("RGB", (1, 1), "red"), "JPEG"),
        "1x1 PNG": _save(Image.new("RGB", (1, 1), "red"), "PNG"),
    }


def oversized_photos() -> dict[str, bytes]:
    """Accepted formats whose header declares far more pixels than the limit."""
    jpeg = bytearray(_save(_textured(24, 16), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return {
        "PNG bomb": png_bomb(),
        "PNG declaring 100000x100000": _png_raw(100_000, 100_000, 8, 2, b""),
        "JPEG declaring 60000x60000": bytes(jpeg),
    }


def other_formats() -> dict[str, bytes]:
    """Images in formats phones do not send: refused unread."""
    image = _textured(16, 16)
    files = {
        fmt: _save(image.convert(mode), fmt)
        for fmt, mode in [
            ("TIFF", "RGB"),
            ("BMP", "RGB"),
            ("GIF", "P"),
            ("ICO", "RGBA"),
            ("ICNS", "RGBA"),
            ("DDS", "RGBA"),
            ("SGI", "RGB"),
            ("QOI", "RGB"),
            ("JPEG2000", "RGB"),
            ("AVIF", "RGB"),
            ("PCX", "RGB"),
            ("PPM", "RGB"),
            ("XBM", "1"),
        ]
    }
    files["multi-page TIFF"] = _save(image, "TIFF", save_all=True, append_images=[image])
    return files


def hostile_corpus(every: int = 1, flips: int = 48) -> list[tuple[str, bytes]]:
    """Corrupt variants of the sample photos: every `every`-th truncation point, and `flips`
    single-bit flips and as many overwritten runs of bytes in each, at seeded positions."""
    rng = np.random.default_rng(12)
    corpus = []
    for name, data in sample_photos().items():
        for end in range(1, len(data), every):
            corpus.append((f"{name} cut at {end}", data[:end]))
        for _ in range(flips):
            spot = int(rng.integers(len(data)))
            flipped = bytearray(data)
            flipped[spot] ^= 1 << int(rng.integers(8))
            corpus.append((f"{name} bit flip at {spot}", bytes(flipped)))
            run = bytearray(data)
            length = int(rng.integers(1, 16))
            run[spot : spot + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            corpus.append((f"{name} {length} random bytes at {spot}", bytes(run)))
    return corpus


@pytest.mark.parametrize("name", sorted(sample_photos()))
def test_each_accepted_format_decodes(name: str) -> None:
    image = decode_photo(sample_photos()[name])
    assert image.mode == "RGB" and image.size == (24, 16)
    original = np.asarray(_textured(24, 16), np.int16)
    # Lossy codecs at this size blur the noise; a wrong decode would be off by ~85 on average.
    assert np.abs(np.asarray(image, np.int16) - original).mean() < 25


def test_odd_modes_and_sizes_decode() -> None:
    for name, data in odd_photos().items():
        image = decode_photo(data)
        assert image.mode == "RGB", name
    assert decode_photo(odd_photos()["rotated JPEG"]).size == (16, 24)


def test_other_formats_are_refused_from_their_first_bytes() -> None:
    for name, data in other_formats().items():
        with pytest.raises(PhotoError) as caught:
            decode_photo(data)
        assert caught.value.code == "unsupported_image_format", name
    with pytest.raises(PhotoError) as caught:
        decode_photo(b"GIF89a" + bytes(100))  # refused by its signature, never parsed
    assert caught.value.code == "unsupported_image_format"


def test_oversized_headers_are_refused_before_decoding() -> None:
    for name, data in oversized_photos().items():
        with pytest.raises(PhotoError) as caught:
            decode_photo(data)
        assert caught.value.code == "too_many_pixels", name


def test_corrupt_photos_raise_only_photo_errors() -> None:
    """Every truncation point and some hundreds of corruptions: a photo or a PhotoError."""
    unexpected = []
    for name, data in hostile_corpus():
        try:
            assert decode_photo(data).mode == "RGB"
        except PhotoError:
            pass
        except Exception as exc:  # the point: nothing else may escape
            unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not unexpected, "\n".join(unexpected[:20])


@pytest.mark.parametrize(
    ("name", "kind"),
    [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("heic", "HEIF")],
)
def test_formats_are_told_from_their_first_bytes(name: str, kind: str) -> None:
    assert sniff_format(sample_photos()[name][:64]) == kind


def test_heif_brands_and_not_avif() -> None:
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        body = major + bytes(4) + b"".join(compatible)
        return struct.pack(">I", 8 + len(body)) + b"ftyp" + body

    assert sniff_format(ftyp(b"mif1", b"mif1", b"heic")) == "HEIF"  # some Android phones
    assert sniff_format(ftyp(b"heic", b"mif1", b"miaf")) == "HEIF"  # iPhones
    assert sniff_format(ftyp(b"avif", b"mif1", b"miaf")) is None
    assert sniff_format(_save(_textured(16, 16), "AVIF")[:64]) is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


def test_sixteen_bit_photos_are_converted_without_a_float_copy() -> None:
    width, height = 2000, 1500
    ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
    data = _save(Image.fromarray(ramp), "PNG")
    tracemalloc.start()  # sees numpy's and Python's allocations, not Pillow's own
    try:
        image = decode_photo(data)
        peak = tracemalloc.get_traced_memory()[1] / (width * height)
    finally:
        tracemalloc.stop()
    assert image.getpixel((width - 1, height - 1)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    # A float64 copy alone would take 8 bytes a pixel; the 8-bit result takes 1.
    assert peak < 2, f"{peak:.1f} bytes a pixel"


def test_decodes_wait_for_a_free_slot_but_refusals_do_not() -> None:
    data = sample_photos()["png"]
    imaging.set_decode_slots(1)
    try:
        decoded, refused = threading.Event(), threading.Event()

        def refuse_bomb() -> None:
            with pytest.raises(PhotoError):
                decode_photo(png_bomb())
            refused.set()

        with imaging._decode_slot():  # the only slot, taken here
            threading.Thread(target=lambda: decode_photo(data) and decoded.set()).start()
            threading.Thread(target=refuse_bomb).start()
            assert refused.wait(10), "a photo refused from its header waited for a slot"
            assert not decoded.wait(0.5), "a decode ran while the only slot was taken"
        assert decoded.wait(10)
    finally:
        imaging.set_decode_slots(imaging.default_decode_slots())


def test_decode_slots_fit_memory_and_cores() -> None:
    assert 1 <= imaging.default_decode_slots() <= (os.cpu_count() or 1)
    assert imaging.default_decode_slots(max_pixels=10**15) == 1  # never none
    assert imaging.decode_slots() >= 1


def test_reduced_pixels_says_what_the_reduced_decode_allocates() -> None:
    """From the header alone: a JPEG decodes only its DCT-scaled pixels; a PNG decodes whole,
    then its reduced copy."""
    from touchstone.imaging import decode_reduced, reduced_pixels

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    jpeg, png = _save(image, "JPEG", quality=90), _save(image, "PNG")
    for side, factor in ((40, 4), (80, 2), (300, 1), (10, 8)):
        reduced = decode_reduced(jpeg, side)
        assert reduced.factor == factor
        assert reduced_pixels(jpeg, side) == reduced.image.width * reduced.image.height
        assert reduced.image.width == -(-400 // factor)
    assert reduced_pixels(png, 300) == 400 * 300
    assert reduced_pixels(png, 100) == 400 * 300 + 134 * 100
    assert decode_reduced(png, 100).image.size == (134, 100)
    with pytest.raises(PhotoError) as refused:
        reduced_pixels(jpeg, 10, max_pixels=1000)
    assert refused.value.code == "too_many_pixels"

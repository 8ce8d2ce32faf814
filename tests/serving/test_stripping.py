"""Metadata stripping: the stored photo decodes to the uploaded pixels, and nothing that
identifies the member or the phone is left in it."""

import hashlib
import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from serving.stripping import orientation_exif, strip_metadata
from touchstone.imaging import PhotoError, decode_photo, decode_reduced

GPS_MARKER = "TOUCHSTONE-GPS-MARKER"
DESCRIPTION_MARKER = "TOUCHSTONE-EXIF-MARKER"
THUMBNAIL_MARKER = b"TOUCHSTONE-THUMBNAIL-MARKER"
XMP_MARKER = b"TOUCHSTONE-XMP-MARKER"
IPTC_MARKER = b"TOUCHSTONE-IPTC-MARKER"
COMMENT_MARKER = b"TOUCHSTONE-COMMENT-MARKER"
MAKER_MARKER = b"TOUCHSTONE-MAKER-MARKER"
TRAILER_MARKER = b"TOUCHSTONE-TRAILER-MARKER"
MARKERS = (
    GPS_MARKER.encode(),
    DESCRIPTION_MARKER.encode(),
    THUMBNAIL_MARKER,
    XMP_MARKER,
    IPTC_MARKER,
    COMMENT_MARKER,
    MAKER_MARKER,
    TRAILER_MARKER,
)
# Built once: a profile records its creation time.
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
ORIENTATION_ONLY = {ExifTags.Base.Orientation: 6}


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _photo(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    """Texture (noise) on a gradient: what a compressor cannot flatten away."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 55, (height, width, 3), dtype=np.uint8)
    return Image.fromarray((ramp + noise).astype(np.uint8))


def _exif(description: str = DESCRIPTION_MARKER, orientation: int | None = 6) -> bytes:
    """A phone's EXIF: orientation, a description, GPS, maker notes and, in IFD1, a thumbnail
    (a JPEG of its own, with a marker in its comment)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.ImageDescription] = description
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (31.0, 14.0, 3.5), 0x12: GPS_MARKER}
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.MakerNote: MAKER_MARKER}
    tiff = bytearray(exif.tobytes()[6:])
    # IFD1 (the thumbnail's) after everything Pillow wrote, chained from IFD0.
    order = ">" if tiff[:2] == b"MM" else "<"
    entries = int.from_bytes(tiff[8:10], "big" if order == ">" else "little")
    thumbnail = _save(_photo(16, 12), "JPEG", comment=THUMBNAIL_MARKER)
    ifd1 = len(tiff) + len(tiff) % 2
    tiff += b"\x00" * (len(tiff) % 2)
    start = ifd1 + 2 + 2 * 12 + 4
    tiff += struct.pack(f"{order}H", 2)
    tiff += struct.pack(f"{order}HHII", 0x0201, 4, 1, start)  # JPEGInterchangeFormat
    tiff += struct.pack(f"{order}HHII", 0x0202, 4, 1, len(thumbnail))  # ...Length
    tiff += struct.pack(f"{order}I", 0) + thumbnail
    tiff[10 + 12 * entries : 14 + 12 * entries] = struct.pack(f"{order}I", ifd1)
    return b"Exif\x00\x00" + bytes(tiff)


def _xmp(orientation: int | None = None) -> bytes:
    turn = f' tiff:Orientation="{orientation}"' if orientation else ""
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
        + turn.encode()
        + b">"
        + XMP_MARKER
        + b"</rdf:Description></x:xmpmeta>"
    )


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


IPTC = _jpeg_segment(
    0xED,
    b"Photoshop 3.0\x00"
    + b"8BIM\x04\x04\x00\x00"
    + struct.pack(">I", 5 + len(IPTC_MARKER))
    + b"\x1c\x02\x78"
    + struct.pack(">H", len(IPTC_MARKER))
    + IPTC_MARKER
    + b"\x00" * (len(IPTC_MARKER) % 2),
)
MAKER_APP = _jpeg_segment(0xE5, MAKER_MARKER)  # some phones' own APPn blocks


def _phone_jpeg(image: Image.Image, **params) -> bytes:
    """A JPEG as a phone sends it, and then some: every kind of metadata, and data after EOI."""
    data = _save(
        image,
        "JPEG",
        quality=92,
        exif=_exif(),
        xmp=_xmp(),
        comment=COMMENT_MARKER,
        icc_profile=ICC,
        **params,
    )
    return _after_soi(data, IPTC, MAKER_APP) + TRAILER_MARKER


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, body) of every segment, through the scans, to EOI (checked to end the file)."""
    assert data[:2] == b"\xff\xd8"
    segments, pos = [], 2
    while True:
        marker = data[pos + 1]
        if marker == 0xD9:
            assert pos + 2 == len(data), "nothing may follow the end of the image"
            return segments
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            pos = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, pos).start()


def _same_pixels(upload: bytes, stored: bytes) -> bool:
    return np.array_equal(np.asarray(decode_photo(upload)), np.asarray(decode_photo(stored)))


def _assert_nothing_identifying(stored: bytes, orientation: int = 6) -> None:
    for marker in (*MARKERS, b"http://ns.adobe.com/xap", b"Photoshop", b"MPF"):
        assert marker not in stored, marker
    with Image.open(io.BytesIO(stored)) as image:
        exif = image.getexif()
        assert dict(exif) == ({ExifTags.Base.Orientation: orientation} if orientation != 1 else {})
        assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert not exif.get_ifd(ExifTags.IFD.IFD1)
        for key in ("xmp", "comment", "photoshop", "mp", "XML:com.adobe.xmp"):
            assert key not in image.info, key


JPEG_KINDS = {
    "4:2:0": {"subsampling": 2},
    "4:4:4": {"subsampling": 0},
    "progressive": {"progressive": True},
}


@pytest.mark.parametrize("params", JPEG_KINDS.values(), ids=JPEG_KINDS.keys())
def test_jpeg_is_stripped_without_touching_its_pixels(params: dict) -> None:
    upload = _phone_jpeg(_photo(), **params)
    # The upload really carries all of it, or the test proves nothing.
    for marker in MARKERS:
        assert marker in upload, marker
    with Image.open(io.BytesIO(upload)) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.IFD1)[0x0202] > 0

    stripped = strip_metadata(upload)
    assert stripped.media_type == "image/jpeg"
    assert (stripped.width, stripped.height) == (32, 48)  # orientation 6: upright is portrait
    assert _same_pixels(upload, stripped.data)
    assert len(stripped.data) < len(upload)
    _assert_nothing_identifying(stripped.data)

    segments = _jpeg_segments(stripped.data)
    app = [(marker, body[:12]) for marker, body in segments if 0xE0 <= marker <= 0xEF]
    exif = b"Exif\x00\x00" + orientation_exif(6)
    assert app == [
        (0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01"),
        (0xE1, exif[:12]),
        (0xE2, b"ICC_PROFILE\x00"),
    ]
    assert (0xE1, exif) in segments  # the orientation-only block, whole
    with Image.open(io.BytesIO(stripped.data)) as image:
        assert image.info["icc_profile"] == ICC
    assert not [marker for marker, _ in segments if marker == 0xFE]


def test_mpo_keeps_its_first_image_only() -> None:
    upload = _save(_photo(), "MPO", save_all=True, append_images=[_photo(seed=1)], exif=_exif())
    with Image.open(io.BytesIO(upload)) as original:
        assert original.format == "MPO" and original.n_frames == 2
    stripped = strip_metadata(upload)
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data)
    assert stripped.data.count(b"\xff\xd8") == 1  # one image
    with Image.open(io.BytesIO(stripped.data)) as image:
        assert image.format == "JPEG"


def test_jfif_thumbnail_is_dropped() -> None:
    plain = _save(_photo(), "JPEG")
    assert plain[2:4] == b"\xff\xe0"
    jfif_end = 4 + int.from_bytes(plain[4:6], "big")
    thumbnail = bytes(range(2 * 2 * 3))  # 2x2 RGB pixels
    jfif = _jpeg_segment(0xE0, plain[6:18] + b"\x02\x02" + thumbnail)
    upload = plain[:2] + jfif + plain[jfif_end:]
    stripped = strip_metadata(upload)
    assert stripped.data == plain  # Pillow's own JFIF header has no thumbnail
    assert _same_pixels(upload, stripped.data)


def test_same_photo_with_other_metadata_strips_to_the_same_bytes() -> None:
    plain = _save(_photo(), "JPEG", quality=90, icc_profile=ICC)
    first = _after_soi(plain, _jpeg_segment(0xE1, _exif("taken in Shanghai")), IPTC)
    second = _after_soi(plain, _jpeg_segment(0xE1, _exif("another description")))
    third = _save(_photo(), "JPEG", quality=90, icc_profile=ICC, xmp=_xmp(6))  # XMP only
    assert len({first, second, third}) == 3
    digests = {hashlib.sha256(strip_metadata(u).data).hexdigest() for u in (first, second, third)}
    assert len(digests) == 1


def test_orientation_from_xmp_is_kept_as_exif() -> None:
    upload = _save(_photo(), "JPEG", xmp=_xmp(8))
    stripped = strip_metadata(upload)
    assert (stripped.width, stripped.height) == (32, 48)
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data, orientation=8)


def test_no_orientation_block_when_the_photo_is_upright() -> None:
    upload = _save(_photo(), "JPEG", exif=_exif(orientation=1), comment=COMMENT_MARKER)
    stripped = strip_metadata(upload)
    assert b"Exif" not in stripped.data
    assert (stripped.width, stripped.height) == (48, 32)
    _assert_nothing_identifying(stripped.data, orientation=1)


def test_twelve_megapixel_phone_jpeg_is_the_upload_less_its_metadata() -> None:
    photo = _photo(4032, 3024)
    plain = _save(photo, "JPEG", quality=90)  # SOI, JFIF, tables, scan, EOI: nothing to strip
    exif = _jpeg_segment(0xE1, _exif())
    jfif_end = 4 + int.from_bytes(plain[4:6], "big")
    upload = plain[:jfif_end] + exif + plain[jfif_end:]
    assert len(upload) > 2_000_000

    stripped = strip_metadata(upload)
    orientation = _jpeg_segment(0xE1, b"Exif\x00\x00" + orientation_exif(6))
    assert stripped.data == plain[:jfif_end] + orientation + plain[jfif_end:]
    assert (stripped.width, stripped.height) == (3024, 4032)
    assert _same_pixels(upload, stripped.data)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    assert chunks[-1][0] == b"IEND"
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _phone_png(image: Image.Image) -> bytes:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", COMMENT_MARKER.decode())
    text.add_itxt("XML:com.adobe.xmp", _xmp().decode())
    text.add_text("Description", DESCRIPTION_MARKER, zip=True)
    data = _save(image, "PNG", pnginfo=text, exif=_exif(), icc_profile=ICC, dpi=(300, 300))
    iend = data.rindex(b"IEND") - 4  # a tIME chunk at the end, then trailing data
    return (
        data[:iend]
        + _png_chunk(b"tIME", b"\x07\xe9\x01\x02\x03\x04\x05")
        + data[iend:]
        + (TRAILER_MARKER)
    )


PNG_KINDS = {
    "rgba": lambda: _photo().convert("RGBA"),
    "16-bit": lambda: Image.fromarray(
        np.random.default_rng(3).integers(0, 65535, (32, 48)).astype(np.uint16)
    ),
}


@pytest.mark.parametrize("make", PNG_KINDS.values(), ids=PNG_KINDS.keys())
def test_png_is_stripped_without_touching_its_pixels(make) -> None:  # type: ignore[no-untyped-def]
    upload = _phone_png(make())
    kinds = {kind for kind, _ in _png_chunks(upload[: -len(TRAILER_MARKER)])}
    assert {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"pHYs", b"tIME", b"iCCP"} <= kinds

    stripped = strip_metadata(upload)
    assert stripped.media_type == "image/png"
    assert (stripped.width, stripped.height) == (32, 48)
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data)
    chunks = _png_chunks(stripped.data)
    assert [kind for kind, _ in chunks[:2]] == [b"IHDR", b"eXIf"]
    assert chunks[1][1] == orientation_exif(6)
    assert {kind for kind, _ in chunks} == {b"IHDR", b"eXIf", b"iCCP", b"IDAT", b"IEND"}
    with Image.open(io.BytesIO(stripped.data)) as image:
        assert image.info["icc_profile"] == ICC
        assert not image.text


def test_png_exif_after_the_image_data_still_gives_the_orientation() -> None:
    plain = _save(_photo(), "PNG")
    iend = plain.rindex(b"IEND") - 4
    upload = plain[:iend] + _png_chunk(b"eXIf", _exif()[6:]) + plain[iend:]
    stripped = strip_metadata(upload)
    assert (stripped.width, stripped.height) == (32, 48)
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data)


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    chunks, pos = [], 12
    while pos < len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + size % 2
    return chunks


@pytest.mark.parametrize("lossless", [False, True], ids=["lossy", "lossless"])
def test_webp_is_stripped_without_touching_its_pixels(lossless: bool) -> None:
    upload = _save(
        _photo().convert("RGBA"),
        "WEBP",
        lossless=lossless,
        exif=_exif(),
        xmp=_xmp(),
        icc_profile=ICC,
    )
    assert {b"EXIF", b"XMP "} <= {kind for kind, _ in _webp_chunks(upload)}

    stripped = strip_metadata(upload)
    assert stripped.media_type == "image/webp"
    assert (stripped.width, stripped.height) == (32, 48)
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data)
    chunks = dict(_webp_chunks(stripped.data))
    assert chunks[b"EXIF"] == orientation_exif(6)
    assert b"XMP " not in chunks
    assert chunks[b"ICCP"] == ICC
    flags = chunks[b"VP8X"][0]
    assert flags & 0x08 and not flags & 0x04  # EXIF yes, XMP no
    assert len(stripped.data) < len(upload)


def test_heic_is_stored_as_png_of_its_pixels() -> None:
    upload = _save(_photo(), "HEIF", exif=_exif(), quality=90)
    assert GPS_MARKER.encode() in upload
    stripped = strip_metadata(upload)
    assert stripped.media_type == "image/png"
    assert (stripped.width, stripped.height) == (32, 48)  # orientation applied
    assert _same_pixels(upload, stripped.data)
    _assert_nothing_identifying(stripped.data, orientation=1)
    assert {kind for kind, _ in _png_chunks(stripped.data)} == {b"IHDR", b"IDAT", b"IEND"}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_the_model_reads_the_same_pixels_from_the_stored_file(fmt: str) -> None:
    # The heatmap and any later re-scoring read the stored file; the upload was scored from its
    # own reduced decode. A turned HEIC, stored as upright PNG, must reduce to the same pixels.
    photo = _photo(width=203, height=101)  # sides no reduction factor divides
    upload = _save(
        photo, fmt, exif=_exif(orientation=6), **({"quality": 90} if fmt == "HEIF" else {})
    )
    stored = strip_metadata(upload).data
    for side in (20, 33, 101):
        scored, reread = decode_reduced(upload, side), decode_reduced(stored, side)
        assert (scored.width, scored.height) == (reread.width, reread.height) == (101, 203)
        assert np.array_equal(np.asarray(scored.image), np.asarray(reread.image)), (fmt, side)


def test_too_many_pixels_is_refused() -> None:
    with pytest.raises(PhotoError) as caught:
        strip_metadata(_save(_photo(), "JPEG"), max_pixels=1000)
    assert caught.value.code == "too_many_pixels"


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda data: data[:-2], "truncated_image"),  # no EOI
        (lambda data: data[: data.index(b"\xff\xda") + 30], "truncated_image"),
        (lambda data: data.replace(b"\xff\xfe\x00", b"\xff\xfe\xff", 1), "truncated_image"),
        (
            lambda data: data.replace(b"\xff\xfe\x00", b"\xff\xfe\x00\x01\x00", 1),
            "unreadable_image",
        ),
    ],
    ids=["no-eoi", "cut-in-scan", "length-past-end", "length-below-two"],
)
def test_malformed_jpeg_structure_is_a_photo_error(damage, code: str) -> None:  # type: ignore[no-untyped-def]
    # A comment after the scan, where Pillow's header reading does not look.
    plain = _save(_photo(), "JPEG")
    upload = damage(plain[:-2] + _jpeg_segment(0xFE, COMMENT_MARKER) + b"\xff\xd9")
    with pytest.raises(PhotoError) as caught:
        strip_metadata(upload)
    assert caught.value.code == code


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_damaged_uploads_raise_only_photo_errors(fmt: str) -> None:
    upload = {
        "JPEG": lambda: _phone_jpeg(_photo(), progressive=True),
        "PNG": lambda: _phone_png(_photo()),
        "WEBP": lambda: _save(_photo(), "WEBP", exif=_exif(), xmp=_xmp()),
    }[fmt]()
    rng = np.random.default_rng(7)
    outcomes = {"stripped": 0, "refused": 0, "compared": 0}
    for trial in range(150):
        data = bytearray(upload)
        if trial % 2:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for at in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[at] = int(rng.integers(0, 256))
        try:
            stripped = strip_metadata(bytes(data))
        except PhotoError:
            outcomes["refused"] += 1
            continue
        outcomes["stripped"] += 1
        # Whatever the damage, what is stored still decodes as the upload does.
        try:
            original = np.asarray(decode_photo(bytes(data)))
        except PhotoError:
            continue
        assert np.array_equal(original, np.asarray(decode_photo(stripped.data))), trial
        outcomes["compared"] += 1
    # The damage reached the structure some of the time, and left some photos decodable.
    assert outcomes["refused"] > 0 and outcomes["compared"] > 0, outcomes

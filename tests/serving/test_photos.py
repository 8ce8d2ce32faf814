"""The photo store: metadata never reaches the disk, addresses are content, encryption holds."""

import base64
import hashlib
import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image, ImageCms, PngImagePlugin

from serving import photos
from serving.photos import KEY_ENV, PhotoStore, PhotoStoreError
from serving.review.view import stored_photo
from serving.settings import Settings
from touchstone.imaging import PhotoError, decode_photo

GPS_MARKER = "TOUCHSTONE-GPS-MARKER"
DESCRIPTION_MARKER = "TOUCHSTONE-EXIF-MARKER"
XMP_MARKER = b"TOUCHSTONE-XMP-MARKER"
COMMENT_MARKER = b"TOUCHSTONE-COMMENT-MARKER"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
# Built once: a profile records its creation time, and uploads must be the same bytes every time.
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _sideways() -> Image.Image:
    """40x20, red left half and blue right half, as a camera held sideways stores it."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    return image


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif[0x010E] = DESCRIPTION_MARKER  # ImageDescription
    exif[0x8825] = {  # the GPS IFD
        0x0001: "N",  # GPSLatitudeRef
        0x0002: (31.0, 14.0, 3.5),  # GPSLatitude: Shanghai
        0x0003: "E",
        0x0004: (121.0, 28.0, 10.0),
        0x0012: GPS_MARKER,  # GPSMapDatum
    }
    return exif


def _gps_jpeg() -> bytes:
    return _save(
        _sideways(),
        "JPEG",
        quality=95,
        exif=_exif_with_gps().tobytes(),
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + XMP_MARKER + b"</x:xmpmeta>",
        comment=COMMENT_MARKER,
        icc_profile=SRGB_ICC,
    )


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _assert_no_metadata(data: bytes) -> None:
    """Nothing that identifies the member is left; the colour profile and the orientation (as
    the only EXIF tag) are kept, so the photo looks as it did."""
    for marker in (
        GPS_MARKER.encode(),
        DESCRIPTION_MARKER.encode(),
        XMP_MARKER,
        b"http://ns.adobe.com/xap",
        COMMENT_MARKER,
    ):
        assert marker not in data, marker
    with Image.open(io.BytesIO(data)) as image:
        assert dict(image.getexif()) == {0x0112: 6}
        assert not image.getexif().get_ifd(0x8825)
        assert "xmp" not in image.info and "comment" not in image.info
        assert image.info["icc_profile"] == SRGB_ICC


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode_photo(data))


def test_gps_jpeg_is_stored_clean_with_its_pixels(tmp_path: Path) -> None:
    upload = _gps_jpeg()
    # The upload really carries what must go, or the test proves nothing.
    with Image.open(io.BytesIO(upload)) as original:
        assert original.getexif().get_ifd(0x8825)[0x0002] == (31.0, 14.0, 3.5)
    for marker in (b"Exif", GPS_MARKER.encode(), XMP_MARKER, COMMENT_MARKER, b"ICC_PROFILE"):
        assert marker in upload

    store = PhotoStore(tmp_path)
    photo = store.put(upload)
    stored = store.path_for(photo.sha256).read_bytes()
    _assert_no_metadata(stored)
    # Not re-encoded: the stored file decodes to the very pixels of the upload, and is smaller.
    assert np.array_equal(_pixels(stored), _pixels(upload))
    assert len(stored) < len(upload)

    assert (photo.width, photo.height) == (20, 40)
    pixels = np.asarray(store.open_image(photo.sha256)).astype(int)
    assert pixels.shape == (40, 20, 3)
    top, bottom = pixels[2, 10], pixels[37, 10]
    assert top[0] > 200 and top[2] < 60  # the left edge, red, turned to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_png_metadata_is_stripped_and_pixels_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", COMMENT_MARKER.decode())
    exif = _exif_with_gps()
    del exif[0x0112]  # keep the pixels where they are, to compare them exactly
    upload = _save(source, "PNG", pnginfo=text, exif=exif.tobytes())
    assert COMMENT_MARKER in upload and GPS_MARKER.encode() in upload

    store = PhotoStore(tmp_path)
    photo = store.put(upload)
    stored = store.get(photo.sha256)
    assert photo.media_type == "image/png"
    for marker in (b"Exif", COMMENT_MARKER, GPS_MARKER.encode(), DESCRIPTION_MARKER.encode()):
        assert marker not in stored, marker
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "PNG"
        assert not image.text and not image.getexif()
        assert np.array_equal(np.asarray(image), np.asarray(source))


def test_webp_is_stored_as_webp(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    source = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    upload = _save(source, "WEBP", exif=_exif_with_gps().tobytes(), icc_profile=SRGB_ICC)
    store = PhotoStore(tmp_path)
    photo = store.put(upload)
    stored = store.get(photo.sha256)
    assert photo.media_type == "image/webp"
    assert (photo.width, photo.height) == (24, 32)
    _assert_no_metadata(stored)
    assert np.array_equal(_pixels(stored), _pixels(upload))


def test_pixel_limit_is_the_callers(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    with pytest.raises(PhotoError) as caught:
        store.put(_gps_jpeg(), max_pixels=799)  # the photo has 800
    assert caught.value.code == "too_many_pixels"
    assert _files(tmp_path) == []
    assert store.put(_gps_jpeg(), max_pixels=800).width == 20


def test_stored_photo_describes_the_clean_content(tmp_path: Path) -> None:
    upload = _gps_jpeg()
    store = PhotoStore(tmp_path)
    photo = store.put(upload)
    path = store.path_for(photo.sha256)
    clean = path.read_bytes()

    assert path == tmp_path / photo.sha256[:2] / photo.sha256[2:4] / photo.sha256
    assert photo.sha256 == hashlib.sha256(clean).hexdigest()
    assert photo.upload_sha256 == hashlib.sha256(upload).hexdigest()
    assert photo.upload_sha256 != photo.sha256
    assert photo.size == len(clean)
    assert photo.media_type == "image/jpeg"
    assert store.exists(photo.sha256)
    assert store.get(photo.sha256) == clean
    image = store.open_image(photo.sha256)
    assert image.mode == "RGB" and image.size == (20, 40)
    assert _files(tmp_path) == [path]  # no temp file left behind


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    first = store.put(_gps_jpeg())
    again = store.put(_gps_jpeg())
    assert again == first
    assert len(_files(tmp_path)) == 1

    # The same photo with other metadata (here: no GPS, XMP or comment) is the same photo once
    # the metadata is gone.
    orientation_only = Image.Exif()
    orientation_only[0x0112] = 6
    with_gps = _save(_sideways(), "JPEG", quality=95, exif=_exif_with_gps().tobytes())
    without = _save(_sideways(), "JPEG", quality=95, exif=orientation_only.tobytes())
    assert with_gps != without
    photo, twin = store.put(with_gps), store.put(without)
    assert twin.sha256 == photo.sha256
    assert twin.upload_sha256 != photo.upload_sha256
    assert len(_files(tmp_path)) == len({first.sha256, photo.sha256})


def test_write_is_synced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[object] = []
    real_fsync, real_replace, real_fsync_dir = os.fsync, os.replace, photos._fsync_dir

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    def fsync_dir(directory: Path) -> None:
        events.append(directory)
        real_fsync_dir(directory)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(photos, "_fsync_dir", fsync_dir)
    photo = PhotoStore(tmp_path).put(_gps_jpeg())
    leaf = PhotoStore(tmp_path).path_for(photo.sha256).parent
    rename = events.index("replace")
    assert "fsync" in events[:rename]  # the file's bytes are on disk before it gets its name
    assert leaf in events[rename:]  # and the name itself is on disk before put returns


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PhotoStore(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.put(_gps_jpeg())
    assert _files(tmp_path) == []


def test_encrypted_store_round_trips(tmp_path: Path) -> None:
    plain_photo = PhotoStore(tmp_path / "plain").put(_gps_jpeg())
    store = PhotoStore(tmp_path / "secret", KEY)
    photo = store.put(_gps_jpeg())
    assert photo == plain_photo  # the address is of the clean plaintext

    on_disk = store.path_for(photo.sha256).read_bytes()
    assert not on_disk.startswith(b"\xff\xd8")
    assert on_disk[:1] == b"\x01"
    clean = store.get(photo.sha256)
    assert clean.startswith(b"\xff\xd8")
    assert clean not in on_disk
    # The documented layout: version byte, nonce, ciphertext + tag, the address as associated data.
    assert len(on_disk) == 1 + 12 + len(clean) + 16
    nonce, sealed = on_disk[1:13], on_disk[13:]
    assert AESGCM(KEY).decrypt(nonce, sealed, b"\x01" + photo.sha256.encode()) == clean
    _assert_no_metadata(clean)
    assert store.open_image(photo.sha256).size == (20, 40)

    store.put(_gps_jpeg())
    assert store.path_for(photo.sha256).read_bytes() == on_disk  # stored once, not rewritten


def test_flipped_ciphertext_byte_is_refused(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path, KEY)
    photo = store.put(_gps_jpeg())
    path = store.path_for(photo.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PhotoStoreError) as caught:
        store.get(photo.sha256)
    assert caught.value.code == "integrity"
    with pytest.raises(PhotoStoreError):
        store.open_image(photo.sha256)


def test_file_moved_to_another_address_fails(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path, KEY)
    photo = store.put(_gps_jpeg())
    other = store.put(_save(Image.new("RGB", (8, 8), "green"), "JPEG"))
    shutil.copyfile(store.path_for(photo.sha256), store.path_for(other.sha256))
    with pytest.raises(PhotoStoreError) as caught:
        store.get(other.sha256)
    assert caught.value.code == "integrity"


def test_wrong_key_fails(tmp_path: Path) -> None:
    photo = PhotoStore(tmp_path, KEY).put(_gps_jpeg())
    with pytest.raises(PhotoStoreError) as caught:
        PhotoStore(tmp_path, OTHER_KEY).get(photo.sha256)
    assert caught.value.code == "integrity"
    with pytest.raises(PhotoStoreError):
        PhotoStore(tmp_path).get(photo.sha256)  # no key at all


def test_plaintext_file_is_refused_by_an_encrypted_store_and_replaced(tmp_path: Path) -> None:
    photo = PhotoStore(tmp_path).put(_gps_jpeg())
    store = PhotoStore(tmp_path, KEY)
    with pytest.raises(PhotoStoreError):
        store.get(photo.sha256)
    # Uploading it again once a key is configured encrypts it at rest.
    store.put(_gps_jpeg())
    assert store.path_for(photo.sha256).read_bytes()[:1] == b"\x01"
    assert hashlib.sha256(store.get(photo.sha256)).hexdigest() == photo.sha256


def test_altered_plaintext_is_refused(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    photo = store.put(_gps_jpeg())
    path = store.path_for(photo.sha256)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PhotoStoreError) as caught:
        store.get(photo.sha256)
    assert caught.value.code == "integrity"


def _store_from_settings(root: Path) -> PhotoStore:
    """The store as the service builds it: the key comes from its settings."""
    return PhotoStore(root, Settings(data_dir=root).photo_key_bytes())


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert not _store_from_settings(tmp_path).encrypted

    monkeypatch.setenv(KEY_ENV, base64.b64encode(KEY).decode() + "\n")
    store = _store_from_settings(tmp_path)
    assert store.encrypted
    photo = store.put(_gps_jpeg())
    assert PhotoStore(tmp_path, KEY).get(photo.sha256) == store.get(photo.sha256)


@pytest.mark.parametrize(
    "value",
    ["", "not base64!", base64.b64encode(bytes(16)).decode(), base64.b64encode(bytes(33)).decode()],
)
def test_malformed_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(PhotoStoreError) as caught:
        _store_from_settings(tmp_path)
    assert caught.value.code == "bad_key"
    assert KEY_ENV in str(caught.value)


def test_key_of_wrong_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PhotoStoreError) as caught:
        PhotoStore(tmp_path, bytes(16))
    assert caught.value.code == "bad_key"


def _truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    data = _save(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming_100_megapixels() -> bytes:
    """A header that says 10000x10000 pixels in a few dozen bytes: refused before decoding."""
    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("upload", "code"),
    [
        (b"", "empty_file"),
        (b"hello, this is not a photo", "not_an_image"),
        (_truncated_jpeg(), "truncated_image"),
        (_png_claiming_100_megapixels(), "too_many_pixels"),
    ],
    ids=["empty", "text", "truncated", "too-big"],
)
def test_bad_upload_raises_photo_error(tmp_path: Path, upload: bytes, code: str) -> None:
    store = PhotoStore(tmp_path)
    with pytest.raises(PhotoError) as caught:
        store.put(upload)
    assert caught.value.code == code
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "address",
    ["../etc/passwd", "", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "/" + "a" * 63, "a" * 64 + "\n"],
)
def test_invalid_address_is_refused(tmp_path: Path, address: str) -> None:
    store = PhotoStore(tmp_path)
    for method in (store.get, store.open_image, store.exists, store.delete, store.path_for):
        with pytest.raises(PhotoStoreError) as caught:
            method(address)
        assert caught.value.code == "bad_address"


def test_unknown_address(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path)
    missing = "0" * 64
    assert not store.exists(missing)
    with pytest.raises(PhotoStoreError) as caught:
        store.get(missing)
    assert caught.value.code == "not_found"


def test_delete(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path, KEY)
    photo = store.put(_gps_jpeg())
    assert store.delete(photo.sha256)
    assert not store.exists(photo.sha256)
    assert _files(tmp_path) == []
    with pytest.raises(PhotoStoreError) as caught:
        store.get(photo.sha256)
    assert caught.value.code == "not_found"
    assert not store.delete(photo.sha256)


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")],
)
def test_review_serves_the_stored_format(tmp_path: Path, fmt: str, media_type: str) -> None:
    store = PhotoStore(tmp_path, KEY)
    photo = store.put(_save(_sideways(), fmt, exif=_exif_with_gps().tobytes()))
    data, served_as = stored_photo(store, photo.sha256)
    assert served_as == photo.media_type == media_type
    assert data == store.get(photo.sha256)

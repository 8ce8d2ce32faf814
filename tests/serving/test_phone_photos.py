"""Real phone photos end to end, through real HTTP and a real ONNX model: six 12-megapixel
JPEGs (turned by EXIF orientation or not, with GPS, a thumbnail and an ICC profile) and an item
of HEICs are scored from their reduced decodes, stored losslessly without their metadata, and
shown to a reviewer at full size; the heatmap reads the stored photo as the upload was read."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from serving.photos import PhotoStore
from serving.web.heatmap import occlusion
from tests.phone_photos import GPS_MARKER, phone_heic, phone_jpeg, upright_size
from tests.serving_support import form, start_server, stop
from touchstone.imaging import decode_photo, decode_reduced
from touchstone.inference import OnnxModel
from touchstone.preprocessing import shorter_side

REGIONS = ("hardware", "stitching", "logo")
# A declared value this high always goes to a person: the test needs a reviewer to see it.
HIGH_VALUE = "80000"

Parts = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture(scope="module")
def phone_jpegs() -> Parts:
    """Six phone JPEGs, two per region, every other one held sideways (orientation 6)."""
    return [
        (
            REGIONS[i % 3],
            (f"IMG_{i}-{o}.jpg", phone_jpeg(seed=i, orientation=o), "image/jpeg"),
        )
        for i, o in enumerate((6, 1, 6, 1, 6, 1))
    ]


@pytest.fixture(scope="module")
def phone_heics() -> Parts:
    return [
        (region, (f"IMG_{i}-{o}.heic", phone_heic(seed=10 + i, orientation=o), "image/heic"))
        for i, (region, o) in enumerate((("hardware", 6), ("logo", 1)))
    ]


def _orientation(name: str) -> int:
    """The orientation a fixture's photo was taken in, from its name (pillow-heif writes a HEIC's
    as a transform of the image and reports EXIF orientation 1)."""
    return int(name.rsplit("-", 1)[1].split(".")[0])


def test_phone_photos_are_scored_stored_losslessly_and_shown_full_size(
    tmp_path: Path, tiny_model: Path, phone_jpegs: Parts, phone_heics: Parts
) -> None:
    # The uploads carry what must go, or the test proves nothing.
    first = phone_jpegs[0][1][1]
    with Image.open(io.BytesIO(first)) as image:
        assert image.size == (4032, 3024) and image.getexif().get(0x0112) == 6
        assert image.getexif().get_ifd(ExifTags.IFD.IFD1)  # the thumbnail
        assert "icc_profile" in image.info and len(first) > 2_000_000
    server = start_server(tmp_path / "data", tiny_model)
    try:
        items = []
        with server.client(server.key("member_backend")) as client:
            for parts in (phone_jpegs, phone_heics):
                answer = client.post(
                    "/v1/appraisals",
                    data=form("m-phone", declared_value=HIGH_VALUE),
                    files=parts,
                )
                assert answer.status_code == 201, answer.text
                items.append((answer.json()["id"], parts))
        with server.client(server.key("platform")) as platform:
            shown = {i: platform.get(f"/v1/appraisals/{i}").json() for i, _ in items}

        engine, sessions = server.database()
        from serving.db import Photo

        with sessions() as session:
            rows = {p.sha256: p for p in session.query(Photo).all()}
        engine.dispose()

        store = PhotoStore(server.data_dir / "photos")
        model = OnnxModel(tiny_model)
        side = shorter_side(model.preprocessing)
        for appraisal_id, parts in items:
            findings = shown[appraisal_id]["findings"]
            assert shown[appraisal_id]["status"] == "in_review"
            assert len(findings) == len(parts)
            sent = {hashlib.sha256(data).hexdigest(): (r, n, data) for r, (n, data, _) in parts}
            for finding in findings:
                row = rows[finding["sha256"]]
                region, name, upload = sent.pop(row.upload_sha256)
                assert finding["region"] == region and finding["usable"], finding
                assert finding["log_odds"] is not None
                stored = store.get(finding["sha256"])
                upright = decode_photo(upload)
                assert (row.width, row.height) == upright.size
                assert upright.size == upright_size(_orientation(name))
                # Lossless: the stored photo is the upload's pixels, without GPS or thumbnail.
                assert np.array_equal(np.asarray(decode_photo(stored)), np.asarray(upright))
                assert GPS_MARKER.encode() not in stored
                with Image.open(io.BytesIO(stored)) as image:
                    assert not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
                    assert not image.getexif().get_ifd(ExifTags.IFD.IFD1)
                if upload.startswith(b"\xff\xd8"):
                    # The heatmap reads the stored photo as serving read the upload: its
                    # uncovered copy scores what the upload scored.
                    reduced = decode_reduced(stored, side)
                    assert reduced.image.size == decode_reduced(upload, side).image.size
                    heat = occlusion(model, reduced.image, region)
                    assert heat.log_odds == pytest.approx(finding["log_odds"], abs=1e-5)
            assert not sent  # every upload is one of the findings

        # A reviewer sees the JPEG item (due first) at full size, upright.
        jpeg_item, _ = items[0]
        with server.client(server.key("reviewer")) as reviewer:
            task = reviewer.post("/v1/review/claim").json()
            assert task["appraisal"]["id"] == jpeg_item
            uploads = {
                sha: (part[1][1])
                for sha in rows
                for part in phone_jpegs
                if rows[sha].upload_sha256 == hashlib.sha256(part[1][1]).hexdigest()
            }
            for photo in task["photos"]:
                answer = reviewer.get(
                    f"/v1/review/tasks/{task['task']['id']}/photos/{photo['sha256']}"
                )
                assert answer.status_code == 200
                seen = decode_photo(answer.content)
                expected = decode_photo(uploads[photo["sha256"]])
                assert seen.size == expected.size and max(seen.size) == 4032
                assert np.array_equal(np.asarray(seen), np.asarray(expected))
    finally:
        stop(server)

"""Manifest parsing and every validation error, each reported with its line and reason."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from touchstone.data.manifest import (
    DatasetInfo,
    ManifestError,
    load_manifest,
    read_manifest,
    write_manifest,
)
from touchstone.data.validation import validate_manifest

HEADER = "image,item_id,region,label,category,brand,bbox,split,source,weight\n"


def _photo(path: Path, size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _manifest(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(header + "".join(row + "\n" for row in rows))
    return path


def _codes(path: Path, check_images: bool = True) -> dict[int, set[str]]:
    report = validate_manifest(read_manifest(path), check_images=check_images, show_progress=False)
    found: dict[int, set[str]] = {}
    for issue in report.issues:
        found.setdefault(issue.line, set()).add(issue.code)
    return found


def test_a_clean_manifest_parses(tmp_path: Path) -> None:
    _photo(tmp_path / "a.jpg")
    _photo(tmp_path / "b.jpg")
    path = _manifest(
        tmp_path,
        [
            "a.jpg,item1,hardware,authentic,bag,aurel,,train,import,",
            'b.jpg,item1,logo,Authentic,bag,aurel,"2,2,40,40",train,import,0.5',
        ],
    )
    manifest = load_manifest(path)
    assert [r.line for r in manifest.records] == [2, 3]
    second = manifest.records[1]
    assert second.label == "authentic"  # labels are case-insensitive
    assert second.bbox is not None and (second.bbox.x0, second.bbox.x1) == (2, 40)
    assert second.weight == 0.5 and manifest.records[0].weight == 1.0
    assert second.path == (tmp_path / "b.jpg").resolve()
    report = validate_manifest(manifest, show_progress=False)
    assert report.issues == []
    assert report.photo_counts[("train", "logo", "authentic")] == 1
    assert report.item_counts["train"] == 1


def test_each_row_error_is_reported_with_its_line(tmp_path: Path) -> None:
    for name in "abcdefghij":
        _photo(tmp_path / f"{name}.jpg")
    path = _manifest(
        tmp_path,
        [
            "a.jpg,i1,hardware,authentic,,,,,,",  # 2: fine
            "b.jpg,i2,sole,authentic,,,,,,",  # 3: unknown region
            "c.jpg,i3,logo,genuine,,,,,,",  # 4: unknown label
            "d.jpg,i4,logo,authentic,,,,holdout,,",  # 5: unknown split
            'e.jpg,i5,logo,authentic,,,"1,2,3",,,',  # 6: bbox needs four numbers
            "f.jpg,i6,logo,authentic,,,,,,-1",  # 7: negative weight
            "g.jpg,i7,logo,authentic,,,,,",  # 8: a field short
            ",i8,logo,authentic,,,,,,",  # 9: no image
            "h.jpg,i1,logo,counterfeit,,,,,,",  # 10: item i1 was authentic on line 2
            "i.jpg,i9,logo,authentic,,,,train,,",  # 11
            "j.jpg,i9,stitching,authentic,,,,test,,",  # 12: item i9 crosses splits
            "a.jpg,i10,logo,authentic,,,,,,",  # 13: a.jpg already listed for item i1
            "h.jpg,i1,logo,counterfeit,,,,,,",  # 14: listed twice, same item (warning)
            "i.jpg,i9,logo,authentic,,,,train,scraped,",  # 15: unknown source (warning)
        ],
    )
    codes = _codes(path, check_images=False)
    assert 2 not in codes
    assert codes[3] == {"unknown_region"}
    assert codes[4] == {"unknown_label"}
    assert codes[5] == {"unknown_split"}
    assert codes[6] == {"bad_bbox"}
    assert codes[7] == {"bad_weight"}
    assert codes[8] == {"bad_row"}
    assert codes[9] == {"missing_value"}
    assert codes[10] == {"conflicting_labels"}
    assert codes[12] == {"item_crosses_splits"}
    assert codes[13] == {"duplicate_image"}
    assert "duplicate_image" in codes[14] and "conflicting_labels" in codes[14]
    assert "unknown_source" in codes[15]
    manifest = read_manifest(path)
    line_14 = [i for i in manifest.issues if i.line == 14]
    duplicate = next(i for i in line_14 if i.code == "duplicate_image")
    assert duplicate.severity == "warning"  # the same item listing a photo twice
    line_13 = next(i for i in manifest.issues if i.line == 13)
    assert line_13.severity == "error" and "another item" in line_13.message
    assert "line 2" in next(i for i in manifest.issues if i.line == 10).message
    with pytest.raises(ManifestError, match="line 3"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("0,0,10", "four numbers"),
        ("0,0,x,10", "not a number"),
        ("5,5,5,9", "empty"),
        ("-2,0,5,5", "negative"),
    ],
)
def test_bad_bbox_text(tmp_path: Path, bbox: str, message: str) -> None:
    _photo(tmp_path / "a.jpg")
    path = _manifest(tmp_path, [f'a.jpg,i1,logo,authentic,,,"{bbox}",,,'])
    issue = read_manifest(path).issues[0]
    assert issue.code == "bad_bbox" and message in issue.message and issue.line == 2


def test_image_errors(tmp_path: Path) -> None:
    _photo(tmp_path / "ok.jpg")
    _photo(tmp_path / "ok2.jpg")
    _photo(tmp_path / "small.jpg", (20, 80))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:600])
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    path = _manifest(
        tmp_path,
        [
            "missing.jpg,i1,logo,authentic,,,,,,",  # 2
            "empty.jpg,i2,logo,authentic,,,,,,",  # 3
            "text.jpg,i3,logo,authentic,,,,,,",  # 4
            "cut.jpg,i4,logo,authentic,,,,,,",  # 5
            "big.png,i5,logo,authentic,,,,,,",  # 6: over the pixel limit given below
            'ok.jpg,i6,logo,authentic,,,"0,0,65,10",,,',  # 7: bbox outside the 64x64 photo
            "small.jpg,i7,logo,authentic,,,,,,",  # 8: 20 px wide: a warning
            'ok2.jpg,i8,logo,authentic,,,"0,0,10,10",,,',  # 9: the crop is tiny: a warning
        ],
    )
    report = validate_manifest(read_manifest(path), max_pixels=4_000_000, show_progress=False)
    by_line = {issue.line: issue for issue in report.issues}
    assert by_line[2].code == "missing_file"
    assert by_line[3].code == "empty_file"
    assert by_line[4].code == "not_an_image"
    assert by_line[5].code == "truncated_image"
    assert by_line[6].code == "too_many_pixels"
    assert by_line[7].code == "bad_bbox" and "64x64" in by_line[7].message
    assert by_line[8].code == "small_image" and by_line[8].severity == "warning"
    assert by_line[9].code == "small_image"
    assert len(report.errors) == 6 and len(report.warnings) == 2


def test_a_phone_photo_cut_short_anywhere_is_caught(tmp_path: Path) -> None:
    """Validation decodes at the smallest size, which still reads every byte: a 12 MP JPEG cut
    short near its end is truncated, and a whole one, turned by EXIF, is its upright size."""
    from tests.phone_photos import phone_jpeg

    upload = phone_jpeg(seed=2, orientation=6)
    (tmp_path / "whole.jpg").write_bytes(upload)
    (tmp_path / "end.jpg").write_bytes(upload[:-2000])
    (tmp_path / "half.jpg").write_bytes(upload[: len(upload) // 2])
    rows = [
        f'{name}.jpg,i{i},logo,authentic,,,"0,0,3024,4032",,,'
        for i, name in enumerate(("whole", "end", "half"))
    ]
    assert _codes(_manifest(tmp_path, rows)) == {3: {"truncated_image"}, 4: {"truncated_image"}}


def test_whole_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "absent.csv")
    missing_column = _manifest(tmp_path, ["a.jpg,i1,logo"], header="image,item_id,region\n")
    with pytest.raises(ManifestError, match=r"missing column.*label"):
        read_manifest(missing_column)
    (tmp_path / "latin1.csv").write_bytes(
        HEADER.encode() + "é.jpg,i1,logo,,,,,,,\n".encode("latin-1")
    )
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(tmp_path / "latin1.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(tmp_path / "blank.csv")
    header_only = _manifest(tmp_path, [])
    assert read_manifest(header_only).issues[0].code == "empty_manifest"


def test_sidecar_declares_the_region_vocabulary(tmp_path: Path) -> None:
    _photo(tmp_path / "a.jpg")
    path = _manifest(tmp_path, ["a.jpg,i1,dial,authentic,watch,,,,,"])
    assert read_manifest(path).issues[0].code == "unknown_region"
    (tmp_path / "manifest.yaml").write_text("regions: [dial, caseback]\n")
    assert read_manifest(path).issues == []
    assert read_manifest(path, regions=["logo"]).issues[0].code == "unknown_region"
    (tmp_path / "manifest.yaml").write_text("regoins: [dial]\n")
    with pytest.raises(ManifestError, match="regoins"):
        read_manifest(path)
    (tmp_path / "manifest.yaml").write_text("regions: [Dial Face]\n")
    with pytest.raises(ManifestError, match="lowercase"):
        read_manifest(path)


def test_write_keeps_extra_columns_and_rewrites_relative_paths(tmp_path: Path) -> None:
    _photo(tmp_path / "data" / "img" / "a.jpg")
    source = tmp_path / "data" / "manifest.csv"
    source.write_text(
        HEADER.rstrip("\n") + ",cue_strength\n"
        "img/a.jpg,i1,logo,counterfeit,bag,,,test,synthetic,,0.42\n"
    )
    manifest = load_manifest(source)
    assert manifest.extra_columns == ["cue_strength"]
    out = tmp_path / "elsewhere" / "copy.csv"
    write_manifest(out, manifest.records, DatasetInfo(regions=("logo",)), manifest.extra_columns)
    copy = load_manifest(out)
    assert copy.records[0].image == "../data/img/a.jpg"
    assert copy.records[0].path == manifest.records[0].path
    assert copy.records[0].extra == {"cue_strength": "0.42"}
    assert copy.info.regions == ("logo",)
    assert copy.records[0].split == "test" and copy.records[0].source == "synthetic"

"""`touchstone data import` for DIR/<label>/<region>/*.jpg."""

from pathlib import Path

import pytest
from PIL import Image

from touchstone.data.importing import FolderImportError, import_folder
from touchstone.data.manifest import load_manifest


def _photo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (120, 80, 40)).save(path)


def test_region_folders(tmp_path: Path) -> None:
    for name in (
        "authentic/logo/A1_1.jpg",
        "authentic/logo/A1_2.jpg",
        "authentic/hardware/A1_3.png",
        "counterfeit/stitching/F9_1.jpeg",
        "unlabelled/logo/U4_1.jpg",
    ):
        _photo(tmp_path / "photos" / name)
    (tmp_path / "photos" / "authentic" / "logo" / "notes.txt").write_text("ignored")
    (tmp_path / "photos" / "authentic" / "logo" / ".hidden.jpg").write_text("ignored")
    result = import_folder(
        tmp_path / "photos",
        tmp_path / "out" / "manifest.csv",
        item_pattern=r"^([^_]+)_",
        category="bag",
    )
    manifest = load_manifest(result.manifest)
    rows = {(r.item_id, r.region, r.label) for r in manifest.records}
    assert rows == {
        ("A1", "logo", "authentic"),
        ("A1", "hardware", "authentic"),
        ("F9", "stitching", "counterfeit"),
        ("U4", "logo", None),
    }
    assert len(manifest.records) == 5
    assert all(r.source == "import" and r.category == "bag" for r in manifest.records)
    assert manifest.records[0].image.startswith("../photos/")


def test_without_region_folders_a_region_must_be_named(tmp_path: Path) -> None:
    _photo(tmp_path / "authentic" / "p1.jpg")
    _photo(tmp_path / "counterfeit" / "p2.jpg")
    with pytest.raises(FolderImportError, match="--region"):
        import_folder(tmp_path, tmp_path / "m.csv")
    result = import_folder(tmp_path, tmp_path / "m.csv", region="hardware")
    manifest = load_manifest(result.manifest)
    assert {(r.item_id, r.region) for r in manifest.records} == {
        ("p1", "hardware"),
        ("p2", "hardware"),
    }


@pytest.mark.parametrize(
    ("layout", "message"),
    [("genuine/logo/a.jpg", "not a label"), ("authentic/sole/a.jpg", "not a region")],
)
def test_unknown_folders_are_refused(tmp_path: Path, layout: str, message: str) -> None:
    _photo(tmp_path / "in" / layout)
    with pytest.raises(FolderImportError, match=message):
        import_folder(tmp_path / "in", tmp_path / "m.csv")


def test_item_pattern_must_have_a_group(tmp_path: Path) -> None:
    _photo(tmp_path / "authentic" / "logo" / "a.jpg")
    with pytest.raises(FolderImportError, match="group"):
        import_folder(tmp_path, tmp_path / "m.csv", item_pattern="^a")
    with pytest.raises(FolderImportError, match="none of the 1 photos"):
        import_folder(tmp_path, tmp_path / "m.csv", item_pattern=r"^(x)")
    _photo(tmp_path / "authentic" / "logo" / "x1.jpg")
    result = import_folder(tmp_path, tmp_path / "m.csv", item_pattern=r"^(x\d)")
    assert [r.item_id for r in result.records] == ["x1"]
    assert result.skipped and result.skipped[0].code == "no_item_id"


def test_imports_the_formats_the_service_accepts(tmp_path: Path) -> None:
    """The suffixes come from touchstone.imaging's allowlist: a BMP, TIFF or GIF is not
    imported (decoding would refuse it), a HEIC or HEIF from a phone is."""
    import touchstone.imaging  # noqa: F401 (registers the HEIF encoder too)

    folder = tmp_path / "photos" / "authentic" / "logo"
    folder.mkdir(parents=True)
    for name, fmt in [
        ("a.jpg", "JPEG"),
        ("b.PNG", "PNG"),
        ("c.webp", "WEBP"),
        ("d.heic", "HEIF"),
        ("e.HEIF", "HEIF"),
        ("f.bmp", "BMP"),
        ("g.tif", "TIFF"),
        ("h.tiff", "TIFF"),
        ("i.gif", "GIF"),
    ]:
        Image.new("RGB", (40, 40), (120, 80, 40)).save(folder / name, format=fmt)
    result = import_folder(tmp_path / "photos", tmp_path / "out" / "manifest.csv")
    imported = sorted(Path(r.image).name for r in load_manifest(result.manifest).records)
    assert imported == ["a.jpg", "b.PNG", "c.webp", "d.heic", "e.HEIF"]

"""`touchstone data ...` end to end: exit codes, summaries, files written."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    # rich wraps long lines at the terminal's width, which differs between machines.
    return result.exit_code, " ".join(result.output.split())


def test_validate_prints_the_summary_and_exits_zero(tiny_synthetic: Path) -> None:
    code, output = _run("data", "validate", str(tiny_synthetic))
    assert code == 0, output
    assert "split" in output and "stitching" in output and "counterfeit" in output
    assert "0 error(s)" in output


def test_validate_exits_one_on_errors_and_writes_a_report(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    broken = tmp_path / "broken.csv"
    rows = list(csv.reader(tiny_synthetic.open()))
    rows[1][3] = "genuine"
    rows[2][0] = "images/none.jpg"
    root = tiny_synthetic.parent
    for row in rows[1:]:
        if not row[0].startswith("/"):
            row[0] = str(root / row[0])
    with broken.open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    code, output = _run("data", "validate", str(broken), "--report", str(tmp_path / "r.json"))
    assert code == 1
    assert "unknown_label" in output and "missing_file" in output
    assert "2 error(s)" in output
    assert '"code": "unknown_label"' in (tmp_path / "r.json").read_text()


def test_validate_exits_two_when_it_cannot_read_the_manifest(tmp_path: Path) -> None:
    code, output = _run("data", "validate", str(tmp_path / "absent.csv"))
    assert code == 2 and "no such manifest" in output


def test_split_then_sheet(tmp_path: Path, tiny_synthetic: Path) -> None:
    out = tmp_path / "split.csv"
    code, output = _run(
        "data",
        "split",
        str(tiny_synthetic),
        "--out",
        str(out),
        "--seed",
        "4",
        "--reassign",
        "--fractions",
        "0.5,0.25,0,0.25",
    )
    assert code == 0, output
    assert "near-duplicate" in output
    records = list(csv.DictReader(out.open()))
    assert {r["split"] for r in records} == {"train", "val", "test"}
    code, output = _run("data", "validate", str(out))
    assert code == 0, output
    code, output = _run("data", "sheet", str(out), "--out", str(tmp_path / "sheet.png"))
    assert code == 0, output
    assert (tmp_path / "sheet.png").stat().st_size > 10_000


def test_split_reports_near_duplicates_that_cross_kept_splits(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic.parent, data)
    manifest = data / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    first = rows[0]
    other = next(r for r in rows if r["split"] != first["split"])
    # The same photo, re-saved under another item in another split: a leak.
    copy = data / "images" / "copy.png"
    from PIL import Image

    Image.open(data / first["image"]).save(copy)
    leak = dict(other, image="images/copy.png")
    with manifest.open("a", newline="") as stream:
        csv.DictWriter(stream, fieldnames=list(rows[0])).writerow(leak)
    code, output = _run(
        "data",
        "split",
        str(manifest),
        "--out",
        str(tmp_path / "s.csv"),
        "--duplicates-report",
        str(tmp_path / "pairs.csv"),
    )
    assert code == 0, output
    assert "1 cross splits" in output and "copy.png" in output
    pairs = list(csv.DictReader((tmp_path / "pairs.csv").open()))
    assert any("copy.png" in (p["image_a"] + p["image_b"]) for p in pairs)


def test_split_refuses_rows_it_would_drop(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,item_id,region,label\na.jpg,i1,logo,authentic\nb.jpg,i2\n")
    code, output = _run("data", "split", str(manifest), "--out", str(tmp_path / "s.csv"))
    assert code == 2 and "line 3" in output
    assert not (tmp_path / "s.csv").exists()


def test_split_refuses_bad_fractions(tiny_synthetic: Path, tmp_path: Path) -> None:
    code, output = _run(
        "data",
        "split",
        str(tiny_synthetic),
        "--out",
        str(tmp_path / "x.csv"),
        "--fractions",
        "0.9,0.9,0,0",
    )
    assert code == 2 and "add up to 1" in output


def test_synth_and_import_commands(tmp_path: Path) -> None:
    code, output = _run(
        "data",
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--items",
        "4",
        "--size",
        "48",
        "--workers",
        "1",
        "--difficulty",
        "easy",
    )
    assert code == 0, output
    assert (tmp_path / "s" / "manifest.csv").exists()
    code, output = _run("data", "synth", "--out", str(tmp_path / "t"), "--difficulty", "brutal")
    assert code == 2 and "difficulty" in output
    config = tmp_path / "synth.yaml"
    config.write_text("items: 3\nsize: 48\nitmes: 4\n")
    code, output = _run("data", "synth", "--out", str(tmp_path / "u"), "--config", str(config))
    assert code == 2 and "itmes" in output  # a typo in a key is an error naming the key
    config.write_text("items: 3\nsize: 48\ndifficulty: hard\n")
    code, output = _run(
        "data",
        "synth",
        "--out",
        str(tmp_path / "u"),
        "--config",
        str(config),
        "--items",
        "2",
        "--workers",
        "1",
    )
    assert code == 0, output
    generated = (tmp_path / "u" / "manifest.yaml").read_text()
    assert "items: 2" in generated and "difficulty: hard" in generated
    photos = tmp_path / "folder"
    (photos / "authentic" / "logo").mkdir(parents=True)
    shutil.copy(
        next((tmp_path / "s" / "images").rglob("logo-1.jpg")),
        photos / "authentic" / "logo" / "x_1.jpg",
    )
    code, output = _run(
        "data", "import", "--images", str(photos), "--out", str(tmp_path / "imported.csv")
    )
    assert code == 0, output
    assert "1 photos of 1 items" in output and "--item-pattern" in output


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "touchstone"
    result = subprocess.run(
        [str(exe), "data", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("validate", "split", "import", "synth", "sheet"):
        assert command in result.stdout


def test_train_refuses_a_bad_config_naming_the_key(tmp_path: Path, tiny_synthetic: Path) -> None:
    code, output = _run(
        "train",
        "--data",
        str(tiny_synthetic),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "optim.epohcs=2",
    )
    assert code == 2 and "optim.epohcs" in output
    code, output = _run(
        "train",
        "--data",
        str(tmp_path / "absent.csv"),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "model.arch=test_resnet",
    )
    assert code == 2 and "no such manifest" in output
    code, output = _run(
        "train",
        "--data",
        str(tiny_synthetic),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "model.arch=resnet18",
        "--set",
        "model.pretrained=file",
    )
    assert code == 2 and "pretrained_file" in output

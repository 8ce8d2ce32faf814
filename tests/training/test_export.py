"""Export to ONNX with a model card, the parity check, int8, evaluation of any manifest, and
the registry's `champion`: on a tiny network trained on a small synthetic set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from touchstone.data.manifest import load_manifest
from touchstone.evaluation.scoring import score_records
from touchstone.imaging import decode_photo
from touchstone.inference import OnnxModel
from touchstone.model_card import ModelCardError, load_model_dir
from touchstone.registry import fetch_model_dir, promote
from training import quantization
from training.export import ExportError, check_parity, export_onnx, export_run, load_trained

ROOT = Path(__file__).resolve().parents[2]
TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")


def test_training_writes_an_evaluation_report(tiny_run: Path) -> None:
    folder = tiny_run / "evaluation"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["decisions"]["items"] > 0
    assert "ECE" in (folder / "report.md").read_text()
    for plot in ("reliability.png", "risk_coverage.png", "decisions.png"):
        assert (folder / plot).stat().st_size > 5_000


def test_export_writes_a_model_its_card_and_a_report(
    tiny_model: Path, tiny_run: Path, tiny_synthetic: Path
) -> None:
    model_dir = load_model_dir(tiny_model)
    card = model_dir.card
    assert card.regions == ("hardware", "stitching", "logo")
    assert card.preprocessing.input_size == 64 and card.preprocessing.mean == (0.5, 0.5, 0.5)
    assert card.onnx.opset >= 17 and card.onnx.quantization == "none"
    assert card.data["manifest_sha256"] == load_manifest(tiny_synthetic).content_hash()
    assert card.git_commit and card.created_at
    assert set(card.calibration.item.region_weights) == set(card.regions)
    # Two dozen items cannot bound a 0.5% rate: everything goes to people, and the card says why.
    assert card.thresholds.authentic_at is None
    evidence = card.thresholds.evidence["false_authentic"]
    assert "no threshold passes" in evidence["reason"] and "plan" in evidence
    # Certified for a declared range of counterfeit share, on calib's items only.
    assert card.thresholds.targets.counterfeit_share.high == 0.30
    assert card.calibration.fitted_on == "val"
    assert set(card.thresholds.sample.sources) == {"calib"}
    assert card.metrics["coverage"] == 0.0
    assert (tiny_model / "evaluation" / "report.md").exists()

    # Served scores are the trained network's scores, through the same preprocessing.
    model = OnnxModel(tiny_model)
    trained = load_trained(tiny_run)
    records = load_manifest(tiny_synthetic).records[:5]
    images = [decode_photo(r.path) for r in records]
    served = model.score(images, [r.region for r in records])
    batch = torch.from_numpy(np.stack([model.prepare(i) for i in images]))
    columns = [trained.regions.index(r.region) for r in records]
    with torch.no_grad():
        expected = trained.net(batch).numpy()[np.arange(5), columns]
    assert np.abs(served - expected).max() <= 1e-4
    # Dynamic batch: one photo at a time gives the same numbers.
    single = np.concatenate(
        [model.score([i], [r.region]) for i, r in zip(images, records, strict=True)]
    )
    assert np.abs(single - served).max() <= 1e-5


def test_registry_candidate_promote_and_load_by_alias(
    tiny_model: Path, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_run.parent / 'mlflow.db'}")
    promote("touchstone-authenticity-onnx", "1")
    fetched = fetch_model_dir("models:/touchstone-authenticity-onnx@champion", tmp_path)
    assert load_model_dir(fetched).card.onnx.sha256 == load_model_dir(tiny_model).card.onnx.sha256
    shown = subprocess.run(
        [TOUCHSTONE, "promote", "--version", "99"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 2 and "not found" in shown.stdout


def test_parity_check_fails_when_the_graph_is_tampered_with(tiny_run: Path, tmp_path: Path) -> None:
    trained = load_trained(tiny_run)
    path = tmp_path / "model.onnx"
    export_onnx(trained.net, 64, path)
    assert check_parity(trained.net, path, 64) <= 1e-4
    graph = onnx.load(str(path))
    first = graph.graph.initializer[0]
    weights = numpy_helper.to_array(first).copy()
    weights.flat[0] += 0.5
    first.CopyFrom(numpy_helper.from_array(weights, first.name))
    onnx.save(graph, str(path))
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(trained.net, path, 64)


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(source, target)
    return target


def test_a_corrupt_or_mismatched_card_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    model = _copy(tiny_model, tmp_path)
    card_path = model / "model.json"
    good = json.loads(card_path.read_text())

    card_path.write_text("{ not json")
    with pytest.raises(ModelCardError) as error:
        load_model_dir(model)
    assert error.value.code == "card_unreadable"

    broken = {k: v for k, v in good.items() if k != "preprocessing"}
    card_path.write_text(json.dumps(broken))
    with pytest.raises(ModelCardError, match="preprocessing") as error:
        load_model_dir(model)
    assert error.value.code == "card_invalid"

    outdated = json.loads(json.dumps(good))
    outdated["format"] = "touchstone-model-card/1"
    card_path.write_text(json.dumps(outdated))
    with pytest.raises(ModelCardError, match="export the model again") as error:
        load_model_dir(model)
    assert error.value.code == "card_outdated"

    crossed = json.loads(json.dumps(good))
    crossed["thresholds"].update(authentic_at=0.2, counterfeit_at=0.8)
    card_path.write_text(json.dumps(crossed))
    with pytest.raises(ModelCardError, match="below") as error:
        load_model_dir(model)
    assert error.value.code == "card_invalid"

    other = json.loads(json.dumps(good))
    other["onnx"]["sha256"] = "0" * 64
    card_path.write_text(json.dumps(other))
    with pytest.raises(ModelCardError) as error:
        load_model_dir(model)
    assert error.value.code == "onnx_hash_mismatch"

    # A card for another model: two regions where the graph gives three columns.
    two = json.loads(json.dumps(good))
    two["regions"] = ["hardware", "logo"]
    two["calibration"]["item"]["region_weights"] = {"hardware": 1.0, "logo": 1.0}
    two["thresholds"]["required_regions"] = {}
    card_path.write_text(json.dumps(two))
    with pytest.raises(ModelCardError, match="one column per region") as error:
        OnnxModel(model)
    assert error.value.code == "card_mismatch"

    (model / "model.onnx").unlink()
    card_path.write_text(json.dumps(good))
    with pytest.raises(ModelCardError) as error:
        load_model_dir(model)
    assert error.value.code == "onnx_missing"


def test_evaluate_refuses_a_bad_model_directory_with_a_clear_error(
    tiny_model: Path, tiny_synthetic: Path, tmp_path: Path
) -> None:
    model = _copy(tiny_model, tmp_path)
    (model / "model.json").write_text("[]")
    shown = subprocess.run(
        [
            TOUCHSTONE,
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(tiny_synthetic),
            "--out",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 2
    assert "model.json" in shown.stdout and "Traceback" not in shown.stderr


def test_evaluate_a_foreign_manifest_with_other_regions(
    tiny_model: Path, tiny_synthetic: Path, tmp_path: Path
) -> None:
    """Data from elsewhere: its own region vocabulary, no splits. Photos of regions the model
    knows are scored; the others are left out and counted."""
    rows = tiny_synthetic.read_text().splitlines()
    header = rows[0].split(",")
    image, region, split = header.index("image"), header.index("region"), header.index("split")
    out_rows = [",".join(c for i, c in enumerate(header) if i != split)]
    for number, line in enumerate(rows[1:]):
        cells = line.split(",")
        cells[image] = str(tiny_synthetic.parent / cells[image])
        if cells[region] == "hardware":
            cells[region] = "clasp" if number % 2 else "hardware"
        if cells[region] == "stitching":
            continue
        out_rows.append(",".join(c for i, c in enumerate(cells) if i != split))
    manifest = tmp_path / "foreign.csv"
    manifest.write_text("\n".join(out_rows) + "\n")
    manifest.with_suffix(".yaml").write_text("regions: [logo, hardware, clasp]\n")
    shown = subprocess.run(
        [
            TOUCHSTONE,
            "evaluate",
            "--model",
            str(tiny_model),
            "--data",
            str(manifest),
            "--out",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "no splits" in shown.stdout and "clasp" in shown.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    clasps = sum(",clasp," in line for line in out_rows)
    assert metrics["data"]["unknown_region_photos"] == clasps > 0
    assert metrics["photo"]["count"] == len(out_rows) - 1 - clasps
    assert "stitching/count" not in metrics["photo"]
    # Both sides of the card's certification, its range and its evidence plan are shown; no
    # item shows stitching, which the card requires of bags and watches.
    for words in ("certified for counterfeit share", "authentic side", "counterfeit side"):
        assert words in shown.stdout
    assert "more labelled items" in shown.stdout or "separate the classes" in shown.stdout
    required = load_model_dir(tiny_model).card.thresholds.required_regions
    needing_stitching = [c for c, regions in required.items() if "stitching" in regions]
    assert needing_stitching and metrics["decisions"]["missing_region"] > 0


def test_int8_export_records_the_accuracy_change_and_refuses_a_loss(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = export_run(tiny_run, tmp_path / "int8", quantize="int8", register=False)
    card = load_model_dir(result.model_dir).card
    assert card.onnx.quantization == "int8"
    change = card.metrics["quantization"]
    assert change["item_accuracy_change"] == pytest.approx(
        change["item_accuracy_int8"] - change["item_accuracy_fp32"]
    )
    assert change["int8_bytes"] < change["fp32_bytes"]
    shipped = OnnxModel(result.model_dir)  # loads and matches its card
    # The scores export keeps for analyses are the shipped int8 model's, split by split.
    assert set(result.scores) == {"val", "calib", "test"}
    test = result.scores["test"]
    assert {r.split for r in test.records} == {"test"}
    again = score_records(test.records[:8], shipped.predict, shipped.preprocessing, card.regions)
    assert np.abs(again.log_odds - test.log_odds[:8]).max() <= 1e-5

    # Any loss at all is too much here, so the export must refuse without --force.
    monkeypatch.setattr(quantization, "MAX_INT8_ITEM_ACCURACY_DROP", -1.0)
    with pytest.raises(ExportError, match="--force"):
        export_run(tiny_run, tmp_path / "refused", quantize="int8", register=False)
    assert not (tmp_path / "refused" / "model.onnx").exists()


def test_export_errors_are_clear(tiny_run: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"best\.pt"):
        export_run(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="already holds a model"):
        export_run(tiny_run, tiny_model, register=False)

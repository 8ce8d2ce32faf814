"""The shared core never imports torch: serving installs `.[serve]` alone."""

import subprocess
import sys


def test_the_core_and_the_command_line_do_not_import_torch() -> None:
    code = (
        "import sys, cli, touchstone.imaging, touchstone.data.synth, "
        "touchstone.data.validation, touchstone.data.near_duplicates, touchstone.decision, "
        "touchstone.model_card, touchstone.inference, touchstone.registry, serving, serving.app\n"
        "heavy = [m for m in ('torch', 'timm', 'mlflow', 'albumentations') if m in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_evaluating_an_exported_model_needs_no_torch() -> None:
    """`touchstone evaluate` runs ONNX models: it must work where only ONNX Runtime is."""
    code = (
        "import sys, touchstone.evaluation.evaluate_model, touchstone.evaluation.thresholds, "
        "touchstone.evaluation.calibration\n"
        "heavy = [m for m in ('torch', 'timm', 'albumentations') if m in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

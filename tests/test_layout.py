"""The shared core never imports torch: serving installs `.[serve]` alone."""

import subprocess
import sys


def test_the_core_and_the_command_line_do_not_import_torch() -> None:
    code = (
        "import sys, touchstone.cli, touchstone.imaging, touchstone.data.synth, "
        "touchstone.data.validation, touchstone.data.near_duplicates, serving\n"
        "heavy = [m for m in ('torch', 'timm', 'mlflow', 'albumentations') if m in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

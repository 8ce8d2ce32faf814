"""The architecture, read from the code: which package may import which, how long a module may
grow, and the typed edge of the service (state read in one place, a schema for every answer).

The floors, bottom up: `touchstone` (the core, no torch) < `training` (torch) and `serving` (no
torch) < `cli` (the `touchstone` command). A package imports only from the floors below it, and
serving never reaches training or torch."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = {"torch", "torchvision", "timm", "albumentations"}
FORBIDDEN = {
    "touchstone": {"training", "serving", "cli"} | TORCH,
    "training": {"serving", "cli"},
    "serving": {"training", "cli"} | TORCH,
}
MAX_LINES = 400


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_import_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os.path\nfrom serving.db import x\n\ndef late():\n    import torch\n"
        "    from . import sibling\n"
    )
    assert imported_packages(planted) == {"os", "serving", "torch"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_imports_only_the_floors_below_it(package: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("package", ["touchstone", "training", "serving"])
def test_no_module_grows_past_the_limit(package: str) -> None:
    long = [
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path in modules(package)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)


def test_only_the_dependencies_read_the_apps_state() -> None:
    """Routes and pages say what they need in their signatures (`serving/deps.py`); the app
    builds the state, and nothing else touches it."""
    allowed = {ROOT / "serving" / "deps.py", ROOT / "serving" / "app.py"}
    readers = [
        str(path.relative_to(ROOT))
        for path in modules("serving")
        if "app.state" in path.read_text(encoding="utf-8") and path not in allowed
    ]
    assert not readers


def test_every_route_answers_through_a_schema() -> None:
    from fastapi.routing import APIRoute

    from serving.app import create_app
    from serving.settings import Settings

    app = create_app(Settings())
    bare = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        answer = inspect.signature(route.endpoint).return_annotation
        text = answer if isinstance(answer, str) else getattr(answer, "__name__", str(answer))
        if text.startswith(("dict", "Any")) or "dict[" in text:
            bare.append(f"{route.path} returns {text}")
    assert not bare, "\n".join(bare)
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                json_body = response.get("content", {}).get("application/json")
                if json_body is not None and status.startswith("2"):
                    schema = json_body["schema"]
                    assert "$ref" in schema, f"{method.upper()} {path} {status}: {schema}"


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

"""Each install on its own, the way a user or the image gets it: `.[serve]` alone starts the
service and appraises an item; `.[train]` alone runs the command. The other tests run in one
virtualenv with every extra, where a dependency that only another extra brings goes unseen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving_support import form, free_port, item_photos
from tests.test_docs import repo_files

pytestmark = [pytest.mark.install, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# The installs see neither the main virtualenv nor settings meant for another service.
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in {"PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI"}
    and not k.startswith("TOUCHSTONE_")
}


def run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True)


def said(result: subprocess.CompletedProcess, limit: int = 8000) -> str:
    return (result.stdout + result.stderr)[-limit:]


def working_tree(dest: Path) -> Path:
    """A copy of the files a clone with these changes has: not what git ignores, since a stale
    build/ would go into the wheel and .venv would take minutes to copy."""
    for name in repo_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # A train virtualenv is 6 GB, and pytest keeps the last three runs' folders.
    shutil.rmtree(tmp_path, ignore_errors=True)


def install(extra: str, where: Path) -> Path:
    """A fresh virtualenv with the project and `extra` built from the working tree (not
    editable): its bin folder."""
    source = working_tree(where / "source")
    venv = where / "venv"
    made = run([sys.executable, "-m", "venv", venv], cwd=where)
    assert made.returncode == 0, said(made)
    # --no-compile: byte-compiling at install nearly doubles the train install (61 s, 110 s).
    pip = run([venv / "bin" / "pip", "install", "--no-compile", f"{source}[{extra}]"], cwd=where)
    assert pip.returncode == 0, f"pip install '.[{extra}]' failed:\n{said(pip)}"
    return venv / "bin"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def server_log(workdir: Path) -> str:
    return (workdir / "server.log").read_text()[-8000:]


def test_the_serve_install_alone_appraises_an_item(
    workdir: Path, tiny_model: Path, tiny_synthetic: Path
) -> None:
    bin_ = install("serve", workdir)
    torch = run([bin_ / "python", "-c", "import torch"], cwd=workdir)
    assert torch.returncode != 0, "torch is importable in a `.[serve]` install"
    assert "No module named 'torch'" in torch.stderr, said(torch)
    helped = run([bin_ / "touchstone", "--help"], cwd=workdir)
    assert helped.returncode == 0, said(helped)

    data, port = workdir / "data", free_port()
    args = ["serve", "--model", tiny_model, "--data-dir", data, "--port", str(port)]
    with open(workdir / "server.log", "w") as log:
        server = subprocess.Popen(
            [str(a) for a in [bin_ / "touchstone", *args]],
            cwd=workdir,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ready(url):
            assert server.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "not ready in 90 s"
            time.sleep(0.3)
        created = run(
            [
                *(bin_ / "touchstone", "admin", "create-key"),
                *("--role", "member_backend", "--data-dir", data),
            ],
            cwd=workdir,
        )
        assert created.returncode == 0, said(created)
        key = created.stdout.strip().splitlines()[-1]
        response = httpx.post(
            f"{url}/v1/appraisals",
            headers={"Authorization": f"Bearer {key}"},
            data=form(),
            files=item_photos(tiny_synthetic),
            timeout=60,
        )
        assert response.status_code == 201, response.text
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe server said:\n{server_log(workdir)}") from exc
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_train_install_alone_runs_the_command(workdir: Path) -> None:
    bin_ = install("train", workdir)
    for command in ([], ["train"], ["evaluate"]):
        result = run([bin_ / "touchstone", *command, "--help"], cwd=workdir)
        assert result.returncode == 0, f"touchstone {' '.join(command)} --help:\n{said(result)}"

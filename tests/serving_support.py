"""Helpers for the serving tests: a real uvicorn process, real databases, real photos."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from touchstone.data.manifest import load_manifest

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"touchstone_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    data_dir: Path
    database_url: str | None

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def key(self, role: str) -> str:
        from serving.auth import create_key
        from serving.db import default_database_url, make_engine, make_sessionmaker

        engine = make_engine(self.database_url or default_database_url(self.data_dir))
        with make_sessionmaker(engine)() as session:
            key = create_key(session, role)
        engine.dispose()
        return key

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def start_server(
    data_dir: Path,
    model: Path | None,
    database_url: str | None = None,
    policy: Path | None = None,
    extra: list[str] | None = None,
    wait_ready: bool = True,
) -> Server:
    port = free_port()
    args = [TOUCHSTONE, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if model is not None:
        args += ["--model", str(model)]
    if policy is not None:
        args += ["--policy", str(policy)]
    args += extra or []
    env = dict(os.environ)
    env.pop("TOUCHSTONE_DATABASE_URL", None)
    if database_url:
        env["TOUCHSTONE_DATABASE_URL"] = database_url
    log = open(data_dir.parent / f"server-{port}.log", "w")  # noqa: SIM115 (kept for the process)
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, data_dir, database_url)
    deadline = time.monotonic() + 90
    path = "/readyz" if (wait_ready and model is not None) else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(Path(log.name).read_text())
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start: " + Path(log.name).read_text())


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def jpeg(color: tuple[int, int, int] = (120, 90, 60), size: int = 96, noise: bool = True) -> bytes:
    """A photo that passes the quality checks: textured, mid-bright."""
    import numpy as np

    rng = np.random.default_rng(sum(color))
    pixels = np.full((size, size, 3), color, np.float32)
    if noise:
        pixels += rng.normal(0, 40, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def item_photos(manifest: Path, index: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The photos of one synthetic item, as multipart parts named by region."""
    records = load_manifest(manifest).records
    item = sorted({r.item_id for r in records})[index]
    return [
        (r.region, (r.path.name, r.path.read_bytes(), "image/jpeg"))
        for r in records
        if r.item_id == item
    ]


def form(member: str = "m-1", tier: str = "explorer", **extra: str) -> dict[str, str]:
    return {"member_id": member, "member_tier": tier, "category": "bag", **extra}

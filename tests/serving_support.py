"""Helpers for the serving tests: a real uvicorn process, real databases, real photos."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
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
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from touchstone.data.manifest import load_manifest

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


# Item log-odds the tiny test model always reaches on one side or the other (p 0.5 and 0.4999):
# served on a card, they make it decide every item it may judge.
DECIDING = {"authentic_at": 0.0, "counterfeit_at": -0.0004}


def model_with_card(model: Path, out: Path, **thresholds: object) -> Path:
    """A copy of an exported model whose card's `thresholds` block has these keys replaced
    (`authentic_at`, `counterfeit_at` in log-odds, `required_regions`, `targets`...): what a
    model certified with them would carry. The ONNX file is copied as it is, so the card's
    hash still holds; `version` renames the card (the tests tell models apart by it)."""
    out.mkdir(parents=True)
    shutil.copy2(model / "model.onnx", out / "model.onnx")
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    version = thresholds.pop("version", None)
    if version is not None:
        card["version"] = version
    card["thresholds"].update(thresholds)
    (out / "model.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return out


def deciding_model(model: Path, out: Path, **thresholds: object) -> Path:
    """`model` with a card that lets it decide alone (`DECIDING`, overridable per key)."""
    return model_with_card(model, out, **{**DECIDING, **thresholds})


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


class MemberTokens:
    """The membership platform's side of member tokens: a key pair made in the test; the server
    trusts the public half (a PEM file)."""

    def __init__(self, public_file: Path) -> None:
        self.private_key = Ed25519PrivateKey.generate()
        self.public_file = public_file
        public_file.write_bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(
        self,
        member: str,
        lifetime: float = 600,
        issued_at: float | None = None,
        signing_key: object = None,
        algorithm: str = "EdDSA",
        **claims: object,
    ) -> str:
        issued = time.time() if issued_at is None else issued_at
        payload = {"sub": member, "iat": int(issued), "exp": int(issued + lifetime), **claims}
        return jwt.encode(payload, signing_key or self.private_key, algorithm=algorithm)  # type: ignore[arg-type]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    data_dir: Path
    database_url: str | None
    member_tokens: MemberTokens | None = None

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def member_token(self, member: str, **options: object) -> str:
        assert self.member_tokens is not None, "this server trusts no member-token key"
        return self.member_tokens.token(member, **options)  # type: ignore[arg-type]

    def member_client(self, member: str, key: str | None = None) -> httpx.Client:
        """The members' app calling for `member`: an `app` key and the member's token."""
        client = self.client(key or self.key("app"))
        client.headers["X-Member-Token"] = self.member_token(member)
        return client

    def database(self):  # -> tuple[Engine, sessionmaker]
        """The server's database, from the test's side (dispose of the engine when done)."""
        from serving.db import default_database_url, make_engine, make_sessionmaker

        engine = make_engine(self.database_url or default_database_url(self.data_dir))
        return engine, make_sessionmaker(engine)

    def touchstone(self, *args: str):  # -> click.testing.Result
        """A `touchstone` command, in process, on the server's data directory and database."""
        from typer.testing import CliRunner

        from cli import app

        return CliRunner().invoke(
            app,
            [*args, "--data-dir", str(self.data_dir)],
            env={"TOUCHSTONE_DATABASE_URL": self.database_url},  # None: unset, SQLite
        )

    def key(self, role: str, expires_at: dt.datetime | None = None) -> str:
        from serving.auth import create_key

        engine, sessions = self.database()
        with sessions() as session:
            key = create_key(session, role, expires_at=expires_at)
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
    env: dict[str, str] | None = None,
) -> Server:
    """A server in its own process; it trusts a member-token key made here (`Server.member_token`)
    unless `env` names its own; `env` adds TOUCHSTONE_* settings."""
    port = free_port()
    args = [TOUCHSTONE, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if model is not None:
        args += ["--model", str(model)]
    if policy is not None:
        args += ["--policy", str(policy)]
    args += extra or []
    # Tests about other things are not held back by the submissions limit.
    settings = {"TOUCHSTONE_MEMBER_SUBMISSIONS_PER_HOUR": "1000000", **(env or {})}
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = None
    if not {"TOUCHSTONE_MEMBER_TOKEN_PUBLIC_KEY", "TOUCHSTONE_MEMBER_TOKEN_JWKS"} & set(settings):
        tokens = MemberTokens(data_dir.parent / f"member-token-key-{port}.pem")
        settings["TOUCHSTONE_MEMBER_TOKEN_PUBLIC_KEY"] = str(tokens.public_file)
    environment = {**os.environ, **settings}
    environment.pop("TOUCHSTONE_DATABASE_URL", None)
    if database_url:
        environment["TOUCHSTONE_DATABASE_URL"] = database_url
    log = open(data_dir.parent / f"server-{port}.log", "w")  # noqa: SIM115 (kept for the process)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = Server(f"http://127.0.0.1:{port}", process, data_dir, database_url, tokens)
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


def announce(server: Server, member: str, tier: str) -> None:
    """The membership platform sets the member's tier (`PUT /v1/members/{id}`): the only way a
    member is anything but an explorer; a form's `member_tier` must then agree with it."""
    with server.client(server.key("platform")) as client:
        answer = client.put(f"/v1/members/{member}", json={"tier": tier})
    assert answer.status_code == 200, answer.text

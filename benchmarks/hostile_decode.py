"""Memory under hostile photos: what one decode costs, and the service's peak under a burst.

    .venv/bin/python benchmarks/hostile_decode.py [--uploads 32] [--kind png16] \
        [--slots default,32] [--megapixels 50] [--guard-gb 12] [--skip-service] \
        [--skip-decodes] [--decode-memory-mb N]

1. One decode, each kind of photo the service accepts at its costliest (a 16-bit grey PNG, an
   RGBA PNG, a JPEG, a HEIC): `decode_photo` in a fresh process, at `--per-decode-megapixels`
   (12 by default: the cost grows with the pixels); the peak RSS it adds, per pixel. This is
   where `touchstone.imaging.PEAK_BYTES_PER_PIXEL`, which sizes the decode semaphore, comes
   from.
2. The service: a real `touchstone serve` (no model, SQLite, a temporary data dir), for each
   `--slots` setting ("default": sized by the service to memory and cores; a number: that many
   decodes at once; 32 is no bound in practice), gets `--uploads` appraisals at once, each one
   photo of `--kind` at the pixel limit (50 MP): a 16-bit PNG of 50 MP made of repeated rows
   is ~100 KB, so 32 of them are under 4 MB of requests. Reported: the server's RSS before,
   its peak RSS (VmHWM, read from /proc), the answers and the time taken. A guard kills the
   server if its RSS passes `--guard-gb` (the row then says so). The decoded photos requests
   hold at once are bounded by the service's decode memory (`--decode-memory-mb`; default: the
   service's own, a quarter of the memory).

Linux only (/proc). Nothing else heavy should run meanwhile.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
KINDS = ("png16", "rgba", "jpeg", "heic")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rows(width: int, height: int, depth: int, colour: int, channels: int) -> bytes:
    """A valid PNG: a gradient first row, then every row the same ("Up" filter, zeros), so that
    tens of megapixels compress to ~100 KB, as a hostile client would send them."""
    sample = depth // 8 * channels
    first = np.linspace(0, 2 ** (8 * (depth // 8)) - 1, width * sample // (depth // 8))
    first = first.astype(">u2" if depth == 16 else "u1").tobytes()
    compressor = zlib.compressobj(9)
    body = compressor.compress(b"\x00" + first)
    same = b"\x02" + bytes(width * sample)
    body += b"".join(compressor.compress(same) for _ in range(height - 1)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def photo(kind: str, pixels: int) -> bytes:
    """The costliest photo of `kind` the service accepts at `pixels` (3:2, as cameras shoot)."""
    width = int((pixels * 1.5) ** 0.5)
    height = pixels // width
    if kind == "png16":
        return png_rows(width, height, 16, 0, 1)
    if kind == "rgba":
        return png_rows(width, height, 8, 6, 4)
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    if kind == "heic":
        import pillow_heif  # noqa: F401 (registered by touchstone.imaging)

        import touchstone.imaging  # noqa: F401

        image.save(buffer, "HEIF", quality=50)
    else:
        image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _peak_rss() -> int:
    # VmHWM, not getrusage: ru_maxrss survives exec, so a child started by a big parent would
    # begin at the parent's size.
    return rss(os.getpid(), "VmHWM")


def one_decode(path: Path) -> None:
    """In a fresh process: the peak RSS that decoding the photo in `path` adds, per pixel
    (printed as one line)."""
    from touchstone.imaging import decode_photo

    data = path.read_bytes()
    before = _peak_rss()
    image = decode_photo(data, max_pixels=10**9)
    added = _peak_rss() - before
    pixels = image.width * image.height
    print(f"{len(data)}\t{pixels}\t{added / 2**20:.0f} MiB\t{added / pixels:.2f}")


def rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def service_row(
    kind: str, uploads: int, slots: str, megapixels: float, guard: int, memory_mb: float | None
) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="touchstone-hostile-"))
    signer = Ed25519PrivateKey.generate()
    public = folder / "member-token.pem"
    public.write_bytes(
        signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    port = _free_port()
    args = [TOUCHSTONE, "serve", "--port", str(port), "--data-dir", str(folder / "data")]
    if slots != "default":
        args += ["--decode-slots", slots]
    if memory_mb is not None:
        args += ["--decode-memory-mb", str(memory_mb)]
    env = {**os.environ, "TOUCHSTONE_MEMBER_TOKEN_PUBLIC_KEY": str(public)}
    env.pop("TOUCHSTONE_DATABASE_URL", None)
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, server)
        key = _app_key(folder / "data")
        data = photo(kind, int(megapixels * 1e6))
        before = rss(server.pid, "VmRSS")
        guarded = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                if rss(server.pid, "VmRSS") > guard:
                    guarded.set()
                    server.kill()
                    return

        def post(worker: int) -> str:
            member = f"hostile-{worker}"
            token = jwt.encode(
                {"sub": member, "iat": int(time.time()), "exp": int(time.time()) + 3000},
                signer,
                algorithm="EdDSA",
            )
            headers = {"Authorization": f"Bearer {key}", "X-Member-Token": token}
            try:
                answer = httpx.post(
                    f"{url}/v1/appraisals",
                    headers=headers,
                    data={"member_id": member, "category": "bag"},
                    files=[("logo", ("photo", data, "application/octet-stream"))],
                    timeout=1800,
                )
                return str(answer.status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        with ThreadPoolExecutor(uploads) as pool:
            answers = Counter(pool.map(post, range(uploads)))
        took = time.monotonic() - started
        done.set()
        peak = rss(server.pid, "VmHWM") if not guarded.is_set() else guard
        return {
            "kind": kind,
            "slots": slots,
            "photo_bytes": len(data),
            "rss_before": before,
            "peak": peak,
            "guarded": guarded.is_set(),
            "answers": dict(answers),
            "seconds": took,
        }
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server stopped; see its log")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def _app_key(data_dir: Path) -> str:
    from serving.auth import create_key
    from serving.db import default_database_url, make_engine, make_sessionmaker

    engine = make_engine(default_database_url(data_dir))
    with make_sessionmaker(engine)() as session:
        key = create_key(session, "member_backend", "benchmark")
    engine.dispose()
    return key


def gb(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=32)
    parser.add_argument("--kind", choices=KINDS, default="png16")
    parser.add_argument("--slots", default="default,32", help="comma-separated settings")
    parser.add_argument("--megapixels", type=float, default=50.0)
    parser.add_argument("--per-decode-megapixels", type=float, default=12.0)
    parser.add_argument("--guard-gb", type=float, default=12.0)
    parser.add_argument("--decode-memory-mb", type=float, help="the service's decode memory")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--skip-decodes", action="store_true")
    parser.add_argument("--one-decode", help=argparse.SUPPRESS)  # the child process's job
    options = parser.parse_args()
    if options.one_decode:
        one_decode(Path(options.one_decode))
        return

    print(f"One decode at {options.per_decode_megapixels:g} MP, each in a fresh process:")
    print("kind\tfile bytes\tpixels\tpeak RSS added\tbytes a pixel")
    for kind in () if options.skip_decodes else KINDS:
        with tempfile.NamedTemporaryFile(suffix=f".{kind}") as file:
            file.write(photo(kind, int(options.per_decode_megapixels * 1e6)))
            file.flush()
            child = [sys.executable, __file__, "--one-decode", file.name]
            run = subprocess.run(child, check=True, capture_output=True, text=True)
        print(f"{kind}\t{run.stdout.strip()}")
    if options.skip_service:
        return

    try:
        from touchstone.imaging import default_decode_slots

        default: object = default_decode_slots(int(options.megapixels * 1e6))
    except ImportError:  # a checkout from before the decode semaphore (PYTHONPATH)
        default = "none (no semaphore)"
    print(
        f"\nThe service, {options.uploads} uploads at once of one {options.kind} photo of "
        f"{options.megapixels:g} MP each; default decode slots here: {default}, "
        f"{os.cpu_count()} cores"
    )
    for slots in options.slots.split(","):
        row = service_row(
            options.kind,
            options.uploads,
            slots,
            options.megapixels,
            int(options.guard_gb * 2**30),
            options.decode_memory_mb,
        )
        peak = f"over the guard ({gb(row['peak'])}): killed" if row["guarded"] else gb(row["peak"])
        print(
            f"slots {slots}: photo {row['photo_bytes'] / 1e3:.0f} KB, RSS before "
            f"{gb(row['rss_before'])}, peak {peak}, answers {row['answers']}, "
            f"{row['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()

"""`touchstone certificates ...`: check the certificate hash chain, against a signed head kept
from earlier too; export the chain, its head and the public key that signs the head.

Exit codes: 0 the chain is intact (and holds the head); 1 a link is broken, or the head does not
hold (the first problem is named); 2 the command cannot run as asked (no database, unreadable
file, no key).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from cli.serve import settings_or_exit

app = typer.Typer(help="Certificates: the tamper-evident hash chain.", no_args_is_help=True)
console = Console()

DATA_DIR = typer.Option(
    Path("data"), help="the service's data directory (its SQLite database, touchstone.db)"
)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def _settings(data_dir: Path) -> Any:  # -> serving.settings.Settings
    try:
        import serving.settings  # noqa: F401 (only to say what is missing)
    except ImportError as exc:
        raise _fail(f"this needs the serving extras: pip install '.[serve]' ({exc})") from exc
    return settings_or_exit(data_dir=data_dir)


def _sessions(settings: Any):  # -> tuple[Engine, sessionmaker]
    from serving.db import make_sessionmaker
    from serving.settings import SettingsError, open_existing_database

    try:
        engine = open_existing_database(settings, "certificates")
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    return engine, make_sessionmaker(engine)


def _configured_key(data_dir: Path) -> Any:  # -> Ed25519PrivateKey
    """The signing key TOUCHSTONE_CERTIFICATE_KEY names, as the service reads it."""
    key = _settings(data_dir).certificate_signing_key()
    if key is None:
        raise _fail("no key is configured: set TOUCHSTONE_CERTIFICATE_KEY to its PEM file")
    return key


def _kept_head(path: Path) -> dict[str, Any]:
    from serving import certificate_head

    try:
        return certificate_head.read_head(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the head {path}: {exc}") from exc


def _head_key(kept: dict[str, Any], given: Path | None, data_dir: Path) -> Any:
    """The public key to check a signed head with: the one given, else the configured key's
    public half; None for an unsigned head."""
    from serving import certificate_head

    if not kept.get("signature"):
        return None
    if given is None:
        return _configured_key(data_dir).public_key()
    try:
        return certificate_head.load_public_key(given)
    except certificate_head.CertificateKeyError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def verify(
    data_dir: Path = DATA_DIR,
    file: Path | None = typer.Option(
        None, "--file", help="verify an exported chain (JSON lines, one certificate each) offline"
    ),
    head: Path | None = typer.Option(
        None, "--head", help="a head kept from earlier: the chain must still hold it"
    ),
    public_key: Path | None = typer.Option(
        None,
        "--public-key",
        help="the PEM key to check the head's signature with (default: the configured key's)",
    ),
    unsigned: bool = typer.Option(
        False, "--unsigned", help="accept a head without a signature (its seq and hash alone)"
    ),
) -> None:
    """Recompute every link of the chain; name the first broken one and exit 1. With --head,
    also check the head's signature and that the chain still holds the head's seq and hash, so
    that a chain rewritten up to it fails even though every link checks out.

    TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`.
    """
    from serving import certificate_head, certificates

    kept = _kept_head(head) if head is not None else None
    key = _head_key(kept, public_key, data_dir) if kept is not None else None

    def run(links: Any) -> Any:  # -> Verification
        if kept is None:
            return certificates.verify(links)
        return certificate_head.verify_with_head(links, kept, key, unsigned)

    if file is not None:
        try:
            with file.open(encoding="utf-8") as lines:
                result = run(certificates.links_from_jsonl(lines))
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"cannot read {file}: {exc}") from exc
    else:
        engine, sessions = _sessions(_settings(data_dir))
        try:
            with sessions() as session:
                result = run(certificates.links_from_db(session))
        finally:
            engine.dispose()
    if result.broken is not None:
        broken = result.broken
        console.print(
            f"[bold red]broken[/] at seq {broken.seq} (code {broken.code}): {broken.problem}: "
            f"{escape(broken.message)}"
        )
        console.print(f"{result.links} link(s) before it are intact")
        raise typer.Exit(1)
    if result.head is None:
        console.print("the chain is empty: nothing to verify")
    else:
        console.print(
            f"[green]intact[/]: {result.links} certificate(s); head seq {result.head.seq} "
            f"code {result.head.code} hash {result.head.hash}"
        )
    if kept is not None:
        signed = "its signature holds" if kept.get("signature") else "unsigned"
        console.print(
            f"[green]holds[/] the head seq {kept['seq']} signed at {kept['signed_at']} ({signed})"
        )


@app.command()
def head(
    data_dir: Path = DATA_DIR,
    out: Path | None = typer.Option(None, help="write the head here as JSON (default: print)"),
) -> None:
    """The chain head (seq, code, hash, times), signed with the configured key as
    `GET /v1/certificates/head` signs it, to keep elsewhere."""
    from serving import certificate_head

    settings = _settings(data_dir)
    engine, sessions = _sessions(settings)
    try:
        with sessions() as session:
            found = certificate_head.chain_head(session, settings.certificate_signing_key())
    finally:
        engine.dispose()
    if found["code"] is None:
        raise _fail("the chain is empty: no head to export")
    text = json.dumps(found, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@app.command("public-key")
def show_public_key(
    data_dir: Path = DATA_DIR,
    out: Path | None = typer.Option(None, help="write the PEM here (default: print it)"),
) -> None:
    """The public half of the configured key (TOUCHSTONE_CERTIFICATE_KEY), for whoever checks a
    head: `verify --head FILE --public-key KEY.pub`."""
    from serving import certificate_head

    key = _configured_key(data_dir).public_key()
    pem = certificate_head.public_pem(key)
    if out is None:
        typer.echo(pem, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(pem, encoding="utf-8")
        console.print(f"wrote {out}")
    console.print(f"key id {certificate_head.key_id(key)}")


@app.command("new-key")
def new_key(
    out: Path = typer.Option(..., help="the PEM file to write (readable by its owner only)"),
) -> None:
    """A new Ed25519 key to sign the chain's head; point TOUCHSTONE_CERTIFICATE_KEY at it. Keep
    it away from the database: whoever can rewrite the one must not read the other."""
    from serving import certificate_head

    if out.exists():
        raise _fail(f"{out} exists; a key is never overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(certificate_head.new_signing_key())
    console.print(f"wrote {out}")


@app.command("export")
def export(
    out: Path = typer.Option(..., help="JSON lines file to write, one certificate each"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Write the whole chain as JSON lines, for `verify --file` elsewhere."""
    from serving import certificates

    engine, sessions = _sessions(_settings(data_dir))
    count = 0
    try:
        with sessions() as session:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", encoding="utf-8") as handle:
                for link in certificates.links_from_db(session):
                    handle.write(json.dumps(link.as_dict(), ensure_ascii=False) + "\n")
                    count += 1
    finally:
        engine.dispose()
    console.print(f"wrote {count} certificate(s) to {out}")

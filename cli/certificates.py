"""`touchstone certificates ...`: check the certificate hash chain, export its head.

Exit codes: 0 the chain is intact; 1 a link is broken (the first one is named); 2 the command
cannot run as asked (no database, unreadable file).
"""

from __future__ import annotations

import json
from pathlib import Path

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


def _sessions(data_dir: Path):  # -> tuple[Engine, sessionmaker]
    try:
        from serving.db import make_sessionmaker
        from serving.settings import SettingsError, open_existing_database
    except ImportError as exc:
        raise _fail(f"this needs the serving extras: pip install '.[serve]' ({exc})") from exc
    try:
        engine = open_existing_database(settings_or_exit(data_dir=data_dir), "certificates")
    except SettingsError as exc:
        raise _fail(str(exc)) from exc
    return engine, make_sessionmaker(engine)


@app.command()
def verify(
    data_dir: Path = DATA_DIR,
    file: Path | None = typer.Option(
        None, "--file", help="verify an exported chain (JSON lines, one certificate each) offline"
    ),
) -> None:
    """Recompute every link of the chain; name the first broken one and exit 1.

    TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`.
    """
    from serving import certificates

    if file is not None:
        try:
            with file.open(encoding="utf-8") as lines:
                result = certificates.verify(certificates.links_from_jsonl(lines))
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"cannot read {file}: {exc}") from exc
    else:
        engine, sessions = _sessions(data_dir)
        try:
            with sessions() as session:
                result = certificates.verify(certificates.links_from_db(session))
        finally:
            engine.dispose()
    if result.broken is not None:
        broken = result.broken
        console.print(
            f"[bold red]broken[/] at seq {broken.seq} (code {broken.code}): {broken.problem}: "
            f"{broken.message}"
        )
        console.print(f"{result.links} link(s) before it are intact")
        raise typer.Exit(1)
    if result.head is None:
        console.print("the chain is empty: nothing to verify")
        return
    console.print(
        f"[green]intact[/]: {result.links} certificate(s); head seq {result.head.seq} "
        f"code {result.head.code} hash {result.head.hash}"
    )


@app.command()
def head(
    data_dir: Path = DATA_DIR,
    out: Path | None = typer.Option(None, help="write the head here as JSON (default: print)"),
) -> None:
    """The chain head (seq, code, hash, time) as JSON, to anchor elsewhere."""
    from serving import certificates

    engine, sessions = _sessions(data_dir)
    try:
        with sessions() as session:
            found = certificates.head_of(session)
    finally:
        engine.dispose()
    if found is None:
        raise _fail("the chain is empty: no head to export")
    text = json.dumps(found, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@app.command("export")
def export(
    out: Path = typer.Option(..., help="JSON lines file to write, one certificate each"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Write the whole chain as JSON lines, for `verify --file` elsewhere."""
    from serving import certificates

    engine, sessions = _sessions(data_dir)
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

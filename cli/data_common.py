"""What the `touchstone data` commands share: the console, the worker default, failing with
exit code 2, and reading a region vocabulary option."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
DEFAULT_WORKERS = os.cpu_count() or 1


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; the Exit to raise (2: the command cannot run as asked)."""
    console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def parse_regions(text: str | None) -> tuple[str, ...] | None:
    """`a,b,c` as a tuple of region names; None when the option was not given."""
    return tuple(r.strip() for r in text.split(",") if r.strip()) if text else None

"""`touchstone admin`: API keys: create (optionally expiring), list, revoke. Thin clients of
`serving.auth`; TOUCHSTONE_DATABASE_URL picks the database, as for `touchstone serve`.

A key is shown once, when it is made; the list shows prefixes, never secrets. A revoked or
expired key fails on its next request, and a reviewer's web session with it ends then too.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cli.serve import settings_or_exit

console = Console()
app = typer.Typer(help="Administration: API keys.", no_args_is_help=True)

DATA_DIR = typer.Option(Path("data"), help="where the SQLite database is")
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def expiry(expires_in: str | None, expires_at: str | None, now: dt.datetime) -> dt.datetime | None:
    """When a new key expires: `expires_in` as 90m, 12h or 30d from `now`, or `expires_at` as
    an ISO 8601 date or time (UTC unless it says otherwise); None: never. ValueError when
    unreadable, both given, or not in the future."""
    if expires_in and expires_at:
        raise ValueError("give --expires-in or --expires-at, not both")
    if expires_in:
        match = _DURATION.fullmatch(expires_in.strip())
        if not match or int(match.group(1)) == 0:
            raise ValueError(f"--expires-in {expires_in!r}: a positive number and s, m, h or d")
        when = now + dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    elif expires_at:
        try:
            when = dt.datetime.fromisoformat(expires_at.strip())
        except ValueError as exc:
            raise ValueError(f"--expires-at {expires_at!r} is not an ISO 8601 date") from exc
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    else:
        return None
    if when <= now:
        raise ValueError(f"the key would expire in the past ({when.isoformat()})")
    return when.astimezone(dt.UTC)


@app.command("create-key")
def create_key(
    role: str = typer.Option(..., help="app, member_backend, platform, reviewer, senior or admin"),
    data_dir: Path = DATA_DIR,
    label: str | None = typer.Option(None, help="who or what holds the key"),
    expires_in: str | None = typer.Option(None, help="e.g. 90m, 12h, 30d (default: never)"),
    expires_at: str | None = typer.Option(None, help="ISO 8601, e.g. 2027-01-31T18:00Z"),
) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    from serving.auth import ROLES
    from serving.auth import create_key as new_key
    from serving.db import utcnow
    from serving.settings import open_database

    if role not in ROLES:
        raise _fail(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    try:
        expires = expiry(expires_in, expires_at, utcnow())
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    engine, sessions = open_database(settings_or_exit(data_dir=data_dir))
    try:
        with sessions() as session:
            key = new_key(session, role, label, expires)
    finally:
        engine.dispose()
    until = f", until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
    console.print(f"created a {role} key{until}; it is shown once:", highlight=False)
    print(key)


@app.command("list-keys")
def list_keys(data_dir: Path = DATA_DIR) -> None:
    """Every key: prefix, role, state, created, expires, label (never a secret)."""
    from serving.auth import list_keys as all_keys
    from serving.auth import refusal
    from serving.db import as_utc, utcnow
    from serving.settings import open_database

    engine, sessions = open_database(settings_or_exit(data_dir=data_dir))
    try:
        with sessions() as session:
            keys = all_keys(session)
    finally:
        engine.dispose()
    now = utcnow()

    def when(value: dt.datetime | None) -> str:
        return as_utc(value).strftime("%Y-%m-%d %H:%M") if value else "-"

    print(f"{'prefix':<14}{'role':<16}{'state':<9}{'created':<18}{'expires':<18}label")
    for key in keys:
        problem = refusal(key, now)
        state = "active" if problem is None else "revoked" if key.revoked_at else "expired"
        print(
            f"{key.prefix:<14}{key.role:<16}{state:<9}{when(key.created_at):<18}"
            f"{when(key.expires_at):<18}{key.label or ''}"
        )


@app.command("revoke-key")
def revoke_key(
    prefix: str = typer.Argument(..., help="the key's prefix: tsk_PREFIX_..., or list-keys"),
    data_dir: Path = DATA_DIR,
) -> None:
    """Revoke a key: its next request fails, and a web session with it ends."""
    from serving.auth import revoke_key as revoke
    from serving.settings import open_database

    prefix = prefix.strip()
    if prefix.startswith("tsk_"):  # the whole key pasted: keep its prefix alone
        prefix = prefix.split("_", 2)[1]
    engine, sessions = open_database(settings_or_exit(data_dir=data_dir))
    try:
        with sessions() as session:
            key = revoke(session, prefix)
            role = key.role if key is not None else None
    finally:
        engine.dispose()
    if role is None:
        raise _fail(f"no key with the prefix {prefix!r}", 1)
    console.print(f"revoked the {role} key {prefix}", highlight=False)

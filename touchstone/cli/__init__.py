"""The `touchstone` command. Each group is a thin client of the library underneath it."""

import typer

from touchstone.cli.data import app as data_app
from touchstone.cli.model import evaluate, export, promote
from touchstone.cli.serve import admin_app, serve
from touchstone.cli.train import train

app = typer.Typer(
    help="Touchstone: image-based authentication and appraisal of second-hand luxury goods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("export")(export)
app.command("promote")(promote)
app.command("serve")(serve)
app.add_typer(admin_app, name="admin")

"""The `touchstone` command. Each group is a thin client of the library underneath it."""

import typer

from cli.admin import app as admin_app
from cli.benefits import app as benefits_app
from cli.certificates import app as certificates_app
from cli.data import app as data_app
from cli.model import evaluate, export, promote
from cli.outbox import app as outbox_app
from cli.photos import app as photos_app
from cli.recertify import recertify
from cli.serve import serve
from cli.train import train

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
app.command("recertify")(recertify)
app.command("serve")(serve)
app.add_typer(admin_app, name="admin")
app.add_typer(outbox_app, name="outbox")
app.add_typer(photos_app, name="photos")
app.add_typer(certificates_app, name="certificates")
app.add_typer(benefits_app, name="benefits")

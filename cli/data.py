"""`touchstone data ...`: validate, split, import, synthesise, look at, merge data sets, and
export reviewers' verdicts as one.

Exit codes: 0 success; 1 the data has errors (validate) or photos could not be read
(export-reviews); 2 the command cannot run as asked (bad option, unreadable manifest).
"""

from __future__ import annotations

import typer

from cli.data_building import import_, sheet, synth
from cli.data_checks import split, validate
from cli.feedback import export_reviews, merge

app = typer.Typer(help="Data sets: manifests of region photos.", no_args_is_help=True)
app.command()(validate)
app.command()(split)
app.command("import")(import_)
app.command()(synth)
app.command()(sheet)
app.command()(merge)
app.command("export-reviews")(export_reviews)

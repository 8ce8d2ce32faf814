"""One way to read a YAML file into a pydantic model.

Every configuration file (training configs, the routing policy, benefits, webhooks, synthetic
data settings, a data set's sidecar) goes through `load_yaml_model`, so each refuses a misspelt
key the same way: the error names the key, where it sits, and the closest known key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The file's mapping of keys to values; an empty file is an empty mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}  # an empty file (or one of comments) asks for the defaults
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}: expected a mapping of keys to values, not a {type(data).__name__}"
        )
    return data


def validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """`model` built from `data`; ConfigFileError listing every bad key, `source` first."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe(error, model) for error in exc.errors())
        raise ConfigFileError(f"{source}: {problems}") from exc


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Read `path` and validate it as `model`."""
    return validate(model, read_yaml(path), str(path))


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One validation error in words: `where: what`, with a 'did you mean' for unknown keys."""
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _keys_at(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        else:
            hint = f" (known: {', '.join(known)})" if known else ""
        return f"{where}: unknown key{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys a nested model accepts at `loc` (empty where `loc` is not a model)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)

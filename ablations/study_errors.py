"""Readable study-file errors: field path, bad value, what is allowed, and a "did you mean".

Pydantic collects every field error of a document at once; this module turns each into a
``StudyError`` and adds the suggestions pydantic does not make (closest allowed key or value by
``difflib``). Nothing here knows the study schema beyond walking the model classes it is given.
"""

from __future__ import annotations

import difflib
import re
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

# Tags of tagged unions in pydantic error locations: not part of the user's path.
UNION_TAGS = frozenset({"design", "subsets"})
# An error prints at most this many characters of the offending value (and of the other parts):
# a value can be huge (a long string, an alias-expanded list) and the message must stay readable.
MAX_VALUE_CHARS = 200
MAX_LISTED_ERRORS = 50  # then "... and N more": a generated file can hold thousands of errors
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = MAX_VALUE_CHARS
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3


def short_repr(value: Any) -> str:
    """repr of ``value`` cut to about MAX_VALUE_CHARS (reprlib: never builds the full repr)."""
    text = _SHORT.repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _cut(text: str, limit: int = 4 * MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class StudyError:
    """One problem in a study file."""

    path: str
    message: str
    value: Any = None
    allowed: str | None = None
    suggestion: str | None = None

    def render(self) -> str:
        text = f"{_cut(self.path) or '<study>'}: {_cut(self.message)}"
        if self.value is not None:
            text += f" (got {short_repr(self.value)})"
        if self.allowed:
            text += f"; allowed: {_cut(self.allowed)}"
        if self.suggestion:
            text += f"; did you mean {short_repr(self.suggestion)}?"
        return text


class StudyValidationError(Exception):
    """Every error found in one study file; raised before anything runs."""

    def __init__(self, source: str, errors: list[StudyError]):
        self.source = source
        self.errors = sorted(errors, key=lambda error: (error.path, error.message))
        lines = "\n".join(f"  - {line}" for line in self.lines())
        super().__init__(f"{source}: {len(self.errors)} error(s)\n{lines}")

    def lines(self) -> list[str]:
        """Rendered errors, at most MAX_LISTED_ERRORS, then a count of the rest."""
        shown = [error.render() for error in self.errors[:MAX_LISTED_ERRORS]]
        if len(self.errors) > MAX_LISTED_ERRORS:
            shown.append(f"... and {len(self.errors) - MAX_LISTED_ERRORS} more error(s)")
        return shown


def suggest(word: object, choices: typing.Iterable[str]) -> str | None:
    """Closest allowed spelling of ``word``, or None."""
    if not isinstance(word, str):
        return None
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def format_path(loc: tuple[Any, ...]) -> str:
    """``('components', 'subsets', 1, 0)`` -> ``components[1][0]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part not in UNION_TAGS and part != "[key]":  # pydantic marks dict-key errors
            text += f".{part}" if text else str(part)
    return text


def errors_from_pydantic(exc: ValidationError, root: type[BaseModel]) -> list[StudyError]:
    """Convert every pydantic error, with allowed keys/values and suggestions."""
    return [_convert(error, root) for error in exc.errors()]


def _convert(error: dict[str, Any], root: type[BaseModel]) -> StudyError:
    loc = tuple(error["loc"])
    path = format_path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1])
        return StudyError(path, "unknown key", None, ", ".join(allowed) or None,
                          suggest(loc[-1], allowed))
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return StudyError(path, "unknown value", error.get("input"), ", ".join(choices),
                          suggest(error.get("input"), choices))
    if "suggestion" in ctx or "allowed" in ctx:
        return StudyError(path, str(ctx.get("reason", error["msg"])), error.get("input"),
                          ctx.get("allowed"), ctx.get("suggestion"))
    value = error.get("input") if kind != "missing" else None
    return StudyError(path, error["msg"], value, _allowed_from_ctx(ctx))


def _allowed_from_ctx(ctx: dict[str, Any]) -> str | None:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length",
               "max_length": "max length", "pattern": "matching"}
    parts = [f"{symbols[key]} {ctx[key]}" for key in symbols if key in ctx]
    return ", ".join(parts) or None


def allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` from ``root`` (empty if none)."""
    annotation: Any = root
    for part in loc:
        if part in UNION_TAGS:
            continue
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model else []


def _step(annotation: Any, part: Any) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    for candidate in _members(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin in (list, tuple) and args and isinstance(part, int):
            return args[0]
        if origin is dict and len(args) == 2 and isinstance(part, str):
            return args[1]
    return None


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None

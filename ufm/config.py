"""Typed job configurations: dataclasses loadable from TOML and overridable on the command line.

A job's configuration is a dataclass whose ``__post_init__`` validates every field (so a bad
value is refused before any work). This module turns such a dataclass into and out of plain
dicts, TOML files and argparse flags:

* :func:`load_config` reads a TOML file (optional), applies overrides, builds the dataclass;
* :func:`add_config_arguments` adds one ``--field-name`` flag per field, defaulting to
  "not given" so that only explicit flags override the file; the dict ``loss_params`` is
  ``--loss-param NAME=VALUE``, repeated (:func:`parse_loss_params`), other structured fields
  come from the file only;
* :func:`config_to_dict` gives the JSON-ready form saved beside every result.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a configuration dataclass (tuples become lists)."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp, value):
    """Convert TOML/JSON values to the field's declared type where that is unambiguous."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must not be empty")
    origin = typing.get_origin(base)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item,) = typing.get_args(base)[:1]
        return tuple(_coerce(name, item, v) for v in value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, refusing unknown keys with the list of known ones."""
    hints = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"unknown configuration field(s) {', '.join(map(repr, unknown))} for "
            f"{cls.__name__}; known fields: {', '.join(known)}"
        )
    values = {k: _coerce(k, hints[k], v) for k, v in data.items()}
    return cls(**values)


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict | None = None) -> T:
    """Configuration from an optional TOML file, then ``overrides`` (which win)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"configuration file {str(path)!r} does not exist")
        with path.open("rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"configuration file {str(path)!r} is not valid TOML: {error}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, data)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add a ``--field-name`` flag per dataclass field (default: not given).

    A class attribute ``CHOICES`` (field name -> allowed values) lists a field's values in
    its help; the dataclass itself still validates them, with the same message for a flag
    and a TOML file. A class attribute ``HELP`` (field name -> text) puts a field's text
    before its default.
    """
    hints = _field_types(cls)
    choices = getattr(cls, "CHOICES", {})
    helps = getattr(cls, "HELP", {})
    group = parser.add_argument_group(f"{cls.__name__} fields (override the --config file)")
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        tp, _ = _unwrap_optional(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        if default is None and field.default_factory is not dataclasses.MISSING:  # type: ignore
            default = field.default_factory()  # type: ignore
        help_text = f"default: {default!r}"
        if field.name in choices:
            help_text = f"one of {', '.join(map(str, choices[field.name]))}; {help_text}"
        if field.name in helps:
            help_text = f"{helps[field.name]}; {help_text}"
        kwargs: dict[str, Any] = {"default": None, "dest": field.name, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            (item,) = typing.get_args(tp)[:1]
            kwargs.update(nargs="+", type=item)
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif field.name == "loss_params":
            add_loss_param_argument(group)
            continue
        else:  # other structured fields come from the TOML file only
            continue
        group.add_argument(_flag(field.name), **kwargs)


def overrides_from_args(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields given explicitly on the command line (``--loss-param`` as a dict)."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "loss_params" in overrides:
        overrides["loss_params"] = parse_loss_params(overrides["loss_params"])
    return overrides


def add_loss_param_argument(parser) -> None:
    """``--loss-param NAME=VALUE`` (repeatable, into ``loss_params``), whose help lists the
    parameters of every registered loss as the registry has them when the parser is built."""
    from .losses import LOSSES, loss_parameter_defaults

    def listed(params: dict[str, Any]) -> str:
        return ", ".join(name if default is inspect.Parameter.empty else f"{name}={default!r}"
                         for name, default in params.items()) or "none"

    per_loss = "; ".join(f"{loss}: {listed(loss_parameter_defaults(loss))}" for loss in LOSSES)
    parser.add_argument(
        "--loss-param", action="append", dest="loss_params", metavar="NAME=VALUE",
        help="a parameter of the loss, repeatable; a value that reads as a number is one, "
        "a,b,c is a list; replaces the loss_params of a --config file. Parameters (default): "
        + per_loss.replace("%", "%%"),
    )  # fmt: skip


def parse_loss_params(items: list[str]) -> dict[str, Any]:
    """``--loss-param`` flags as the ``loss_params`` dict: ``eps=0.2`` -> ``{"eps": 0.2}``.

    A value is an int or a float where it reads as one, else a string; a comma makes a tuple
    of such values (``priors=0.5,0.3,0.2``, a parameter per class). Whether the loss takes
    the names and values is for the loss to say when the configuration is built.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, equals, text = (part.strip() for part in item.partition("="))
        if not equals or not name:
            raise ValueError(f"--loss-param {item!r}: give NAME=VALUE, e.g. eps=0.2")
        if name in params:
            raise ValueError(f"--loss-param {name} is given twice")
        if "," in text:
            values = [value.strip() for value in text.split(",")]
            if "" in values:
                raise ValueError(f"--loss-param {item!r}: an empty item in the list")
            params[name] = tuple(_number_or_text(value) for value in values)
        else:
            params[name] = _number_or_text(text)
    return params


def _number_or_text(text: str) -> int | float | str:
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text

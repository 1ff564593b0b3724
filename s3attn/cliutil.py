"""Dataclass configs whose field docstrings double as ``--help``, with YAML defaults from ``configs/``.

Precedence: dataclass default < ``configs/<name>.yaml`` < ``--config FILE`` < command-line options.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from s3attn.errors import S3Error

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each dataclass field (the string literal after ``name: type = value``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def load_yaml_defaults(name: str) -> dict[str, Any]:
    """``configs/<name>.yaml`` shipped with the package, or {}."""
    try:
        text = resources.files("s3attn.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return yaml.safe_load(text) or {}


def read_config_file(path: str | Path, option: str = "--config") -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise S3Error(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise S3Error(f"{option} {path}: cannot be read ({reason}); give a UTF-8 YAML file") from None
    except yaml.YAMLError as err:
        raise S3Error(f"{option} {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise S3Error(f"{option} {path}: expected a mapping of option: value")
    return data


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _parse_value(tp: Any, raw: Any, name: str) -> Any:
    base, optional = _base_type(tp)
    if raw is None and not optional:
        raise S3Error(f"--{name.replace('_', '-')}: needs a value (got null)")
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "null", "")):
        return None
    origin = typing.get_origin(base)
    try:
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(base) or (str,)
            items = raw if isinstance(raw, list | tuple) else [s for s in str(raw).split(",") if s.strip()]
            return [inner(x) if not isinstance(x, inner) else x for x in items]
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base is int and isinstance(raw, str):
            return int(float(raw)) if "e" in raw.lower() else int(raw.replace("_", ""))
        return base(raw)
    except (TypeError, ValueError):
        raise S3Error(
            f"--{name.replace('_', '-')} {raw!r}: not a valid {getattr(base, '__name__', base)}"
        ) from None


def build_parser(
    cls: type, parser: argparse.ArgumentParser, aliases: dict[str, list[str]] | None = None
) -> None:
    """Add one ``--option`` per dataclass field, help from the field docstring."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    aliases = aliases or {}
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *aliases.get(f.name, [])]
        base, _ = _base_type(hints[f.name])
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
        )
        help_text = docs.get(f.name, "")
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        help_text = f"{help_text} (default: {shown})".replace("%", "%%")  # argparse %-formats help
        if base is bool:
            parser.add_argument(
                *names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(*names, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML file of option: value overrides")


def make_config(cls: type[T], args: argparse.Namespace, defaults_name: str) -> T:
    """Merge dataclass defaults, shipped YAML, ``--config`` file and the given options into ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    merged: dict[str, Any] = {}
    for source, values in (
        (f"configs/{defaults_name}.yaml", load_yaml_defaults(defaults_name)),
        (f"--config {args.config}", read_config_file(args.config) if getattr(args, "config", None) else {}),
    ):
        for key, value in values.items():
            key = key.replace("-", "_")
            if key not in names:
                raise S3Error(f"{source}: unknown option '{key}'; see --help for the valid ones")
            merged[key] = value
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            merged[name] = value
    parsed = {k: _parse_value(hints[k], v, k) for k, v in merged.items()}
    return cls(**parsed)

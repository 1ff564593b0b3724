"""Configuration: dataclasses hold every option and its one default; simple-parsing makes the CLIs from them.

A command's options are one dataclass, option groups nested dataclasses (``EvalConfig.retrieval.hybrid``);
the docstring under a field is its ``--help``. The value a run uses is, by increasing precedence:

1. the dataclass default (the code: the one place a default is written),
2. ``configs/<name>.yaml`` shipped with the package (holds only what a site sets differently; empty here),
3. ``--config FILE`` (YAML),
4. the command line.

``--help`` shows the effective default (1-3 applied). A field is ``--name`` (dashes for underscores) and, when
nested, also ``--group.name`` (e.g. ``--fusion`` = ``--retrieval.hybrid.fusion``); a flat name that two
nested fields share is left out for them (the dotted names stay). YAML keys are the same names: nested
mappings, dotted paths or flat names, with dashes or underscores. Lists are comma-separated on the command
line (``--layers 6,12,16``) and YAML lists in files; ``none`` sets an optional value to None. Bad values and
unknown keys are one-line ``PROG: error: ...`` messages naming the option (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import types
import typing
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import simple_parsing
import yaml
from simple_parsing.docstring import get_attribute_docstring
from simple_parsing.wrappers import DataclassWrapper, FieldWrapper

from s3attn.errors import EXIT_USAGE, S3Error

T = TypeVar("T")
DEST = "cfg"  # the attribute of the parsed namespace that holds the config


@dataclass
class StackOptions:
    """The SAE release and model a command loads (an index is read with the stack it was built with)."""

    sae: str | None = None
    """SAE release folder, or a published release's name (a folder of checkpoints/); default: the published
    SmolLM2 release smollm2-135m-k32."""
    model: str | None = None
    """Model; default: the release's model ('smollm2-135m' for the published release)."""
    layers: list[int] | None = None
    """Layers to index (a subset of the release's); default: all of the release's layers."""
    dtype: str = "auto"
    """Model precision: auto (bfloat16 on a GPU or CPU that computes it natively, else float32), bfloat16,
    float16 or float32. An index records it; adding to an existing index with auto keeps the index's."""


# ---- values ------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional) of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def type_name(tp: Any) -> str:
    base, optional = _unwrap(tp)
    if typing.get_origin(base) in (list, tuple):
        name = f"list of {type_name((typing.get_args(base) or (str,))[0])}"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


def metavar(tp: Any) -> str:
    """``INT``, ``FLOAT``, ``STR``; ``INT,...`` for a list."""
    base, _ = _unwrap(tp)
    if typing.get_origin(base) in (list, tuple):
        return metavar((typing.get_args(base) or (str,))[0]) + ",..."
    return getattr(base, "__name__", "value").upper()


def _scalar(base: Any, raw: Any) -> Any:
    if base is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return word in ("1", "true", "yes", "on")
        raise ValueError(raw)
    if base is int and isinstance(raw, str):
        return int(float(raw)) if "e" in raw.lower() else int(raw)
    if base is int and (isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer())):
        raise ValueError(raw)
    return base(raw)


def convert(tp: Any, raw: Any) -> Any:
    """``raw`` (a command-line string or a YAML value) as a value of type ``tp``; ValueError if it is none.
    Lists take a comma-separated string; optional values take none / null / an empty string."""
    base, optional = _unwrap(tp)
    empty = raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null", ""))
    if optional and empty:
        return None
    if raw is None:
        raise ValueError("needs a value (got null)")
    if typing.get_origin(base) in (list, tuple):
        inner = (typing.get_args(base) or (str,))[0]
        items = raw if isinstance(raw, list | tuple) else [s for s in str(raw).split(",") if s.strip()]
        return [_scalar(inner, x.strip() if isinstance(x, str) else x) for x in items]
    return _scalar(base, raw)


class _Parse:
    """argparse ``type=``: one option's converter; a bad value reads ``'abc': not a valid int``."""

    def __init__(self, tp: Any):
        self.tp = tp
        self.__name__ = type_name(tp)

    def __call__(self, text: str) -> Any:
        try:
            return convert(self.tp, text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r}: not a valid {self.__name__}") from None


# ---- the option table ----------------------------------------------------------------------------------


class Leaf(NamedTuple):
    path: str  # dotted field path from the root dataclass, e.g. "retrieval.hybrid.fusion"
    type: Any  # the resolved annotation
    flags: tuple[str, ...]  # command-line names; the first one is named in errors


def _fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(dotted path, type, is a nested dataclass) of every init field, nested ones recursively."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, path = hints[f.name], prefix + f.name
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        yield path, tp, nested
        if nested:
            yield from _fields(tp, path + ".")


def leaves(cls: type, aliases: dict[str, list[str]] | None = None) -> dict[str, Leaf]:
    """Every option of ``cls`` by dotted path, with its flags: ``--flat-name`` where no other leaf has the
    same name, ``--dotted.path`` where nested or shared, then ``aliases[path]``."""
    found = [(path, tp) for path, tp, nested in _fields(cls) if not nested]
    count = Counter(path.rpartition(".")[2] for path, _ in found)
    table = {}
    for path, tp in found:
        name = path.rpartition(".")[2]
        flags = [f"--{name}"] if count[name] == 1 else []
        flags += [f"--{path}"] if "." in path or count[name] > 1 else []
        flags = [flag.replace("_", "-") for flag in flags] + list((aliases or {}).get(path, []))
        table[path] = Leaf(path, tp, tuple(flags))
    return table


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _replace(obj: T, path: str, value: Any) -> T:
    head, _, rest = path.partition(".")
    new = _replace(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})  # type: ignore[type-var]


def flat_options(cfg: Any) -> dict[str, Any]:
    """The options of ``cfg`` as one flat mapping, keyed by their flat names (dotted where shared)."""
    out = {}
    for path, leaf in leaves(type(cfg)).items():
        value = _get(cfg, path)
        out[leaf.flags[0].lstrip("-").replace("-", "_")] = list(value) if isinstance(value, list) else value
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of ``cls`` (inherited ones too), whitespace-normalised."""
    docs = {}
    for f in dataclasses.fields(cls):
        doc = get_attribute_docstring(cls, f.name).docstring_below
        if doc:
            docs[f.name] = " ".join(doc.split())
    return docs


# ---- YAML layers ---------------------------------------------------------------------------------------


def load_yaml_defaults(name: str) -> dict[str, Any]:
    """``configs/<name>.yaml`` shipped with the package, or {}."""
    try:
        text = resources.files("s3attn.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    data = yaml.safe_load(text)
    if data is not None and not isinstance(data, dict):
        raise S3Error(f"configs/{name}.yaml: expected a mapping of option: value")
    return data or {}


def read_config_file(path: str | Path, option: str = "--config") -> dict[str, Any]:
    """The mapping in a YAML file; one-line S3Errors naming ``option`` and the file."""
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


def _items(data: dict, groups: set[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of a YAML mapping, nested group mappings flattened."""
    for key, value in data.items():
        path = prefix + str(key).replace("-", "_")
        if path in groups and isinstance(value, dict):
            yield from _items(value, groups, path + ".")
        else:
            yield path, value


def apply_values(obj: T, data: dict, source: str, table: dict[str, Leaf] | None = None) -> T:
    """``obj`` with the options of ``data`` (a YAML mapping) set; S3Error naming ``source`` and the key."""
    table = table or leaves(type(obj))
    groups = {path for path, _, nested in _fields(type(obj)) if nested}
    flat = {leaf.flags[0][2:].replace("-", "_"): path for path, leaf in table.items() if leaf.flags}
    for key, raw in _items(data, groups):
        path = key if key in table else flat.get(key)
        if path is None:
            raise S3Error(f"{source}: unknown option '{key}'; see --help for the valid ones")
        leaf = table[path]
        try:
            value = convert(leaf.type, raw)
        except (TypeError, ValueError) as err:
            why = f": {err}" if raw is None else f" {raw!r}: not a valid {type_name(leaf.type)}"
            raise S3Error(f"{source}: {leaf.flags[0]}{why}") from None
        obj = _replace(obj, path, value)
    return obj


def effective_defaults(
    cls: type[T], name: str, config_file: str | None = None, table: dict[str, Leaf] | None = None
) -> T:
    """``cls()`` with ``configs/<name>.yaml`` then ``config_file`` applied."""
    obj = apply_values(cls(), load_yaml_defaults(name), f"configs/{name}.yaml", table)
    if config_file:
        obj = apply_values(obj, read_config_file(config_file), f"--config {config_file}", table)
    return obj


def config_file_in(argv: Sequence[str] | None) -> str | None:
    """The ``--config FILE`` given in ``argv`` (or sys.argv), if any."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config


# ---- the generated parser ------------------------------------------------------------------------------


class _Field(FieldWrapper):
    """One option: our flags (flat dashed + dotted + aliases), converter, and help with its default."""

    @property
    def leaf(self) -> Leaf:
        root = self.parent
        while root.parent is not None:
            root = root.parent
        return root.leaves[self.dest.partition(".")[2]]

    @property
    def option_strings(self) -> list[str]:
        return list(self.leaf.flags)

    def get_arg_options(self) -> dict[str, Any]:
        default = self.default
        shown = (
            ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
            if isinstance(default, list)
            else default
        )
        text = f"{self.help or ''} (default: {shown})".strip().replace("%", "%%")  # argparse %-formats
        options = {"dest": self.dest, "default": default, "required": False, "help": text}
        if _unwrap(self.leaf.type)[0] is bool:
            return {**options, "action": argparse.BooleanOptionalAction}
        return {**options, "type": _Parse(self.leaf.type), "metavar": metavar(self.leaf.type)}


class _Group(DataclassWrapper):
    """A (nested) dataclass: its fields are ``_Field`` and so are its children's."""

    leaves: dict[str, Leaf]

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["field_wrapper_class"] = _Field
        super().__init__(*args, **kwargs)
        self._children = [
            _Group(c.dataclass, c.name, parent=self, _field=c._field, default=c._default)
            for c in self._children
        ]

    @property
    def title(self) -> str:
        name = self.dataclass.__name__
        return f"{self.dest.partition('.')[2]} ({name})" if self.parent else name

    @property
    def description(self) -> str:
        if self.parent is None or self._field is None:
            return ""
        doc = get_attribute_docstring(self.parent.dataclass, self._field.name).docstring_below
        return textwrap.fill(" ".join((doc or "").split()), 100)


class CliParser(simple_parsing.ArgumentParser):
    """simple-parsing's parser whose errors are one line, ``PROG: error: ...``, exit 2 (no usage)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None, attempt_to_reorder: bool = False):  # type: ignore[override]
        try:
            return super().parse_known_args(args, namespace, attempt_to_reorder)
        except argparse.ArgumentError as err:
            name, message = (err.argument_name or "").split("/")[0], err.message
            sep = " " if message.startswith("'") else ": "  # our converters' messages start with the value
            self.error(f"{name}{sep}{message}" if name else message)

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog.split()[0]}: error: {message}\n")


def add_config(
    parser: CliParser,
    cls: type,
    name: str,
    argv: Sequence[str] | None,
    *,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add an option per field of ``cls`` (nested ones too) and ``--config FILE`` to ``parser``; the
    defaults shown and used are ``cls``'s with ``configs/<name>.yaml`` and the ``--config`` file of ``argv``
    applied. ``parser.parse_args(argv).cfg`` is then the config. ``aliases``: extra flags by field path."""
    table = leaves(cls, aliases)
    default = effective_defaults(cls, name, config_file_in(argv), table)
    group = parser.add_arguments(cls, dest=DEST, default=default, dataclass_wrapper_class=_Group)
    group.leaves = table
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML file of option: value pairs, over the code's defaults and configs/{name}.yaml",
    )


def parse_config(
    cls: type[T],
    name: str,
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    aliases: dict[str, list[str]] | None = None,
) -> T:
    """The config of a one-command CLI: ``cls`` from its defaults, the YAML layers and ``argv``."""
    parser = CliParser(prog=prog, description=description)
    add_config(parser, cls, name, argv, aliases=aliases)
    return parser.parse_args(argv).cfg

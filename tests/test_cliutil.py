"""Dataclass -> argparse: field docstrings as --help, value parsing, YAML defaults and --config precedence."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import s3attn.cliutil as cliutil
from s3attn.cliutil import build_parser, field_docs, make_config, read_config_file
from s3attn.errors import S3Error


@dataclass
class Demo:
    name: str = "demo"
    """The run's name;
    spread over two lines (100% kept)."""
    count: int = 3
    """How many things."""
    ratio: float | None = None
    """An optional ratio."""
    layers: list[int] = field(default_factory=lambda: [1, 2])
    """Layers, comma separated."""
    fast: bool = False
    """Go fast."""
    undocumented: int = 0


@dataclass
class DemoPlus(Demo):
    extra: str = "e"
    """Added by a subclass."""


def parse(argv: list[str], cls: type = Demo, defaults_name: str = "no-such-defaults"):
    parser = argparse.ArgumentParser(prog="demo")
    build_parser(cls, parser, aliases={"layers": ["--layer"]})
    return make_config(cls, parser.parse_args(argv), defaults_name)


def test_field_docs_normalised_and_inherited() -> None:
    docs = field_docs(DemoPlus)
    assert docs["name"] == "The run's name; spread over two lines (100% kept)."
    assert docs["count"] == "How many things."
    assert docs["extra"] == "Added by a subclass."
    assert "undocumented" not in docs


def test_help_shows_docstrings_defaults_and_aliases(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exc:
        parse(["--help"], DemoPlus)
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--name NAME The run's name; spread over two lines (100% kept). (default: demo)" in out
    assert "--layers LAYERS, --layer LAYERS Layers, comma separated. (default: 1,2)" in out
    assert "--fast, --no-fast Go fast. (default: False)" in out
    assert "Added by a subclass. (default: e)" in out
    assert "--config FILE" in out


def test_values_are_parsed_by_type() -> None:
    cfg = parse(["--count", "1e3", "--ratio", "0.5", "--layer", "4,2", "--fast", "--name", "x"])
    assert cfg == Demo(name="x", count=1000, ratio=0.5, layers=[4, 2], fast=True)
    assert parse(["--count", "1_000", "--ratio", "none", "--no-fast"]) == Demo(count=1000)
    assert parse([]) == Demo()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "three"], "--count 'three': not a valid int"),
        (["--ratio", "half"], "--ratio 'half': not a valid float"),
        (["--layers", "1,x"], "--layers '1,x'"),
    ],
)
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(S3Error, match=message):
        parse(argv)


def test_precedence_defaults_yaml_config_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        cliutil, "load_yaml_defaults", lambda name: {"count": 5, "name": "shipped", "ratio": 0.1}
    )
    config = tmp_path / "c.yaml"
    config.write_text("name: from-file\nlayers: [7, 8]\nfast: yes\n")
    cfg = parse(["--config", str(config), "--ratio", "0.9"])
    assert cfg == Demo(name="from-file", count=5, ratio=0.9, layers=[7, 8], fast=True)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(S3Error, match="no such file"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "bad.yaml").write_text("count: [1,\n")
    with pytest.raises(S3Error, match="not valid YAML"):
        parse(["--config", str(tmp_path / "bad.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(S3Error, match="expected a mapping"):
        parse(["--config", str(tmp_path / "list.yaml")])
    (tmp_path / "unknown.yaml").write_text("count: 2\ncuont: 3\n")
    with pytest.raises(S3Error, match=r"--config .*unknown\.yaml: unknown option 'cuont'"):
        parse(["--config", str(tmp_path / "unknown.yaml")])
    (tmp_path / "null.yaml").write_text("count: null\n")
    with pytest.raises(S3Error, match="--count: needs a value"):
        parse(["--config", str(tmp_path / "null.yaml")])
    with pytest.raises(S3Error, match="cannot be read"):
        read_config_file(tmp_path)  # a folder
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}


def test_shipped_train_defaults_are_valid_options() -> None:
    from s3attn.train.config import TrainConfig

    shipped = cliutil.load_yaml_defaults("train")
    assert shipped, "configs/train.yaml is missing from the package"
    cfg = make_config(TrainConfig, argparse.Namespace(config=None), "train")
    assert cfg.k == shipped["k"] and cfg.layers == shipped["layers"]

"""s3attn.config: dataclass -> CLI (simple-parsing): field docstrings as --help, value parsing, nested configs
with flat and dotted flags, YAML defaults and --config precedence, one-line errors; the four commands' flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import s3attn.config as config
from s3attn.config import CliParser, add_config, field_docs, flat_options, read_config_file
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


@dataclass
class Inner:
    weight: float = 0.5
    """A weight."""
    count: int = 1
    """Shares its name with Demo's count."""


@dataclass
class Outer:
    top: int = 7
    """A top-level option."""
    inner: Inner = field(default_factory=lambda: Inner(weight=0.25))
    """The inner options."""
    count: int = 2
    """Shares its name with Inner's count."""


def parse(argv: list[str], cls: type = Demo, defaults_name: str = "no-such-defaults"):
    parser = CliParser(prog="demo")
    add_config(parser, cls, defaults_name, argv, aliases={"layers": ["--layer"]})
    return parser.parse_args(argv).cfg


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
    assert "--name STR The run's name; spread over two lines (100% kept). (default: demo)" in out
    assert "--layers INT,..., --layer INT,... Layers, comma separated. (default: 1,2)" in out
    assert "--fast, --no-fast Go fast. (default: False)" in out
    assert "Added by a subclass. (default: e)" in out
    assert "--config FILE" in out


def test_values_are_parsed_by_type() -> None:
    cfg = parse(["--count", "1e3", "--ratio", "0.5", "--layer", "4,2", "--fast", "--name", "x"])
    assert cfg == Demo(name="x", count=1000, ratio=0.5, layers=[4, 2], fast=True)
    assert parse(["--count", "1_000", "--ratio", "none", "--no-fast"]) == Demo(count=1000)
    assert parse(["--layers", ""]).layers == []
    assert parse([]) == Demo()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "three"], "--count 'three': not a valid int"),
        (["--count", "1.5"], "--count '1.5': not a valid int"),
        (["--ratio", "half"], "--ratio 'half': not a valid float or none"),
        (["--layers", "1,x"], "--layers '1,x': not a valid list of int"),
        (["--count"], "--count: expected one argument"),
        (["--cuont", "3"], "unrecognized arguments: --cuont 3"),
    ],
)
def test_bad_values_are_one_line_naming_the_option(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"demo: error: {message}\n"


def test_precedence_defaults_yaml_config_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        config, "load_yaml_defaults", lambda name: {"count": 5, "name": "shipped", "ratio": 0.1}
    )
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\nlayers: [7, 8]\nfast: yes\n")
    cfg = parse(["--config", str(path), "--ratio", "0.9"])
    assert cfg == Demo(name="from-file", count=5, ratio=0.9, layers=[7, 8], fast=True)
    assert parse(["--config", str(path), "--no-fast", "--layers", "3"]).layers == [3]


def test_help_shows_the_effective_default(monkeypatch, capsys) -> None:
    monkeypatch.setattr(config, "load_yaml_defaults", lambda name: {"count": 5})
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        parse(["--help"])
    assert "How many things. (default: 5)" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(config, "load_yaml_defaults", lambda name: {"inner": {"weight": 0.75}})
    with pytest.raises(SystemExit):
        parse(["--help"], Outer)
    assert "--weight FLOAT, --inner.weight FLOAT A weight. (default: 0.75)" in " ".join(
        capsys.readouterr().out.split()
    )


def test_nested_flags_flat_and_dotted() -> None:
    assert parse([], Outer) == Outer()
    assert parse([], Outer).inner.weight == 0.25  # the nested default factory's value
    cfg = parse(["--weight", "0.1", "--inner.count", "4", "--count", "9", "--top", "1"], Outer)
    assert cfg == Outer(top=1, inner=Inner(weight=0.1, count=4), count=9)
    assert parse(["--inner.weight", "0.3"], Outer).inner.weight == 0.3
    table = config.leaves(Outer)
    # 'count' is shared: each keeps only its full path as a flag (for the top-level one, --count)
    assert table["count"].flags == ("--count",) and table["inner.count"].flags == ("--inner.count",)
    assert table["inner.weight"].flags == ("--weight", "--inner.weight")


def test_nested_yaml_sections_dotted_and_flat_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  count: 3\ninner.weight: 0.9\ntop: 4\n")
    assert parse(["--config", str(path)], Outer) == Outer(top=4, inner=Inner(weight=0.9, count=3))
    path.write_text("weight: '0.5'\n")  # a flat name of a nested field, a string value converted
    assert parse(["--config", str(path)], Outer).inner.weight == 0.5
    path.write_text("inner: {top: 1}\n")
    with pytest.raises(S3Error, match="unknown option 'inner.top'"):
        parse(["--config", str(path)], Outer)


def test_flat_options() -> None:
    flat = flat_options(Outer(inner=Inner(count=5)))
    assert flat == {"top": 7, "weight": 0.5, "inner.count": 5, "count": 2}


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
    (tmp_path / "word.yaml").write_text("count: three\n")
    with pytest.raises(S3Error, match=r"word\.yaml: --count 'three': not a valid int"):
        parse(["--config", str(tmp_path / "word.yaml")])
    with pytest.raises(S3Error, match="cannot be read"):
        read_config_file(tmp_path)  # a folder
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}


def _commands():
    from s3attn.evaluation.evaluate import EvalConfig
    from s3attn.index_builder.config import BuildConfig
    from s3attn.retrieval.cli import AskConfig
    from s3attn.train.config import TrainConfig

    return {"train": TrainConfig, "eval": EvalConfig, "index": BuildConfig, "ask": AskConfig}


@pytest.mark.parametrize("name", ["train", "eval", "index", "ask"])
def test_shipped_yaml_holds_only_valid_options_that_differ_from_the_code(name: str) -> None:
    cls = _commands()[name]
    shipped = config.load_yaml_defaults(name)
    table = config.leaves(cls)
    effective = config.effective_defaults(cls, name)
    for key in shipped:
        path = next(
            p
            for p, leaf in table.items()
            if key.replace("-", "_") in (p, leaf.flags[0][2:].replace("-", "_"))
        )
        assert config._get(effective, path) != config._get(cls(), path), f"configs/{name}.yaml: {key}"
    assert config.effective_defaults(cls, name) == effective  # the shipped file applies cleanly


def test_the_commands_take_the_flags_users_type() -> None:
    from s3attn.evaluation.cli import parse_args as eval_args
    from s3attn.index_builder.cli import _parser
    from s3attn.train.cli import parse_args as train_args

    cfg = train_args(["--layer", "16", "--k", "32"])
    assert (cfg.layers, cfg.k) == ([16], 32)
    argv = [
        "build",
        "corpus/",
        "--out",
        "X",
        "--segment-tokens",
        "1024",
        "--merge-tier",
        "0",
        "--layers",
        "6,12",
    ]
    args = _parser(argv).parse_args(argv)
    assert (args.corpus, args.cfg.out, args.cfg.segment_tokens, args.cfg.merge_tier) == (
        "corpus/",
        "X",
        1024,
        0,
    )
    assert args.cfg.stack.layers == [6, 12]
    cfg = eval_args("--tasks niah,ruler_vt --lengths 4096 --depths 25,75 --samples 1 --methods bm25,hybrid "
                    "--fusion linear --bm25-weight 0.7 --min-relevance 0.4 --index-cache DIR --seed 4 "
                    "--no-progress --site query --budget 512 --max-new-tokens 8".split())  # fmt: skip
    assert (cfg.tasks, cfg.lengths, cfg.depths, cfg.samples) == (
        ["niah", "ruler_vt"],
        [4096],
        [25.0, 75.0],
        1,
    )
    assert (cfg.methods, cfg.index_cache, cfg.seed, cfg.progress) == (["bm25", "hybrid"], "DIR", 4, False)
    r = cfg.retrieval
    assert (r.hybrid.fusion, r.hybrid.bm25_weight, r.hybrid.min_relevance) == ("linear", 0.7, 0.4)
    assert (r.question.site, r.budget, r.max_new_tokens) == ("query", 512, 8)
    argv = ["ask", "INDEX", "question", "--mode", "s3", "--budget", "256", "--fusion", "tiered"]
    argv += ["--show-spans", "--json", "--no-generate", "--retrieval.hybrid.bm25-share", "0.8"]
    args = _parser(argv).parse_args(argv)
    ask = args.cfg
    assert (args.index, args.question, ask.mode, ask.show_spans, ask.json, ask.generate) == (
        "INDEX", "question", "s3", True, True, False,
    )  # fmt: skip
    assert (ask.retrieval.budget, ask.retrieval.hybrid.fusion, ask.retrieval.hybrid.bm25_share) == (
        256, "tiered", 0.8,
    )  # fmt: skip


def test_every_command_takes_dtype() -> None:
    """--dtype: the model precision of build, ask, eval and the training harvest (--sae-dtype: the SAE's)."""
    from s3attn.evaluation.cli import parse_args as eval_args
    from s3attn.index_builder.cli import _parser
    from s3attn.train.cli import parse_args as train_args

    cfg = train_args(["--dtype", "float32", "--sae-dtype", "bfloat16"])
    assert (cfg.dtype, cfg.sae_dtype) == ("float32", "bfloat16")
    assert (train_args([]).dtype, train_args([]).sae_dtype) == ("auto", "float32")
    assert (
        eval_args([]).stack.dtype == "auto" and eval_args(["--dtype", "bfloat16"]).stack.dtype == "bfloat16"
    )
    for argv, want in (
        (["build", "corpus/"], "auto"),
        (["build", "corpus/", "--dtype", "float16"], "float16"),
        (["build", "corpus/", "--stack.dtype", "bfloat16"], "bfloat16"),
    ):
        assert _parser(argv).parse_args(argv).cfg.stack.dtype == want
    for argv, want in ((["ask", "I", "q"], "index"), (["ask", "I", "q", "--dtype", "float32"], "float32")):
        assert _parser(argv).parse_args(argv).cfg.dtype == want


def test_a_config_file_goes_to_the_chosen_subcommand_only(tmp_path: Path) -> None:
    from s3attn.index_builder.cli import _parser

    path = tmp_path / "ask.yaml"
    path.write_text("retrieval: {budget: 100}\nfusion: rrf\n")
    argv = ["ask", "INDEX", "q", "--config", str(path)]
    cfg = _parser(argv).parse_args(argv).cfg
    assert (cfg.retrieval.budget, cfg.retrieval.hybrid.fusion) == (100, "rrf")
    argv = ["build", "corpus", "--config", str(path)]
    with pytest.raises(S3Error, match="unknown option 'retrieval"):
        _parser(argv)

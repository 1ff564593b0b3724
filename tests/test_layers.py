"""The layer table in the README's architecture section is the import rule: every module of the package
(and every bench script) belongs to exactly one layer, and imports (module level and inside functions)
only modules of its own layer or of a layer the table lets it import."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {  # folder -> package (pyproject's package-dir)
    "s3attn": "s3attn",
    "models": "s3attn.models",
    "saes": "s3attn.saes",
    "train": "s3attn.train",
    "index_builder": "s3attn.index_builder",
    "retrieval": "s3attn.retrieval",
    "evaluation": "s3attn.evaluation",
    "integrations": "s3attn.integrations",
    "configs": "s3attn.configs",
    "checkpoints": "s3attn.checkpoints",
    "bench": "bench",
}


def layer_table() -> dict[str, tuple[list[str], list[str]]]:
    """layer -> (module patterns, layers it may import), read from the README's table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    table: dict[str, tuple[list[str], list[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        name, modules, may = cells[0], re.findall(r"`([^`]+)`", cells[1]), cells[2]
        allowed = [] if may in ("-", "—", "") else [m.strip() for m in may.split(",")]
        table[name] = (modules, allowed)
    return table


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    pkg = PACKAGE_DIRS[rel.parts[0]]
    parts = [*pkg.split("."), *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[module_name(path)] = path
    return out


def layer_of(module: str, table: dict[str, tuple[list[str], list[str]]]) -> str | None:
    """The layer whose most specific pattern (fewest wildcards, then longest) matches ``module``."""
    best: tuple[tuple[int, int], str] | None = None
    for layer, (patterns, _) in table.items():
        for pat in patterns:
            if fnmatch.fnmatchcase(module, pat):
                rank = (-pat.count("*"), len(pat))
                if best is None or rank > best[0]:
                    best = (rank, layer)
    return None if best is None else best[1]


def imported_modules(path: Path, module: str) -> set[str]:
    """Every s3attn module named by an import statement anywhere in the file (absolute or relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in out if m == "s3attn" or m.startswith("s3attn.")}


def test_the_table_is_in_the_readme_and_names_real_layers():
    table = layer_table()
    assert len(table) >= 7, table
    for layer, (_, allowed) in table.items():
        unknown = [a for a in allowed if a not in table and a != "all"]
        assert not unknown, f"layer {layer!r} may import unknown layers {unknown}"


def test_every_module_is_in_one_layer():
    table = layer_table()
    missing = [m for m in all_modules() if layer_of(m, table) is None]
    assert not missing, f"modules in no layer of the README's table: {missing}"


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_imports_run_downward(module):
    table = layer_table()
    modules = all_modules()
    mine = layer_of(module, table)
    allowed = set(table[mine][1]) | {mine}
    bad = []
    for target in sorted(imported_modules(modules[module], module)):
        # an attribute imported from a package (`from s3attn.x import name`) is judged by the package
        owner = target if target in modules else target.rpartition(".")[0]
        if owner not in modules:
            continue
        theirs = layer_of(owner, table)
        if "all" not in allowed and theirs not in allowed:
            bad.append(f"{target} ({theirs})")
    assert not bad, f"{module} ({mine}) imports upward or sideways: {bad}"


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a retrieval module importing evaluation is reported."""
    table = layer_table()
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from s3attn.evaluation import tasks\n")
    targets = imported_modules(fake, "s3attn.retrieval.x")
    assert "s3attn.evaluation.tasks" in targets
    assert layer_of("s3attn.evaluation.tasks", table) not in table[layer_of("s3attn.retrieval.x", table)][1]

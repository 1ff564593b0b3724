"""The package's promises to other projects: a light `s3attn.saes`, the console scripts, the namespace."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_saes_stays_light():
    code = (
        "import sys, s3attn.saes as s\n"
        "assert callable(s.load) and callable(s.tap_heads) and callable(s.load_model)\n"
        "print(','.join(m for m in ('lightning', 'zarr', 'datasets', 'transformers', 'bm25s') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import s3attn.saes pulled in: {out}"


@pytest.mark.parametrize("module", ["s3attn.train.cli", "s3attn.index_builder.cli", "s3attn.evaluation.cli"])
def test_console_scripts_have_help(module):
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout


def test_namespace_maps_the_design_folders():
    import s3attn.index_builder
    import s3attn.retrieval
    import s3attn.saes
    import s3attn.train

    for mod, folder in (
        (s3attn.saes, "saes"),
        (s3attn.train, "train"),
        (s3attn.index_builder, "index_builder"),
        (s3attn.retrieval, "retrieval"),
    ):
        assert mod.__file__.replace("\\\\", "/").split("/")[-2] == folder

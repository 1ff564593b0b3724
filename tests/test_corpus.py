"""Corpus reading: every accepted format, skipped files with warnings, block splitting, bad-input errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import s3attn.corpus as corpus_mod
from s3attn.corpus import Corpus, Document
from s3attn.errors import S3Error


def texts(corpus: Corpus) -> dict[str, str]:
    return {doc.path: doc.read_text() for doc in corpus}


def warnings_of(caplog) -> list[str]:
    """The warnings logged, as the CLIs show them (``warning: ...``)."""
    return [f"warning: {r.getMessage()}" for r in caplog.records if r.levelno == logging.WARNING]


def test_every_format_is_read(tmp_path: Path, caplog) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "c"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("plain text file\n")
    (root / "sub" / "b.md").write_text("# markdown\nbody")
    (root / "c.jsonl").write_text(
        json.dumps({"text": "first row"}) + "\n\n" + json.dumps({"text": "third line", "id": 3}) + "\n"
    )
    pq.write_table(pa.table({"text": ["pq one", None, "pq three"], "n": [1, 2, 3]}), root / "d.parquet")
    datasets.Dataset.from_dict({"text": ["ds one", "ds two"]}).save_to_disk(str(root / "ds"))

    got = texts(Corpus(root))
    assert got == {
        "a.txt": "plain text file\n",
        "c.jsonl#1": "first row",
        "c.jsonl#3": "third line",  # line numbers, blank lines included
        "d.parquet#1": "pq one",
        "d.parquet#3": "pq three",  # null rows are skipped
        "ds#1": "ds one",
        "ds#2": "ds two",
        "sub/b.md": "# markdown\nbody",
    }
    assert warnings_of(caplog) == []  # the dataset's own files are not reported
    # A saved dataset or a single file can also be the corpus itself.
    assert list(texts(Corpus(root / "ds")).values()) == ["ds one", "ds two"]
    assert texts(Corpus(root / "c.jsonl")) == {"c.jsonl#1": "first row", "c.jsonl#3": "third line"}


def test_text_field_option(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hello there"}) + "\n")
    assert texts(Corpus(tmp_path, text_field="body")) == {"x.jsonl#1": "hello there"}


def test_hidden_binary_and_unknown_files_skipped_with_warnings(tmp_path: Path, caplog) -> None:
    (tmp_path / "good.txt").write_text("kept")
    (tmp_path / ".secret.txt").write_text("hidden")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_text("inside a hidden folder")
    (tmp_path / "blob.txt").write_bytes(b"PK\x03\x04\x00\x00binary\x00")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    corpus = Corpus(tmp_path)
    assert [p.name for p in corpus.files()] == ["good.txt"]
    warned = warnings_of(caplog)
    for name in (".secret.txt", ".git", "blob.txt", "image.png"):
        assert sum(str(tmp_path / name) in line for line in warned) == 1, (name, warned)
    assert not any("notes.txt" in line for line in warned)  # one warning for the hidden folder, not per file
    assert any("binary" in line and "blob.txt" in line for line in warned)
    assert texts(corpus) == {"good.txt": "kept"}


@pytest.mark.parametrize("from_file", [False, True])
def test_blocks_of_one_long_line_split_at_whitespace(tmp_path: Path, monkeypatch, from_file: bool) -> None:
    words = ["élan", "word", "x" * 30, "naïve", "end"]
    text = " ".join(words[i % len(words)] for i in range(3000))  # ~27k chars, no newline, multi-byte chars
    if from_file:
        monkeypatch.setattr(corpus_mod, "_READ_BYTES", 777)  # reads split multi-byte characters
        path = tmp_path / "long.txt"
        path.write_text(text, encoding="utf-8")
        doc = Document("long.txt", path, "h")
    else:
        doc = Document("row", tmp_path, "h", text)
    blocks = list(doc.blocks(block_chars=1000))
    assert "".join(blocks) == text
    assert len(blocks) >= 27
    for block in blocks[:-1]:
        assert 0 < len(block) <= 1000
        assert block[-1] == " "  # cut after whitespace, so no word is split


def test_block_without_whitespace_is_cut_at_the_limit() -> None:
    text = "y" * 10_000
    blocks = list(Document("r", Path("."), "h", text).blocks(block_chars=3000))
    assert [len(b) for b in blocks] == [3000, 3000, 3000, 1000]


def test_jsonl_line_without_field_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(S3Error, match=r"rows\.jsonl:2: .*'text'.*--text-field"):
        list(Corpus(tmp_path))
    path.write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(S3Error, match=r"rows\.jsonl:2: "):
        list(Corpus(tmp_path))


def test_non_utf8_is_an_error_naming_file_and_offset_unless_skipped(tmp_path: Path, caplog) -> None:
    (tmp_path / "good.txt").write_text("fine text")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("the café".encode("latin-1"))
    with pytest.raises(S3Error) as exc:
        list(Corpus(tmp_path))
    msg = str(exc.value)
    assert str(bad) in msg and "offset 7" in msg and "--skip-bad-files" in msg
    caplog.clear()
    assert texts(Corpus(tmp_path, skip_bad=True)) == {"good.txt": "fine text"}
    assert any(str(bad) in line for line in warnings_of(caplog))


def test_truncated_utf8_at_end_reports_its_offset(tmp_path: Path) -> None:
    (tmp_path / "cut.txt").write_bytes(b"abc \xe2\x82")  # the first two bytes of the euro sign
    with pytest.raises(S3Error, match="offset 4"):
        list(Corpus(tmp_path))


def test_missing_empty_and_unsupported_inputs(tmp_path: Path) -> None:
    with pytest.raises(S3Error, match="no such file or folder"):
        Corpus(tmp_path / "nope", option="--corpus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(S3Error, match="--corpus .*empty: no documents found"):
        list(Corpus(tmp_path / "empty", option="--corpus"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(S3Error, match=r"data\.csv: not a \.txt"):
        list(Corpus(tmp_path / "data.csv", option="--corpus"))
    (tmp_path / "empty" / "zero.txt").write_text("")
    with pytest.raises(S3Error, match="no documents found"):  # empty files are skipped
        list(Corpus(tmp_path / "empty"))


def test_parquet_without_the_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(S3Error, match=r"t\.parquet: no 'text' column; pass --text-field"):
        list(Corpus(tmp_path))
    assert texts(Corpus(tmp_path, text_field="body")) == {"t.parquet#1": "x"}

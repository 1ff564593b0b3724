"""Readers survive writers: snapshot reads under generation leases, ``refresh``, ``s3-index gc`` (issue 16).

On small random codes (tests/test_store.py's segments): a reader opened before ``s3-index merge --all`` in
another process keeps answering from its generation (the reported ``KeyError: 'L6/h0/offsets'``); the merged-
away folders stay while it holds its lease and go once it closes or refreshes and a writer or ``gc`` runs; the
lease of a killed reader process is recovered; ``refresh`` opens only the new segments. Then the stress run
(bench/stress_index.py: one writer process appending and merging, three reader processes asking questions
with the tiny model) for a few seconds: no errors, every answer from one generation, every appended document
found after the writer stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_store import ATTRS, HEADS, F, make_segment

from s3attn.constants import INDEX_LEASES_DIR, INDEX_MANIFESTS_DIR, INDEX_ROOT, SEGMENTS_DIR
from s3attn.index_builder.cli import main
from s3attn.index_builder.indexer import IndexWriter
from s3attn.index_builder.reader import IndexReader
from s3attn.leases import lease_file, manifest_copy

ROOT = Path(__file__).resolve().parents[1]


def make_index(path: Path, segments: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with IndexWriter.create(path, ATTRS) as w:
        for _ in range(segments):
            w.add_segment(make_segment(rng, w.num_tokens, w.num_docs))
    return path


def on_disk(path: Path) -> list[str]:
    return sorted(p.name for p in (path / INDEX_ROOT / SEGMENTS_DIR).iterdir() if p.is_dir())


def content(st: IndexReader) -> tuple:
    """What a question reads: documents, every token, the positions of every feature's postings."""
    heads = {key: st.postings(*key, np.arange(F)) for key in HEADS}
    docs = [tuple(d) for d in st.documents()]
    return docs, st.tokens(0, st.num_tokens), {k: (p.positions, p.feature_slot) for k, p in heads.items()}


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    for key in HEADS:
        np.testing.assert_array_equal(a[2][key][0], b[2][key][0])
        np.testing.assert_array_equal(a[2][key][1], b[2][key][1])


def s3_index(*argv: str) -> subprocess.CompletedProcess:
    """``s3-index`` in another process."""
    cmd = [sys.executable, "-m", "s3attn.index_builder.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_reader_keeps_answering_across_merge_all_in_another_process(tmp_path: Path) -> None:
    path = make_index(tmp_path / "idx")
    with IndexReader.open(path) as ref:
        expected = content(ref)
    reader = IndexReader.open(path)  # the reported bug: opened, then merge --all elsewhere, then a question
    old, gen = on_disk(path), reader.generation
    assert reader.leased_generation == gen and lease_file(path, gen).is_file()
    done = s3_index("merge", str(path), "--all")
    assert done.returncode == 0, done.stderr
    with IndexReader.open(path) as fresh:
        assert len(fresh.segments) == 1 and fresh.generation == gen + 1
        assert_same(content(fresh), expected)
    assert set(old) < set(
        on_disk(path)
    )  # the merged-away folders stay: a live reader's generation lists them
    assert reader.generation == gen and [s.name for s in reader.segments] == old
    assert_same(content(reader), expected)  # no KeyError: its generation is still on disk
    assert manifest_copy(path, gen).is_file()

    code = main(["gc", str(path)])  # the reader still holds generation gen: nothing goes
    assert code == 0 and set(old) < set(on_disk(path))
    assert reader.refresh() is True and reader.refresh() is False
    assert reader.generation == reader.leased_generation == gen + 1 and len(reader.segments) == 1
    assert not lease_file(path, gen).exists()  # the last holder removed it
    assert set(old) < set(on_disk(path))  # refreshing deletes nothing; the next writer or gc does
    with IndexWriter.open(path) as w:  # opening for writing collects
        assert sorted(w.last_gc.deleted) == old and w.last_gc.pending == [] and w.last_gc.leased == [gen + 1]
    assert on_disk(path) == [s.name for s in reader.segments]
    assert not manifest_copy(path, gen).exists() and manifest_copy(path, gen + 1).is_file()
    assert_same(content(reader), expected)
    reader.close()
    assert not (path / INDEX_LEASES_DIR).exists()  # no reader left: no lease file either


def test_closed_reader_frees_its_segments_for_the_next_writer(tmp_path: Path) -> None:
    path = make_index(tmp_path / "idx", segments=4, seed=1)
    reader = IndexReader.open(path)
    old = on_disk(path)
    with IndexWriter.open(path) as w:
        assert w.merge(2) == 6 and len(w.segments) == 1  # three merges (2+2, then 2): each commit collects
        assert sorted(w.last_gc.pending) == old and len(w.last_gc.deleted) == 2  # the two merged in between
        reader.close()
        w.add_segment(make_segment(np.random.default_rng(2), w.num_tokens, w.num_docs))  # commits, collects
        assert on_disk(path) == sorted(s.name for s in w.segments)
        assert sorted(os.listdir(path / INDEX_MANIFESTS_DIR)) == [manifest_copy(path, w.generation).name]


def test_lease_of_a_killed_reader_is_recovered(tmp_path: Path, capsys) -> None:
    path = make_index(tmp_path / "idx")
    script = textwrap.dedent(f"""
        import sys, time
        from s3attn.index_builder.reader import IndexReader
        reader = IndexReader.open({str(path)!r})
        reader.documents()
        print(reader.leased_generation, flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        gen = int(child.stdout.readline())
        old = on_disk(path)
        with IndexWriter.open(path) as w:
            w.merge(into_one=True)
            assert sorted(w.last_gc.pending) == old and w.last_gc.leased == [gen]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert lease_file(path, gen).is_file()  # killed: it could not remove its lease file
    assert main(["gc", str(path)]) == 0
    assert (
        "deleted 3 segment folders; 0 kept for live readers (leased generations: none)"
        in capsys.readouterr().out
    )
    assert len(on_disk(path)) == 1 and not (path / INDEX_LEASES_DIR).exists()


def test_refresh_opens_only_new_segments(tmp_path: Path) -> None:
    path = make_index(tmp_path / "idx")
    reader = IndexReader.open(path)
    docs, n = reader.documents(), reader.num_tokens
    kept = dict(reader._readers)  # every segment reader, opened by documents()
    assert len(kept) == 3 and reader.refresh() is False
    with IndexWriter.open(path) as w:
        new = w.add_segment(make_segment(np.random.default_rng(3), w.num_tokens, w.num_docs))
    assert reader.documents() == docs and reader.num_tokens == n  # a snapshot until refresh
    with pytest.raises(ValueError, match="outside"):
        reader.tokens(n, n + 1)
    assert reader.refresh() is True
    assert set(reader._readers) == set(kept)  # nothing opened yet
    assert len(reader.documents()) == len(docs) + 2 and reader.num_tokens == n + 1000
    assert set(reader._readers) - set(kept) == {new}  # only the new segment was opened ...
    assert all(reader._readers[name] is seg for name, seg in kept.items())  # ... the others kept as they were
    with IndexReader.open(path) as fresh:
        assert_same(content(reader), content(fresh))
    reader.close()


def test_unknown_leased_generation_keeps_every_segment(tmp_path: Path) -> None:
    path = make_index(tmp_path / "idx")
    reader = IndexReader.open(path)
    with IndexWriter.open(path) as w:
        w.merge(into_one=True)
        manifest_copy(path, reader.generation).unlink()  # what the reader's generation lists is unknown now
        report = w.garbage_collect()
        assert report.deleted == [] and len(report.pending) == 3
    assert reader.verify() == []
    reader.close()


def test_bm25_view_shows_one_generation_and_reloads_when_rebuilt(tmp_path: Path) -> None:
    from s3attn.index_builder.bm25 import Passage
    from s3attn.index_builder.bm25_build import BM25Writer
    from s3attn.retrieval.bm25_view import BM25View

    folder = tmp_path / "bm25"
    passages = [Passage(0, 0, 10), Passage(1, 10, 20), Passage(2, 20, 30)]
    texts = ["river water city", "river mountain", "river book story"]
    BM25Writer.build(passages, texts).save(folder)
    two = [(0, 0, 10), (1, 10, 20)]
    view = BM25View.load(folder, two)  # a reader whose generation lacks document 2 (BM25 is ahead)
    assert len(view) == 2 and view.search("book story", 5) == []
    hits = view.search("river book", 5)
    assert sorted(h.passage.doc_id for h in hits) == [0, 1]
    assert view.refreshed(two) is view  # nothing changed
    three = view.refreshed([*two, (2, 20, 30)])  # the reader moved: same BM25, nothing hidden
    assert three.index is view.index and three.search("book story", 5)[0].passage.doc_id == 2
    BM25Writer.build([*passages, Passage(3, 30, 40)], [*texts, "queen king"]).save(folder)  # rebuilt
    again = three.refreshed(three.ranges_D3)
    assert again.index is not three.index and len(again.index) == 4 and len(again) == 3
    assert again.search("queen", 5) == []


@pytest.mark.slow
def test_stress_writer_and_three_readers(tmp_path: Path) -> None:
    out = tmp_path / "stress.json"
    cmd = [sys.executable, str(ROOT / "bench" / "stress_index.py"), "--seconds", "12", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    figures = json.loads(out.read_text())
    assert done.returncode == 0 and figures["errors"] == 0, figures["error_samples"] or done.stderr[-2000:]
    assert figures["questions"] >= 30 and min(figures["questions_per_reader"]) > 0
    assert figures["appends"] >= 2 and figures["final_found"] == [figures["appends"]] * 3
    assert figures["generations_written"] >= figures["appends"] and figures["refreshes_that_moved"] >= 1
    assert figures["final_segments"] >= 1 and figures["final_gc_deleted"] >= 0

"""DocTable: the documents of a generation as columns, rows equal to a tuple per document."""

from __future__ import annotations

import pytest

from s3attn.index_builder.doc_table import DocTable
from s3attn.index_builder.schema import DocRecord


def _records() -> list[DocRecord]:
    return [
        DocRecord(0, "a.txt", "h0", 0, 10),
        DocRecord(1, "notes/été.md", "h1", 10, 5),  # cut across two segments: one row
        DocRecord(1, "notes/été.md", "h1", 15, 7),
        DocRecord(2, "b.txt", "h2", 22, 3),
        DocRecord(2, "b.txt", "h2", 30, 4),  # same id, not touching: a row of its own
    ]


def test_rows_join_touching_pieces_and_keep_paths():
    table = DocTable.of(_records())
    assert list(table) == [
        (0, "a.txt", 0, 10),
        (1, "notes/été.md", 10, 22),
        (2, "b.txt", 22, 25),
        (2, "b.txt", 30, 34),
    ]
    assert len(table) == 4 and table[-1] == table[3] and table[1:3] == [table[1], table[2]]
    assert table.ranges() == [(0, 0, 10), (1, 10, 22), (2, 22, 25), (2, 30, 34)]
    with pytest.raises(IndexError):
        table[4]


def test_containing_finds_the_row_of_a_position_or_none():
    table = DocTable.of(_records())
    assert [table.containing(p) for p in (0, 9, 10, 21, 22, 25, 29, 30, 33, 34)] == [
        0,
        0,
        1,
        1,
        2,
        -1,
        -1,
        3,
        3,
        -1,
    ]
    assert DocTable.of([]).containing(0) == -1 and list(DocTable.of([])) == []

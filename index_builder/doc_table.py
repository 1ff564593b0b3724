"""Documents tables. ``DocColumns``: one segment's documents as format 4 stores them (three arrays, no JSON).
``DocTable``: the documents an index generation holds, one row ``(doc_id, path, start, end)`` per document
(the pieces of a document cut across segments joined), sorted by start.

Both are columns (int64 arrays, the strings in one UTF-8 buffer each, every string ended by a NUL), not a
Python object per document: at 16M tokens (8,192 documents) the tuples, the records and the JSON they were
parsed from held several MiB of small objects in a reader, which grew with the corpus
(``bench/bench_scale.py``). A reader reads a format-4 segment's table and paths straight into arrays; the
content hashes only when asked (the writer's "already indexed?" check, ``docs()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, overload

import numpy as np

from s3attn.index_builder.schema import DocRecord

Row = tuple[int, str, int, int]  # (doc_id, path, start, end): global token range [start, end)
_END = 0  # the byte ending each string of a strings buffer


def encode_strings(strings: Iterable[str], what: str) -> np.ndarray:
    """uint8 [B]: the UTF-8 of each string followed by a NUL. ValueError if one holds a NUL."""
    parts = []
    for s in strings:
        if "\0" in s:
            raise ValueError(f"{what} {s!r} holds a NUL character")
        parts.append(s.encode("utf-8") + b"\0")
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy()


def decode_strings(blob: np.ndarray) -> list[str]:
    """The strings of a buffer of :func:`encode_strings`."""
    return [b.decode("utf-8") for b in np.asarray(blob, dtype=np.uint8).tobytes().split(b"\0")[:-1]]


def string_ends(blob: np.ndarray) -> np.ndarray:
    """int64 [S]: where each string of ``blob`` ends (its NUL)."""
    return np.flatnonzero(np.asarray(blob) == _END).astype(np.int64)


def table_problems(table_D3: np.ndarray, token_start: int, num_tokens: int, num_docs: int) -> list[str]:
    """Why rows (doc_id, token_start, num_tokens) cannot be the documents of a segment of tokens
    [token_start, token_start + num_tokens) holding ``num_docs`` documents: a count that differs, a document
    that does not start where the previous one ends (or is empty), a sum that differs."""
    table = np.asarray(table_D3, dtype=np.int64).reshape(-1, 3)
    if len(table) != num_docs:
        return [f"{len(table)} documents, the manifest says {num_docs}"]
    starts = np.concatenate([[token_start], token_start + np.cumsum(table[:, 2])])
    bad = np.flatnonzero((table[:, 1] != starts[:-1]) | (table[:, 2] <= 0))
    if bad.size:
        return [f"document {int(bad[0])} does not start where the previous one ends"]
    if starts[-1] != token_start + num_tokens:
        return [f"documents cover {int(starts[-1] - token_start)} tokens, the segment has {num_tokens}"]
    return []


class DocColumns(NamedTuple):
    """One segment's documents as stored in format 4: ``table_D3`` int64 rows (doc_id, token_start GLOBAL,
    num_tokens); ``paths`` and ``hashes`` uint8 buffers of :func:`encode_strings` (``hashes`` None when not
    read)."""

    table_D3: np.ndarray
    paths: np.ndarray
    hashes: np.ndarray | None = None

    @classmethod
    def of(cls, records: Iterable[DocRecord]) -> DocColumns:
        recs = list(records)
        table = np.array([(r.doc_id, r.token_start, r.num_tokens) for r in recs], dtype=np.int64)
        return cls(
            table.reshape(-1, 3),
            encode_strings((r.path for r in recs), "document path"),
            encode_strings((r.content_hash for r in recs), "content hash"),
        )

    @classmethod
    def stored(cls, table: np.ndarray, paths: np.ndarray, hashes: np.ndarray | None) -> DocColumns:
        """The columns as read from format 4's arrays (``docs`` flat); ValueError if it is not rows of 3."""
        if table.ndim != 1 or table.size % 3:
            raise ValueError(f"{table.size} entries, not rows of 3")
        return cls(table.reshape(-1, 3).astype(np.int64, copy=False), paths, hashes)

    def records(self) -> list[DocRecord]:
        """One :class:`DocRecord` per document (needs ``hashes``)."""
        if self.hashes is None:
            raise ValueError("the content hashes were not read")
        rows = zip(
            self.table_D3.tolist(), decode_strings(self.paths), decode_strings(self.hashes), strict=True
        )
        return [DocRecord(d, path, h, s, n) for (d, s, n), path, h in rows]

    def problems(self, token_start: int, num_tokens: int, num_docs: int) -> list[str]:
        """:func:`table_problems`, then strings that do not match the rows."""
        found = table_problems(self.table_D3, token_start, num_tokens, num_docs)
        if found:
            return found
        for what, blob in (("paths", self.paths), ("content hashes", self.hashes)):
            if blob is not None and (string_ends(blob).size != num_docs or (blob.size and blob[-1] != _END)):
                return [f"the documents table holds {string_ends(blob).size} {what} for {num_docs} documents"]
        return []


class DocTable(Sequence[Row]):
    """Rows ``(doc_id, path, start, end)``, sorted by start; ``ranges_D3`` holds (doc_id, start, end)."""

    def __init__(self, ranges_D3: np.ndarray, paths: np.ndarray, path_ends: np.ndarray | None = None) -> None:
        """``paths``: a buffer of :func:`encode_strings`, one path per row (``path_ends``: its
        :func:`string_ends`, when known)."""
        self.ranges_D3 = np.asarray(ranges_D3, dtype=np.int64).reshape(-1, 3)
        self._paths = np.asarray(paths, dtype=np.uint8)
        self._path_ends = string_ends(self._paths) if path_ends is None else path_ends
        if len(self._path_ends) != len(self.ranges_D3):
            raise ValueError(f"{len(self._path_ends)} paths for {len(self.ranges_D3)} documents")

    @classmethod
    def of(cls, records: Iterable[DocRecord]) -> DocTable:
        """The table of ``records`` (in token order): consecutive records of one document whose token ranges
        touch are one row."""
        return cls.of_columns([DocColumns.of(records)])

    @classmethod
    def of_columns(cls, segments: Iterable[DocColumns]) -> DocTable:
        """The table of the segments' documents (segments in token order), pieces joined as in :meth:`of`."""
        segs = list(segments) or [DocColumns(np.zeros((0, 3), np.int64), np.zeros(0, np.uint8))]
        ranges = np.concatenate([c.table_D3 for c in segs]).astype(np.int64)  # a copy: (doc_id, start, end)
        ranges[:, 2] += ranges[:, 1]
        paths = segs[0].paths if len(segs) == 1 else np.concatenate([c.paths for c in segs])
        ids, starts, ends = ranges.T
        new = np.ones(len(ranges), dtype=bool)
        new[1:] = (ids[1:] != ids[:-1]) | (starts[1:] != ends[:-1])
        path_ends = string_ends(paths)
        if new.all():  # no document in pieces: the columns as they are
            return cls(ranges, paths, path_ends)
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(ranges))[: first.size] - 1
        lens = np.diff(path_ends, prepend=-1)
        joined = np.stack([ids[first], starts[first], ends[last]], axis=1)
        return cls(joined, paths[np.repeat(new, lens)])

    @property
    def starts(self) -> np.ndarray:
        """int64 [D]: each document's first token."""
        return self.ranges_D3[:, 1]

    @property
    def ends(self) -> np.ndarray:
        """int64 [D]: each document's end (exclusive)."""
        return self.ranges_D3[:, 2]

    def path(self, i: int) -> str:
        lo = int(self._path_ends[i - 1]) + 1 if i > 0 else 0
        return self._paths[lo : int(self._path_ends[i])].tobytes().decode("utf-8")

    def ranges(self) -> list[tuple[int, int, int]]:
        """(doc_id, start, end) per document."""
        return [tuple(r) for r in self.ranges_D3.tolist()]  # type: ignore[misc]

    def containing(self, position: int) -> int:
        """The row whose range holds token ``position``, -1 when none does."""
        i = int(np.searchsorted(self.starts, position, side="right")) - 1
        return i if i >= 0 and position < self.ends[i] else -1

    def __len__(self) -> int:
        return len(self.ranges_D3)

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"document row {i} out of {len(self)}")
        i %= len(self)
        d, s, e = self.ranges_D3[i].tolist()
        return (d, self.path(i), s, e)

    def __iter__(self) -> Iterator[Row]:
        return (self[i] for i in range(len(self)))

"""``DocTable``: the documents an index generation holds, one row ``(doc_id, path, start, end)`` per document
(the pieces of a document cut across segments joined), sorted by start.

Held as columns (an int64 array each, the paths in one UTF-8 buffer), not as a Python tuple per document:
at 16M tokens (8,192 documents) the tuples and the records they came from held ~4 MiB of small objects in a
reader, which grew with the corpus (``bench/bench_scale.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

from s3attn.index_builder.schema import DocRecord

Row = tuple[int, str, int, int]  # (doc_id, path, start, end): global token range [start, end)


class DocTable(Sequence[Row]):
    """Rows ``(doc_id, path, start, end)``, sorted by start; ``ranges_D3`` holds (doc_id, start, end)."""

    def __init__(self, ranges_D3: np.ndarray, paths: Sequence[str]) -> None:
        self.ranges_D3 = np.asarray(ranges_D3, dtype=np.int64).reshape(-1, 3)
        if len(paths) != len(self.ranges_D3):
            raise ValueError(f"{len(paths)} paths for {len(self.ranges_D3)} documents")
        encoded = [p.encode("utf-8") for p in paths]
        self._paths = b"".join(encoded)
        self._path_ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)

    @classmethod
    def of(cls, records: Iterable[DocRecord]) -> DocTable:
        """The table of ``records`` (in token order): consecutive records of one document whose token ranges
        touch are one row."""
        recs = list(records)
        ids = np.array([r.doc_id for r in recs], dtype=np.int64)
        starts = np.array([r.token_start for r in recs], dtype=np.int64)
        ends = starts + np.array([r.num_tokens for r in recs], dtype=np.int64)
        new = np.ones(len(recs), dtype=bool)
        new[1:] = (ids[1:] != ids[:-1]) | (starts[1:] != ends[:-1])
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(recs))[: first.size] - 1
        ranges_D3 = np.stack([ids[first], starts[first], ends[last]], axis=1)
        return cls(ranges_D3, [recs[i].path for i in first.tolist()])

    @property
    def starts(self) -> np.ndarray:
        """int64 [D]: each document's first token."""
        return self.ranges_D3[:, 1]

    @property
    def ends(self) -> np.ndarray:
        """int64 [D]: each document's end (exclusive)."""
        return self.ranges_D3[:, 2]

    def path(self, i: int) -> str:
        lo = int(self._path_ends[i - 1]) if i > 0 else 0
        return self._paths[lo : int(self._path_ends[i])].decode("utf-8")

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

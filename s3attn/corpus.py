"""Text in: walk a corpus folder and yield documents (the first step of the data flow).

Accepted: a folder read recursively, or one file, of ``.txt`` / ``.md`` (one document per file), ``.jsonl``
(one document per line, a text field), ``.parquet`` (one document per row, a text column), or a
``datasets`` dataset saved with ``save_to_disk`` (a folder holding ``dataset_info.json``).
Hidden files and folders, binary files and unknown extensions are skipped with a warning naming them.
Text that is not UTF-8 is an error naming the file and byte offset, unless ``skip_bad=True`` (then a warning).
Large files are never tokenized whole: ``Document.blocks()`` yields ~1 MiB pieces cut at whitespace.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s3attn.errors import S3Error

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
PARQUET_SUFFIXES = (".parquet",)
BLOCK_CHARS = 1 << 20
_READ_BYTES = 1 << 20

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    """One document. ``path`` is relative to the corpus root (``file.jsonl#12`` for row 12)."""

    path: str
    file: Path
    content_hash: str
    text: str | None = None  # held for jsonl/parquet rows; files are streamed from disk

    def blocks(self, block_chars: int = BLOCK_CHARS) -> Iterator[str]:
        """The text in pieces of about ``block_chars`` characters, each cut after whitespace when possible."""
        source = [self.text] if self.text is not None else _read_file_text(self.file, block_chars)
        carry = ""
        for piece in source:
            buf = carry + piece
            while len(buf) > block_chars:
                cut = _cut_point(buf, block_chars)
                yield buf[:cut]
                buf = buf[cut:]
            carry = buf
        if carry:
            yield carry

    def token_blocks(self, tokenizer) -> Iterator[list[int]]:
        """Token ids, one list per text block (a huge file is never tokenized whole)."""
        try:
            for block in self.blocks():
                yield tokenizer(block, add_special_tokens=False)["input_ids"]
        except OSError as err:  # the file vanished or became unreadable after the corpus was listed
            raise S3Error(
                f"{self.file}: cannot be read ({err.strerror or err}); fix it or move it out of the corpus, "
                "then rerun with --resume"
            ) from None

    def read_text(self) -> str:
        return "".join(self.blocks())


def _cut_point(buf: str, limit: int) -> int:
    """Last whitespace at or before ``limit`` (so a token is not split), else ``limit``."""
    window = buf[max(0, limit - 4096) : limit]
    for i in range(len(window) - 1, -1, -1):
        if window[i].isspace():
            return max(1, limit - len(window) + i + 1)
    return limit


def _read_file_text(file: Path, block_chars: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    with open(file, "rb") as fh:
        while chunk := fh.read(_READ_BYTES):
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


def _hash_and_check_utf8(file: Path) -> str:
    """sha256 of the bytes; raises UnicodeDecodeError (``start`` = byte offset in the file) if not UTF-8."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with open(file, "rb") as fh:
        while True:
            chunk = fh.read(_READ_BYTES)
            base = offset - len(decoder.getstate()[0])  # file offset of the decoder's input (pending + chunk)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                raise UnicodeDecodeError(
                    err.encoding, err.object, base + err.start, base + err.end, err.reason
                ) from None
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
    return digest.hexdigest()


def _looks_binary(file: Path) -> bool:
    with open(file, "rb") as fh:
        return b"\x00" in fh.read(8192)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Corpus:
    """A corpus folder (or file). Iterating yields ``Document``s in a stable (sorted path) order."""

    def __init__(
        self, root: str | Path, *, text_field: str = "text", skip_bad: bool = False, option: str = "corpus"
    ):
        self.root = Path(root)
        self.text_field = text_field
        self.skip_bad = skip_bad
        self.option = option
        if not self.root.exists():
            raise S3Error(
                f"{option} {self.root}: no such file or folder; give a folder of .txt/.md/.jsonl/.parquet"
            )

    def files(self) -> list[Path]:
        """Files that will be read, sorted; warns about the ones skipped."""
        if self.root.is_file():
            return [self._checked_root_file()]
        if _is_saved_dataset(self.root):
            return [self.root]
        return [path for path in sorted(self.root.rglob("*")) if self._wanted(path)]

    def _checked_root_file(self) -> Path:
        """The root when it is one file of an accepted kind; S3Error otherwise."""
        if self.root.suffix.lower() not in TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES:
            raise S3Error(f"{self.option} {self.root}: not a .txt/.md/.jsonl/.parquet file or a folder")
        if self.root.suffix.lower() not in PARQUET_SUFFIXES and _looks_binary(self.root):
            raise S3Error(f"{self.option} {self.root}: a binary file, not text")
        return self.root

    def _wanted(self, path: Path) -> bool:
        """Whether a path found under the root is read (a file, or a saved dataset's folder); warns about
        the skipped ones, except the files inside saved datasets."""
        rel = path.relative_to(self.root)
        if _is_hidden(rel):
            if not _is_hidden(rel.parent):  # warn once, for the outermost hidden file or folder
                logger.warning("skipping hidden %s %s", "folder" if path.is_dir() else "file", path)
            return False
        if path.is_dir():
            return _is_saved_dataset(path)
        if any(_is_saved_dataset(parent) for parent in path.parents if self.root in parent.parents):
            return False
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES:
            if path.name not in ("dataset_info.json", "state.json"):
                logger.warning("skipping %s: not .txt/.md/.jsonl/.parquet", path)
            return False
        if suffix != ".parquet" and _looks_binary(path):
            logger.warning("skipping binary file %s", path)
            return False
        return True

    def __iter__(self) -> Iterator[Document]:
        found = False
        for file in self.files():
            for doc in self._documents(file):
                found = True
                yield doc
        if not found:
            raise S3Error(
                f"{self.option} {self.root}: no documents found; put .txt, .md, .jsonl or .parquet files in it"
            )

    def _rel(self, file: Path) -> str:
        if self.root.is_file():
            return file.name
        return file.relative_to(self.root).as_posix() if file != self.root else file.name

    def _bad(self, msg: str) -> None:
        if self.skip_bad:
            logger.warning("skipping %s", msg)
        else:
            raise S3Error(f"{msg}; re-encode it as UTF-8 or pass --skip-bad-files to skip such files")

    def _documents(self, file: Path) -> Iterator[Document]:
        rel = self._rel(file)
        if file.is_dir():
            yield from self._dataset_docs(file, rel)
            return
        suffix = file.suffix.lower()
        try:
            if suffix in TEXT_SUFFIXES:
                try:
                    digest = _hash_and_check_utf8(file)
                except UnicodeDecodeError as err:
                    self._bad(f"{file}: not UTF-8 (invalid byte at offset {err.start})")
                    return
                if file.stat().st_size == 0:
                    logger.warning("skipping empty file %s", file)
                    return
                yield Document(rel, file, digest)
            elif suffix in JSONL_SUFFIXES:
                yield from self._jsonl_docs(file, rel)
            else:
                yield from self._parquet_docs(file, rel)
        except PermissionError:
            self._unreadable(file)
        except IsADirectoryError:
            return

    def _unreadable(self, file: Path) -> None:
        raise S3Error(
            f"{file}: cannot be read (permission denied); fix its permissions or move it out of the corpus"
        )

    def _jsonl_docs(self, file: Path, rel: str) -> Iterator[Document]:
        with open(file, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    self._bad(f"{file}:{lineno}: not UTF-8 (invalid byte at column {err.start})")
                    continue
                try:
                    text = json.loads(line)[self.text_field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise S3Error(
                        f"{file}:{lineno}: not a JSON object with a '{self.text_field}' field; "
                        f"fix the line or pass --text-field NAME"
                    ) from None
                if isinstance(text, str) and text:
                    yield Document(f"{rel}#{lineno}", file, text_hash(text), text)

    def _parquet_docs(self, file: Path, rel: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(file)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise S3Error(f"{file}: not a readable parquet file ({err}); remove or replace it") from None
        if self.text_field not in pf.schema_arrow.names:
            raise S3Error(f"{file}: no '{self.text_field}' column; pass --text-field NAME")
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=[self.text_field]):
            for text in batch.column(0).to_pylist():
                row += 1
                if isinstance(text, str) and text:
                    yield Document(f"{rel}#{row}", file, text_hash(text), text)

    def _dataset_docs(self, folder: Path, rel: str) -> Iterator[Document]:
        import datasets

        try:
            ds = datasets.load_from_disk(str(folder))
        except Exception as err:  # noqa: BLE001 - datasets raises several types for a damaged folder
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise S3Error(
                f"{folder}: not a loadable saved dataset ({first}); re-save it or remove it"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        if self.text_field not in ds.column_names:
            raise S3Error(f"{folder}: dataset has no '{self.text_field}' column; pass --text-field NAME")
        for row, text in enumerate(ds[self.text_field], start=1):
            if isinstance(text, str) and text:
                yield Document(f"{rel}#{row}", folder, text_hash(text), text)

"""Typed index metadata and its JSON: the manifest (:class:`Manifest`, one :class:`SegmentMeta` per live
segment), the root group's attributes (:class:`IndexAttrs`) and a segment group's (:class:`SegmentAttrs`).

Shared by the reading and the writing side. ``from_json`` checks names and types and raises ``ValueError``
naming the bad field; :func:`read_manifest` and the index reader turn that into a one-line ``S3Error`` naming
the file. The same classes read formats 1 and 2 (no field was removed or renamed since).

``Manifest.format_version`` is the newest format of the segments writers added: a writer of format 3 that
adds a segment to (or merges) an index of format 1 or 2 raises it to 3, so readers of those formats refuse
the index rather than misread its tiered lists. ``IndexAttrs.format_version`` stays the format the index was
created in. ``SegmentAttrs`` says how a segment orders its lists (``posting_order``, ``tier_divisors``).

``IndexAttrs.dtype`` is the model precision the index was built in. Indexes written before it was
recorded were all built in float32, so an absent ``dtype`` reads as float32, and a float32 index leaves the
key out (its attributes stay exactly those of before).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from s3attn.constants import INDEX_FORMAT_VERSION, INDEX_KIND, INDEX_MANIFEST
from s3attn.errors import S3Error, index_damaged
from s3attn.index_builder.schema import (
    CHECKSUM_ALGO,
    POSTING_ORDER_POSITION,
    POSTING_ORDER_TIERS,
    TIER_DIVISORS,
    DocRecord,
    doc_json,
)
from s3attn.storage import Location, index_location

# ---- JSON field checks -----------------------------------------------------------------------------------
_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "a list", dict: "an object"}
_REQUIRED = object()  # the default of a field that must be present


def _get(obj: Mapping[str, Any], key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``obj[key]`` checked to be a ``kind`` (a bool is no int); ``default`` when absent, if one is given."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a JSON object, not {type(obj).__name__}")
    if key not in obj:
        if default is _REQUIRED:
            raise ValueError(f"field {key!r} is missing")
        return default
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"field {key!r} must be {_KIND_NAMES.get(kind, kind.__name__)}, not {value!r}")
    return value


def _opt(obj: Mapping[str, Any], key: str, kind: type) -> Any:
    """An optional field: None when absent or null."""
    return None if obj.get(key) is None else _get(obj, key, kind)


# ---- manifest --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentMeta:
    """One live segment as the manifest lists it (in token order)."""

    name: str
    token_start: int  # global position of the segment's first token
    num_tokens: int
    doc_start: int  # number of document records in earlier segments
    num_docs: int
    num_postings: int  # num_tokens x k x (layers x kv heads)
    checksum: str  # crc32 over the segment's checksum table (see schema.segment_checksum)
    open_doc: bool = False  # ends inside a document that a later segment closes

    @property
    def token_end(self) -> int:
        return self.token_start + self.num_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token_start": int(self.token_start),
            "num_tokens": int(self.num_tokens),
            "doc_start": int(self.doc_start),
            "num_docs": int(self.num_docs),
            "num_postings": int(self.num_postings),
            "checksum": self.checksum,
            "open_doc": bool(self.open_doc),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SegmentMeta:
        ints = {
            k: _get(obj, k, int)
            for k in ("token_start", "num_tokens", "doc_start", "num_docs", "num_postings")
        }
        return cls(
            name=_get(obj, "name", str),
            checksum=_get(obj, "checksum", str),
            open_doc=_get(obj, "open_doc", bool, False),
            **ints,
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the only list of live segments; ``generation`` counts the swaps."""

    generation: int = 0
    segments: tuple[SegmentMeta, ...] = ()
    format_version: int = INDEX_FORMAT_VERSION  # newest format of a segment a writer added (readers need)
    kind: str = INDEX_KIND

    def swapped(self, segments: list[SegmentMeta] | tuple[SegmentMeta, ...]) -> Manifest:
        """The next generation, listing ``segments``. A segment it lists that this one does not was written
        in the current format, so the format becomes at least the current one."""
        added = {s.name for s in segments} - {s.name for s in self.segments}
        version = max(self.format_version, INDEX_FORMAT_VERSION) if added else self.format_version
        return replace(self, segments=tuple(segments), generation=self.generation + 1, format_version=version)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": int(self.format_version),
            "generation": int(self.generation),
            "segments": [s.to_json() for s in self.segments],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Manifest:
        kind = _get(obj, "kind", str)
        if kind != INDEX_KIND:
            raise ValueError(f"kind is {kind!r}, not {INDEX_KIND!r}")
        segments = tuple(SegmentMeta.from_json(s) for s in _get(obj, "segments", list))
        return cls(
            generation=_get(obj, "generation", int),
            segments=segments,
            format_version=_get(obj, "format_version", int, 0),
            kind=kind,
        )


def read_manifest(index_dir: Path | Location) -> Manifest:
    """``INDEX/manifest.json``, checked; S3Error naming the file when it is corrupt or too new."""
    path = index_location(index_dir) / INDEX_MANIFEST
    try:
        manifest = Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise index_damaged(
            index_dir,
            str(path),
            f"corrupt or not an s3attn manifest: {err}",
            "restore it or rebuild the index",
        ) from None
    if manifest.format_version > INDEX_FORMAT_VERSION:
        raise S3Error(f"{path}: index format {manifest.format_version} is newer than this s3attn; upgrade")
    return manifest


# ---- root group attributes -------------------------------------------------------------------------------
IDENTITY_FIELDS = ("model_id", "sae_release", "layers", "k")
"""Fields that must match to append to an existing index (the build checks ``dtype`` itself)."""
UNRECORDED_DTYPE = "float32"
"""The precision of an index whose attributes name none (every index before the field existed)."""


@dataclass(frozen=True)
class IndexAttrs:
    """Attributes of ``index.zarr``: what the index was built with. Keys not named here stay in ``extra``."""

    model_id: str
    sae_release: str
    layers: tuple[int, ...]
    num_kv_heads: int
    k: int
    num_latents: int  # F, features per SAE
    head_dim: int
    chunk: int | None = None  # prefill chunk, tokens
    overlap: int | None = None  # left context of a chunk, tokens
    sae_release_path: str | None = None
    model: str | None = None  # model name or folder the index was built with
    kind: str = INDEX_KIND
    format_version: int = INDEX_FORMAT_VERSION
    created: str | None = None  # ISO time the index was created
    dtype: str = UNRECORDED_DTYPE  # model precision of the build: bfloat16, float16 or float32
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> list[tuple[int, int]]:
        """Every (layer, kv head) the index holds postings for."""
        return [(int(layer), h) for layer in self.layers for h in range(self.num_kv_heads)]

    def identity_mismatch(self, other: IndexAttrs) -> str | None:
        """The first identity field in which ``other`` differs, or None."""
        mine, theirs = self.to_json(), other.to_json()
        return next((k for k in IDENTITY_FIELDS if mine[k] != theirs[k]), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(dict(self.extra)))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name == "dtype" and value == UNRECORDED_DTYPE):
                continue
            out[f.name] = [int(x) for x in value] if f.name == "layers" else value
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> IndexAttrs:
        if not isinstance(obj, Mapping):
            raise ValueError(f"index attrs must be a JSON object, not {type(obj).__name__}")
        required = ("model_id", "sae_release", "layers", "num_kv_heads", "k", "num_latents", "head_dim")
        missing = [k for k in required if k not in obj]
        if missing:
            raise ValueError(f"index attrs lack {missing}")
        layers = _get(obj, "layers", list)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise ValueError(f"field 'layers' must be a list of integers, not {layers!r}")
        names = {f.name for f in fields(cls)}
        return cls(
            model_id=_get(obj, "model_id", str),
            sae_release=_get(obj, "sae_release", str),
            layers=tuple(layers),
            **{k: _get(obj, k, int) for k in ("num_kv_heads", "k", "num_latents", "head_dim")},
            **{k: _opt(obj, k, int) for k in ("chunk", "overlap")},
            **{k: _opt(obj, k, str) for k in ("sae_release_path", "model", "created")},
            kind=_get(obj, "kind", str, INDEX_KIND),
            format_version=_get(obj, "format_version", int, INDEX_FORMAT_VERSION),
            dtype=_get(obj, "dtype", str, UNRECORDED_DTYPE),
            extra={k: v for k, v in obj.items() if k not in names},
        )


# ---- segment group attributes ----------------------------------------------------------------------------
DOCS_IN_ARRAYS_FORMAT = 4
"""The first format whose segments keep their documents table in arrays rather than in their attributes."""


@dataclass(frozen=True)
class SegmentAttrs:
    """Attributes of ``segments/<name>``: its token range, per-array checksums, how its lists are ordered and,
    up to format 3, its documents table. A segment of format 1 or 2 records no format (None) and keeps its
    lists in position order; one of format 3 records its format, ``posting_order`` "impact-tiers" and the
    ``tier_divisors``; one of format 4 keeps its documents in arrays (``schema.DOC_ARRAYS``, listed in the
    checksums), not here: ``docs`` is None."""

    token_start: int
    num_tokens: int
    docs: tuple[DocRecord, ...] | None  # token_start of each GLOBAL; None: in the segment's arrays
    checksums: Mapping[str, str]  # array path relative to the segment -> crc32 of its raw bytes
    checksum_algo: str = CHECKSUM_ALGO
    format_version: int | None = INDEX_FORMAT_VERSION  # None: written in format 1 or 2
    posting_order: str = POSTING_ORDER_TIERS
    tier_divisors: tuple[int, ...] = TIER_DIVISORS

    @property
    def tiers(self) -> tuple[int, ...]:
        """The divisors of the segment's tier cuts (``schema.TIER_DIVISORS``); (1,) = one tier, the list."""
        return tuple(self.tier_divisors) if self.posting_order == POSTING_ORDER_TIERS else (1,)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "token_start": int(self.token_start),
            "num_tokens": int(self.num_tokens),
            "checksums": dict(self.checksums),
            "checksum_algo": self.checksum_algo,
        }
        if self.docs is not None:
            out["docs"] = [doc_json(d) for d in self.docs]
        if self.format_version is not None:  # segments of formats 1 and 2 keep their attributes as they were
            out["format_version"] = int(self.format_version)
            out["posting_order"] = self.posting_order
            if self.posting_order == POSTING_ORDER_TIERS:
                out["tier_divisors"] = [int(d) for d in self.tier_divisors]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SegmentAttrs:
        version = _opt(obj, "format_version", int)
        in_arrays = version is not None and version >= DOCS_IN_ARRAYS_FORMAT and "docs" not in obj
        docs = None if in_arrays else tuple(_doc(d) for d in _get(obj, "docs", list))
        checksums = _get(obj, "checksums", dict)
        if not all(isinstance(v, str) for v in checksums.values()):
            raise ValueError("field 'checksums' must map array paths to strings")
        order = _get(obj, "posting_order", str, POSTING_ORDER_POSITION)
        if order not in (POSTING_ORDER_POSITION, POSTING_ORDER_TIERS):
            raise ValueError(f"posting_order {order!r} is unknown to this s3attn; upgrade")
        divisors = tuple(_get(obj, "tier_divisors", list, [1]))
        if not _valid_divisors(divisors):
            raise ValueError(
                f"field 'tier_divisors' must be decreasing positive integers ending in 1: {divisors}"
            )
        return cls(
            token_start=_get(obj, "token_start", int),
            num_tokens=_get(obj, "num_tokens", int),
            docs=docs,
            checksums=checksums,
            checksum_algo=_get(obj, "checksum_algo", str, CHECKSUM_ALGO),
            format_version=version,
            posting_order=order,
            tier_divisors=divisors,
        )


def _doc(d: Mapping[str, Any]) -> DocRecord:
    return DocRecord(
        _get(d, "doc_id", int),
        _get(d, "path", str),
        _get(d, "content_hash", str),
        _get(d, "token_start", int),
        _get(d, "num_tokens", int),
    )


def _valid_divisors(divisors: tuple[Any, ...]) -> bool:
    ints = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in divisors)
    return (
        ints and bool(divisors) and divisors[-1] == 1 and all(a > b for a, b in zip(divisors, divisors[1:]))
    )

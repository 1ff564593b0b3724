"""s3attn.index_builder: the posting-list index: its format, the reading side and the writing side.

Format (shared): ``schema`` (names, dtypes, codecs and chunk layouts, paths, checksums, quantization),
``meta`` (typed metadata: ``Manifest``, ``SegmentMeta``, ``IndexAttrs``, ``SegmentAttrs``).
Reading: ``reader`` (``IndexReader.open(path)``, ``doc_ranges``), ``segment_reader``, ``chunks``, ``bm25``
(``BM25Index.load``). Reading modules import no writing module.
Writing: ``indexer`` (``IndexWriter.create(path, attrs)`` / ``IndexWriter.open(path)``: add, absorb, merge,
garbage collection), ``segment_writer``, ``prefill`` + ``build`` (streaming prefill -> segments),
``pipeline`` (``build_index``), ``bm25_build`` (``BM25Writer``, ``make_passages``), ``store`` (``IndexStore``,
the previous entry: the writer with ``open(path)`` read-only by default).
"""

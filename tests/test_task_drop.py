"""DROP multi-document QA: the packaged subset, fitted length, evidence, contexts shared by 8 questions."""

from __future__ import annotations

import pytest

from s3attn.errors import S3Error
from s3attn.evaluation import task_drop
from s3attn.evaluation.task_drop import drop_records
from s3attn.evaluation.tasks import GOLD_PER_CONTEXT, drop_qa


def words(text: str) -> int:
    return len(text.split())


def test_packaged_subset():
    records = drop_records()
    assert 500 <= len(records) <= 700
    assert len({r["passage"] for r in records}) == len(records)
    assert len({r["title"] for r in records}) == len(records)
    for r in records:
        assert all(a.lower() in r["passage"].lower() for a in r["answers"])


@pytest.mark.parametrize(("length", "seed"), [(4000, 0), (12000, 1), (30000, 2)])
def test_length_evidence_and_shared_context(length, seed):
    samples = [drop_qa(words, length, seed, n) for n in range(GOLD_PER_CONTEXT)]
    context = samples[0].context
    assert all(s.context == context for s in samples)
    assert abs(words(context) - length) <= 0.02 * length
    by_id = {r["id"]: r for r in drop_records()}
    assert len({s.meta["id"] for s in samples}) == GOLD_PER_CONTEXT
    for s in samples:
        record = by_id[s.meta["id"]]
        a, b = s.meta["gold_passage"]
        assert context[a:b] == f"{record['title']}\n{record['passage'].strip()}"
        assert context[:a].endswith(f"Passage {s.meta['passage_number']}:\n")
        assert context[b:].startswith("\n\n") or b == len(context)
        assert all(ans.lower() in context[a:b].lower() for ans in s.answers)
        # the evidence: the gold passage's sentence holding the earliest answer
        ((ea, eb),) = s.meta["evidence"]
        assert a < ea < eb <= b and context[ea:eb] == context[ea:eb].strip()
        sentence = context[ea:eb].lower()
        assert any(ans.lower() in sentence for ans in s.answers)
        body = a + len(record["title"]) + 1  # the passage text after its title line
        earliest = min(i for i in (context.lower().find(x.lower(), body) for x in s.answers) if i >= 0)
        assert ea <= earliest < eb
        assert s.question == record["question"] and s.metric == "qa_f1" and s.task == "drop_qa"
        assert s.meta["source"] == "drop" and s.meta["instruction"] and s.meta["answer_prefix"] == "Answer:"
        assert context.count(record["title"] + "\n") == 1


def test_contexts_vary_with_seed_and_group():
    first = drop_qa(words, 4000, 0, 0).context
    assert drop_qa(words, 4000, 1, 0).context != first
    assert drop_qa(words, 4000, 0, GOLD_PER_CONTEXT).context != first
    assert drop_qa(words, 4000, 0, 3) == drop_qa(words, 4000, 0, 3)


def test_too_short_and_bad_number():
    with pytest.raises(S3Error, match="too small"):
        drop_qa(words, 300, 0, 0)
    with pytest.raises(S3Error):
        drop_qa(words, 4000, 0, -2)


def test_missing_or_corrupt_data_is_one_line_error(monkeypatch, tmp_path):
    class Fake:
        def __init__(self, path):
            self.path = path

        def joinpath(self, *parts):
            return self.path.joinpath(*parts)

    (tmp_path / "data").mkdir()
    monkeypatch.setattr(task_drop.resources, "files", lambda _: Fake(tmp_path))
    drop_records.cache_clear()
    try:
        with pytest.raises(S3Error, match="drop_passages.json.gz.*make_drop_subset") as e:
            drop_records()
        assert "\n" not in str(e.value)
        (tmp_path / "data" / "drop_passages.json.gz").write_bytes(b"not gzip")
        with pytest.raises(S3Error, match="make_drop_subset"):
            drop_records()
    finally:
        drop_records.cache_clear()

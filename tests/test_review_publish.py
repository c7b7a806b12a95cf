"""Answers back into the product, without Airflow: export (atomic, idempotent), the label
store harvesting them, and a re-publication in which a person's answer wins."""

from __future__ import annotations

import pyarrow as pa
import pytest
from review_support import DAY, ESCAPE_ID, VERIFIED_ID, filled_store, tag_day, tagged_catalogue

from model_registry.files import sha256_file
from tagging.catalogue.answers import UNUSABLE, apply_answers, read_answers
from tagging.catalogue.layout import answers_path
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.validate import validate_partition
from tagging.labels import CATEGORY_SLUGS
from tagging.loop.labelstore import LabelStore
from tagging.pipeline.review import days_with_new_answers
from tagging.review.export import export_answers


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, fmnist, champion_registry):
    return tagged_catalogue(tmp_path_factory.mktemp("review-publish"), fmnist,
                            champion_registry)


def test_apply_answers_rules():
    top3 = [{"category": "coat", "confidence": 0.5}, {"category": "shirt", "confidence": 0.3},
            {"category": "bag", "confidence": 0.1}]
    table = pa.table({
        "product_id": ["a", "b", "c", "d", "e"],
        "verified_category": [None, None, "sneaker", None, "dress"],
        "category": ["coat", "coat", "coat", None, "coat"],
        "category_id": pa.array([4, 4, 4, None, 4], pa.int8()),
        "category_confidence": pa.array([0.5, 0.5, 0.5, None, 0.5], pa.float32()),
        "category_top3": [top3, top3, top3, None, top3],
        "needs_review": [True, True, False, True, False],
        "category_source": ["model", "model", "model", None, "model"],
    })
    answers = pa.table({"product_id": ["a", "b", "e"], "answer": ["bag", UNUSABLE, UNUSABLE]})
    out = apply_answers(table, answers).to_pydict()
    assert out["category"] == ["bag", "coat", "sneaker", None, "dress"]
    assert out["category_id"] == [8, 4, 7, None, 3]
    assert out["category_confidence"] == [1.0, 0.5, 1.0, None, 1.0]
    assert out["needs_review"] == [False, True, False, True, False]
    assert out["category_source"] == ["verified", "model", "verified", None, "verified"]
    assert out["category_top3"] == table["category_top3"].to_pylist()  # the model's guess
    assert apply_answers(table, answers).schema == table.schema


def test_answers_are_exported_harvested_and_win_in_the_next_publication(catalogue, tmp_path,
                                                                        champion_registry):
    store = filled_store(tmp_path / "review.db", catalogue, audit_share=0.5)
    items = store.claim("alice", 100, lease_s=60)
    flagged = [i for i in items if i.reason == "needs_review" and i.top3]
    audited = [i for i in items if i.reason == "audit"]
    corrected, unusable, retracted = flagged[:3]
    wrong = next(s for s in CATEGORY_SLUGS if s != corrected.top3[0]["category"])

    def answer(who, item, value):
        store.answer(who, item.partition, item.product_id, value,
                     model_version=item.model_version, top3=item.top3)

    answer("alice", corrected, wrong)
    answer("alice", unusable, UNUSABLE)
    answer("bob", audited[0], audited[0].top3[1]["category"])
    answer("alice", retracted, "bag")
    store.undo("alice", lease_s=60)
    answer("bob", corrected, wrong)  # a second opinion that agrees

    [day] = export_answers(store, catalogue)
    assert day["written"] and day["answers"] == 3 and day["unusable"] == 1
    path = answers_path(catalogue, DAY).path
    mtime = path.stat().st_mtime_ns
    assert export_answers(store, catalogue)[0]["written"] is False  # idempotent
    assert path.stat().st_mtime_ns == mtime
    exported = {r["product_id"]: r for r in read_answers(catalogue, DAY).to_pylist()}
    assert set(exported) == {corrected.product_id, unusable.product_id, audited[0].product_id}
    assert exported[corrected.product_id]["reviewers"] == 2
    assert not exported[corrected.product_id]["disagreement"]
    assert exported[audited[0].product_id]["reason"] == "audit"
    assert days_with_new_answers(catalogue) == [DAY]

    # the label store: answers are verified labels; the unusable photo is counted, not kept
    labels = LabelStore.of_catalogue(catalogue)
    report = labels.harvest_partition(catalogue, DAY, workers=1)
    stored = {r["product_id"]: r["label"] for r in labels.rows().to_pylist()}
    assert stored[corrected.product_id] == CATEGORY_SLUGS.index(wrong)
    assert stored[VERIFIED_ID] is not None and unusable.product_id not in stored
    assert report.rejected == {"unusable photo (review answer)": 1}
    assert not labels.harvest_partition(catalogue, DAY, workers=1).harvested  # unchanged

    # publication: a person's answer wins; the model's guess stays in category_top3
    before = {r["product_id"]: r for r in read_published(catalogue, DAY).to_pylist()}
    tag_day(catalogue, DAY, champion_registry)
    rows = {r["product_id"]: r for r in read_published(catalogue, DAY).to_pylist()}
    fixed = rows[corrected.product_id]
    assert (fixed["category"], fixed["category_source"], fixed["needs_review"],
            fixed["category_confidence"]) == (wrong, "verified", False, 1.0)
    assert fixed["category_top3"] == before[corrected.product_id]["category_top3"]
    assert rows[unusable.product_id]["category_source"] == "model"
    assert rows[unusable.product_id]["needs_review"] is True
    assert rows[VERIFIED_ID]["category_source"] == "verified"
    assert rows[ESCAPE_ID]["category_source"] is None  # untagged
    assert rows[retracted.product_id]["category_source"] == "model"
    manifest = read_manifest(catalogue, DAY)
    assert manifest["reviews"] == {"sha256": sha256_file(path), "answers": 3, "unusable": 1}
    assert days_with_new_answers(catalogue) == []
    # live quality: the model's own tags (not the overlay), on the input's verified rows
    # and the audit answers (the audited row was answered with the model's second guess)
    assert manifest["quality"]["verified"] == 2
    assert manifest["quality"]["accuracy"] <= 0.5
    validate_partition(catalogue, DAY, max_error_rate=1.0, max_review_rate=1.0)



def test_review_steps_do_nothing_without_a_store_for_a_remote_catalogue(monkeypatch):
    """A catalogue on S3 and no TAGGING_REVIEW_DB: the DAG's review steps are no-ops (the
    run goes on), the command line says what to set."""
    from tagging.errors import ConfigError
    from tagging.pipeline.review import export_review_answers, fill_review_queue
    from tagging.settings import REVIEW_DB_ENV, ReviewSettings

    monkeypatch.setenv("TAGGING_CATALOGUE", "s3://shop/catalogue")
    monkeypatch.delenv(REVIEW_DB_ENV, raising=False)
    assert export_review_answers() == {"store": None, "days": []}
    assert fill_review_queue(DAY)["added"] == 0
    with pytest.raises(ConfigError, match=REVIEW_DB_ENV):
        ReviewSettings.from_env().db_for("s3://shop/catalogue")

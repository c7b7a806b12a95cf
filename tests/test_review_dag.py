"""End to end: answers given through the review app -> one run of the real DAG (Airflow on
SQLite, `airflow dags test`) -> the label store has them -> the day is published again
with the answers in `category` (`category_source = verified`)."""

from __future__ import annotations

import json

import pytest
from conftest import DAG_CONF, FMNIST_DIR, LOW_GATE
from review_support import DAY, app_env, request, running, tag_day, write_partition

from model_registry import GatePolicy, Registry
from tagging.catalogue.answers import UNUSABLE
from tagging.catalogue.layout import answers_path
from tagging.catalogue.published import read_manifest, read_published
from tagging.labels import CATEGORY_SLUGS
from tagging.loop.labelstore import LabelStore
from tagging.ops.local import LocalAirflow
from tagging.pipeline.learn import train_config
from tagging.review.queue import fill
from tagging.review.store import ReviewStore
from tagging.settings import DATA_ENV, ReviewSettings


@pytest.mark.slow
def test_answers_reach_the_label_store_and_search_through_the_dag(tmp_path, fmnist):
    from tagging.pipeline.learn import train_and_promote

    local = LocalAirflow.in_workdir(tmp_path, extra_env={
        DATA_ENV: FMNIST_DIR, "TAGGING_SHARD_RETRIES": "1", "TAGGING_SHARD_RETRY_DELAY": "1"})
    # a champion with the DAG's own recipe (so the run reuses it), and the day published
    config = train_config(DAG_CONF["train"], catalogue_root=local.catalogue,
                          target_precision=0.95)
    train_and_promote(config, registry_root=local.registry, data_dir=FMNIST_DIR,
                      created_by="tests", policy=GatePolicy(**LOW_GATE))
    write_partition(local.catalogue, DAY, fmnist, rows=40)
    tag_day(local.catalogue, DAY, local.registry)
    db = ReviewSettings().db_for(local.catalogue)  # the default: under the catalogue
    store = ReviewStore(db)
    fill(store, local.catalogue, settings=ReviewSettings())

    with running(tmp_path, app_env(local.catalogue, tmp_path / "unused.db",
                                   TAGGING_REVIEW_DB=db)) as app:
        items = json.loads(request(app, "GET", "/api/queue?limit=4", user="mia")[2])["items"]
        items = [i for i in items if i["top3"]][:3]
        corrected, confirmed, unusable = items
        wrong = next(s for s in CATEGORY_SLUGS if s != corrected["top3"][0]["category"])
        given = {corrected["product_id"]: wrong,
                 confirmed["product_id"]: confirmed["top3"][0]["category"],
                 unusable["product_id"]: UNUSABLE}
        for product_id, answer in given.items():
            status, _, _ = request(app, "POST", "/api/verifications", user="mia", body={
                "partition": DAY, "product_id": product_id, "category": answer})
            assert status == 201
    before = read_manifest(local.catalogue, DAY)

    local.setup()
    assert local.dag_test(DAY, {**DAG_CONF, "min_new_labels": 1000}), \
        local.dag_test_log(DAY).read_text()[-3000:]

    run = next(r["run_id"] for r in local.runs() if r["day"] == DAY)
    states = {t["task_id"]: t["state"] for t in local.task_instances(run)}
    assert states["export_answers"] == states["republish_answered"] == "success"
    assert states["fill_review_queue"] == "success"
    assert Registry(local.registry).version_ids() == ["v0001"]  # reused, not retrained
    assert answers_path(local.catalogue, DAY).path.exists()

    # the label store learnt the answers; the unusable photo is counted, not kept
    labels = LabelStore.of_catalogue(local.catalogue)
    stored = {r["product_id"]: r["label"] for r in labels.rows().to_pylist()}
    assert stored[corrected["product_id"]] == CATEGORY_SLUGS.index(wrong)
    assert stored[confirmed["product_id"]] == CATEGORY_SLUGS.index(given[
        confirmed["product_id"]])
    assert unusable["product_id"] not in stored
    assert labels.status()["rejected"].get("unusable photo (review answer)") == 1

    # search reads the person's answer, published again through the re-tag path
    after = read_manifest(local.catalogue, DAY)
    assert after["published_at"] != before["published_at"]
    assert after["reviews"]["answers"] == 3 and after["model_version"] == "v0001"
    rows = {r["product_id"]: r for r in read_published(local.catalogue, DAY).to_pylist()}
    for product_id, answer in given.items():
        row = rows[product_id]
        if answer == UNUSABLE:
            assert (row["category_source"], row["needs_review"]) == ("model", True)
        else:
            assert (row["category"], row["category_source"], row["needs_review"]) == (
                answer, "verified", False)
    assert rows[corrected["product_id"]]["category_top3"][0]["category"] != wrong

"""The learning loop on the real DAG (Airflow on SQLite, `airflow dags test`), three days.

Real photos with verified labels spread over the days; tiny trainings. Each day harvests,
retrains only with enough new labels (min_new_labels is set per run to force both cases),
gates on the current holdout, re-tags after a promotion and records live quality, which
goes out as metrics through Airflow's StatsD (to a listener on 127.0.0.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DAG_CONF, FMNIST_DIR
from helpers import read_input, snapshot
from oncall_support import Sinks, alert_env, closed_port, sinks

from model_registry import Registry
from tagging.catalogue.publications import publication_history
from tagging.catalogue.published import read_manifest
from tagging.labels import is_holdout
from tagging.loop.labelstore import LabelStore
from tagging.ops.demo import real_photo_days
from tagging.ops.local import LocalAirflow
from tagging.settings import DATA_ENV

DAYS = ["2026-05-01", "2026-05-02", "2026-05-03"]
TRAIN = {**DAG_CONF["train"], "real_photo_repeats": 5}
CONF = {**DAG_CONF, "train": TRAIN, "retag_days": 7, "harvest_days": 30}


@pytest.fixture(scope="module")
def oncall() -> Sinks:
    with sinks() as received:
        yield received


@pytest.fixture(scope="module")
def loop(tmp_path_factory, photo_set, oncall) -> LocalAirflow:
    workdir = tmp_path_factory.mktemp("loop")
    airflow = LocalAirflow.in_workdir(workdir, extra_env={
        DATA_ENV: FMNIST_DIR, "TAGGING_SHARD_RETRIES": "1",
        "TAGGING_SHARD_RETRY_DELAY": "1",
        **alert_env(closed_port(), closed_port(), oncall.statsd_port)})
    real_photo_days(photo_set, airflow.catalogue, DAYS, reveal=0.9, seed=3)
    airflow.setup()
    return airflow


def verified_rows(catalogue: Path, day: str) -> int:
    table = read_input(catalogue, day)
    return len(table["verified_category"].drop_null())


def held_out_verified(catalogue: Path, day: str) -> int:
    table = read_input(catalogue, day)
    ids = [p for p, v in zip(table["product_id"].to_pylist(),
                             table["verified_category"].to_pylist(), strict=True) if v]
    return int(is_holdout(ids).sum())


@pytest.mark.slow
def test_three_days_of_the_loop(loop, oncall):
    registry = Registry(loop.registry)
    store = LabelStore.of_catalogue(loop.catalogue)

    # day 1: labels harvested before the first training; the first version is promoted
    assert loop.dag_test(DAYS[0], {**CONF, "min_new_labels": 1})
    assert registry.champion() == "v0001"
    meta = registry.get("v0001").metadata
    first = store.status()
    assert meta["metrics"]["labels"]["train"] == first["train"] > 0
    assert meta["hyperparameters"]["label_store"] == str(store.root)
    quality = read_manifest(loop.catalogue, DAYS[0])["quality"]
    assert 0 < quality["verified_all"] <= verified_rows(loop.catalogue, DAYS[0])
    # graded only on what v0001 did not train on: the day's held-out products
    assert quality["graded_on"] == "products the version did not train on"
    assert quality["verified"] <= held_out_verified(loop.catalogue, DAYS[0])
    assert (quality["accuracy"] is None) == (quality["verified"] == 0)
    assert sum(quality["predicted"].values()) > 0
    # the day's live quality, as the people on call's dashboards get it
    assert quality["accuracy"] is not None  # some held-out products were verified
    assert f"airflow.tagging.live_verified:{quality['verified']}|g" in oncall.statsd
    assert f"airflow.tagging.live_accuracy:{quality['accuracy']}|g" in oncall.statsd

    # day 2: new labels, but fewer than min_new_labels: the champion is reused
    assert loop.dag_test(DAYS[1], {**CONF, "min_new_labels": 1000})
    assert registry.version_ids() == ["v0001"]
    assert store.status()["train"] > first["train"]
    assert read_manifest(loop.catalogue, DAYS[1])["model_version"] == "v0001"

    # day 3: enough new labels: a candidate, gated on the current holdout with the champion
    # re-scored; promoted (then the earlier days are re-tagged) or refused, with reasons
    assert loop.dag_test(DAYS[2], {**CONF, "min_new_labels": 1})
    assert registry.version_ids() == ["v0001", "v0002"]
    [decision] = [e for e in registry.events() if e["event"] in ("promoted", "refused")
                  and e["version"] == "v0002"]
    assert any("holdout" in r for r in decision["reasons"]), decision
    champion = registry.champion()
    assert champion == ("v0002" if decision["event"] == "promoted" else "v0001")
    for day in DAYS:  # re-tagged after a promotion: every day by the champion
        assert read_manifest(loop.catalogue, day)["model_version"] == champion
        assert "quality" in read_manifest(loop.catalogue, day)
    # what search saw: every publication of every day, the first ones by v0001
    history = publication_history(loop.catalogue)
    assert [h["partition"] for h in history if h["publication"] == 1] == DAYS
    assert history[0]["model_version"] == "v0001"
    republished = len(history) - len(DAYS)
    assert republished == (len(DAYS) - 1 if champion == "v0002" else 0)

    # re-running a day changes nothing: the store, the versions, the published partitions
    before = {p: snapshot(p) for p in (loop.catalogue, loop.registry / "versions")}
    events = len(registry.events())
    assert loop.dag_test(DAYS[2], {**CONF, "min_new_labels": 1})
    assert {p: snapshot(p) for p in before} == before
    assert registry.champion() == champion
    # a refused candidate trained on the same data is gated again, not retrained
    again = [(e["event"], e["version"]) for e in registry.events()[events:]]
    assert again == ([] if champion == "v0002" else [("refused", "v0002")])

"""The catalogue_tagging DAG, parsed and run by a real Airflow (SQLite, `airflow dags test`).

Real short training, a real generated catalogue, a real registry; the failing shard
fails for real (a late input file whose data pages are corrupt). The runs send their alerts
and Airflow's StatsD metrics to receivers on 127.0.0.1 (tests/oncall_support.py), or to
ports nobody listens on: a receiver that is down changes no run's outcome.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import DAG_CONF, FMNIST_DIR
from helpers import read_input
from oncall_support import ONCALL, Sinks, alert_env, closed_port, sinks

from model_registry import Registry
from tagging import settings
from tagging.catalogue.layout import input_dir, label_store_dir, published_dir
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.quality import check_live_quality
from tagging.catalogue.table import history
from tagging.loop.quality import expected_of
from tagging.ops import metrics
from tagging.ops.airflow import DAGS_DIR
from tagging.ops.demo import run_demo
from tagging.ops.local import LocalAirflow
from tagging.settings import LoopPolicy, TaggingLimits

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
FAST_RETRIES = {"TAGGING_SHARD_RETRIES": "1", "TAGGING_SHARD_RETRY_DELAY": "1"}
# In the runs' environment: no message may ever carry it (nor the webhook URL's token)
AWS_SECRET = "test-secret-d41d8cd98f00b204"


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    """The DAG as Airflow's DagBag parses it in a fresh interpreter, summarised."""
    script = textwrap.dedent(f"""
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS_DIR)!r})
        dag = bag.dags["catalogue_tagging"]
        tasks = {{t.task_id: t for t in dag.tasks}}
        print(json.dumps({{
            "errors": bag.import_errors,
            "parse_seconds": max(s.duration.total_seconds() for s in bag.dagbag_stats),
            "heavy": [m for m in ("tensorflow", "keras", "pandas", "pyarrow", "numpy",
                                  "tagging.model.train", "tagging.catalogue.tagger")
                      if m in sys.modules],
            "tasks": sorted(tasks),
            "mapped": [t for t, op in tasks.items() if getattr(op, "is_mapped", False)],
            "shard_retries": tasks["tag_shard"].partial_kwargs["retries"],
            "shard_backoff": tasks["tag_shard"].partial_kwargs["retry_exponential_backoff"],
            "training_pool": tasks["retrain"].pool,
            "max_active_runs": dag.max_active_runs,
            "params": sorted(dag.params),
            "param_defaults": dag.params.dump(),
            "outlets": {{t: [a.uri for a in op.outlets] for t, op in tasks.items()
                         if op.outlets}},
            "inlets": [a.uri for a in tasks["tag_shard"].partial_kwargs["inlets"]],
            "queues": {{t: op.partial_kwargs["queue"] if t == "tag_shard" else op.queue
                        for t, op in tasks.items()}},
            "schedule": dag.timetable.expression,
        }}))
    """)
    env = LocalAirflow.in_workdir(tmp_path_factory.mktemp("parse")).env()
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dag_file_parses_fast_without_heavy_imports(parsed):
    """Parsed by Airflow's DagBag in a fresh interpreter: no errors, no heavy modules."""
    info = parsed
    assert info["errors"] == {}
    assert info["heavy"] == []
    print(f"DagBag parse: {info['parse_seconds']:.2f} s")  # measured, not asserted
    assert info["tasks"] == ["announce", "export_answers", "fill_review_queue",
                             "gate_and_promote", "harvest_labels", "plan_shards", "publish",
                             "republish_answered", "resolve_run", "retag", "retrain",
                             "tag_shard", "validate"]
    assert info["mapped"] == ["tag_shard"]
    assert info["shard_retries"] >= 1 and info["shard_backoff"] > 1
    assert info["training_pool"] == "tagging_training"
    assert info["max_active_runs"] >= 1
    assert {"partition", "force_retrain", "model_version", "review_threshold", "train",
            "gate", "harvest_days", "min_new_labels", "target_precision", "retag_days",
            "live_accuracy_margin", "review_rate_margin"} <= set(info["params"])
    # Fixed logical URIs: the same wherever the catalogue lives (env-independent identity).
    assert info["outlets"] == {"announce": ["catalogue://tagged/"]}
    assert info["inlets"] == ["catalogue://incoming/", "model-registry://champion/"]
    assert info["queues"] == {"export_answers": "default", "republish_answered": "tagging",
                              "fill_review_queue": "default",
                              "harvest_labels": "training", "retrain": "training",
                              "gate_and_promote": "training", "retag": "tagging",
                              "tag_shard": "tagging", "resolve_run": "default",
                              "plan_shards": "default", "publish": "default",
                              "validate": "default", "announce": "default"}
    assert info["schedule"] == "0 0 * * *"


def test_dag_params_default_to_the_settings(parsed):
    """One owner per default: the DAG's params start from LoopPolicy and TaggingLimits."""
    loop, limits = dataclasses.asdict(LoopPolicy()), dataclasses.asdict(TaggingLimits())
    defaults = parsed["param_defaults"]
    shared = {name: value for name, value in {**loop, **limits}.items() if name in defaults}
    assert set(shared) == {"harvest_days", "min_new_labels", "target_precision", "retag_days",
                           "live_accuracy_margin", "review_rate_margin", "rows_per_shard",
                           "max_error_rate", "max_review_rate"}
    assert {name: defaults[name] for name in shared} == shared


@pytest.fixture(scope="module")
def oncall() -> Sinks:
    """The webhook, SMTP and StatsD receivers every run of this module reports to."""
    with sinks() as received:
        yield received
    text = "\n".join([*(json.dumps(p) for p in received.posts),
                      *(m.as_string() for m in received.emails)])
    assert AWS_SECRET not in text and "s3cr3t" not in text  # no secret, ever


@pytest.fixture(scope="module")
def local(tmp_path_factory, oncall) -> LocalAirflow:
    """An Airflow home with an empty registry and a small demo catalogue for DAYS."""
    from tagging.catalogue.demo import generate_demo_catalogue

    workdir = tmp_path_factory.mktemp("dag")
    airflow = LocalAirflow.in_workdir(workdir, extra_env={
        settings.DATA_ENV: FMNIST_DIR, **FAST_RETRIES, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        **alert_env(oncall.webhook_port, oncall.smtp_port, oncall.statsd_port)})
    generate_demo_catalogue(airflow.catalogue, DAYS, rows_per_day=50, data_dir=FMNIST_DIR,
                            workers=2)
    airflow.setup()
    return airflow


def published_state(catalogue: Path, day: str) -> dict:
    """Everything a reader of the published day sees: its commits, manifest and rows."""
    return {"commits": [c["version"] for c in history(catalogue, day)],
            "manifest": read_manifest(catalogue, day),
            "rows": read_published(catalogue, day).to_pylist()}


def run_of(local: LocalAirflow, day: str) -> str:
    return next(r["run_id"] for r in local.runs() if r["day"] == day)


@pytest.fixture(scope="module")
def first_run(local) -> LocalAirflow:
    """The first DAG run: trains, promotes v0001 and publishes DAYS[0]."""
    assert local.dag_test(DAYS[0], DAG_CONF)
    return local


@pytest.mark.slow
def test_dag_run_trains_promotes_publishes_then_reuses_the_champion(first_run, oncall):
    local = first_run

    registry = Registry(local.registry)
    assert registry.version_ids() == ["v0001"]
    assert registry.champion() == "v0001"
    promoted = [e for e in registry.events() if e["event"] == "promoted"]
    assert promoted and promoted[0]["actor"].startswith("airflow:catalogue_tagging/")

    manifest = read_manifest(local.catalogue, DAYS[0])
    assert manifest["model_version"] == "v0001"
    table = read_published(local.catalogue, DAYS[0])
    source = read_input(local.catalogue, DAYS[0])
    assert table.num_rows == source.num_rows == manifest["counts"]["rows"]
    assert table["product_id"].to_pylist() == source["product_id"].to_pylist()
    assert set(table["model_version"].to_pylist()) == {"v0001"}
    assert manifest["counts"]["tagged"] == pc.sum(pc.is_null(table["tag_error"])).as_py() > 0

    tis = {t["task_id"]: t for t in local.task_instances(run_of(local, DAYS[0]))}
    assert {t["state"] for t in tis.values()} == {"success"}
    events = local.query("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                         "WHERE a.name = 'catalogue_tagged'")
    assert json.loads(events[-1][0])["partition"] == DAYS[0]

    # Same data, same config: the second day is tagged by the same champion, no new training.
    assert local.dag_test(DAYS[1], DAG_CONF)
    assert Registry(local.registry).version_ids() == ["v0001"]
    assert read_manifest(local.catalogue, DAYS[1])["model_version"] == "v0001"

    # Re-running a published day changes nothing, and announces nothing new.
    before = published_state(local.catalogue, DAYS[0])
    events_before = local.query("SELECT count(*) FROM asset_event")
    assert local.dag_test(DAYS[0], DAG_CONF)
    assert published_state(local.catalogue, DAYS[0]) == before
    assert local.query("SELECT count(*) FROM asset_event") == events_before

    # On call: every figure went out through Airflow's StatsD (prefix `airflow.`; live
    # accuracy needs verified rows: tests/test_loop_dag.py; refusals, failed alerts below) ...
    seen = oncall.metric_names()
    expected = {f"airflow.{name}" for name in metrics.NAMES} - {
        f"airflow.{name}" for name in (metrics.LIVE_ACCURACY, metrics.GATE_REFUSALS,
                                       metrics.ALERTS_FAILED)}
    assert expected <= seen, expected - seen
    assert "airflow.tagging.promotions:1|c" in oncall.statsd
    assert "airflow.tagging.rows:55|c" in oncall.statsd
    assert "airflow.tagging.live_verified:0|g" in oncall.statsd  # the demo days: none
    # ... and, with TAGGING_ALERT_BACKLOG_DAYS=0, each run's queue was a backlog: alerted
    backlog = oncall.alerts("review_backlog")
    assert {a["day"] for a in backlog} == {DAYS[0], DAYS[1]}
    assert all(a["severity"] == "warning" and "/tasks/fill_review_queue" in a["log_url"]
               for a in backlog)
    assert oncall.emails_about("review backlog") and oncall.emails[0]["To"] == ONCALL


def add_corrupt_input(catalogue: Path, day: str) -> Path:
    """A late second input file: readable footer (so it is planned), corrupt data pages."""
    folder = input_dir(catalogue, day).path
    table = pq.read_table(folder / "part-0.parquet")
    late_ids = pc.binary_join_element_wise(table["product_id"], pa.scalar("-late"), "")
    path = folder / "part-1.parquet"
    pq.write_table(table.set_column(0, "product_id", late_ids), path, compression="none")
    footer_start = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[-8:-4], "little")
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(random.Random(0).randbytes(min(4096, footer_start - 4)))
    pq.ParquetFile(path)  # still plans: only the pages are broken
    return path


@pytest.mark.slow
def test_refused_candidate_keeps_the_champion_and_the_run_goes_on(first_run, oncall):
    local = first_run
    before = published_state(local.catalogue, DAYS[0])
    strict = {**DAG_CONF, "force_retrain": True, "gate": {"min_accuracy": 0.999}}
    assert local.dag_test(DAYS[0], strict)

    registry = Registry(local.registry)
    refused = registry.version_ids()[-1]
    assert refused != "v0001" and registry.champion() == "v0001"
    assert registry.events()[-1]["event"] == "refused"
    assert registry.events()[-1]["version"] == refused
    assert published_state(local.catalogue, DAYS[0]) == before  # still v0001's tags

    [alert] = oncall.alerts("gate_refused")  # a warning: the run succeeded
    assert alert["title"] == f"the gate refused candidate {refused}: the champion stays v0001"
    assert (alert["day"], alert["task"]) == (DAYS[0], "gate_and_promote")
    assert alert["details"] and all(r.startswith("reason: ") for r in alert["details"])
    assert f"airflow.{metrics.GATE_REFUSALS}" in oncall.metric_names()
    assert oncall.emails_about(f"the gate refused candidate {refused}")


@pytest.mark.slow
def test_no_champion_at_all_fails_clearly(local, tmp_path, oncall):
    """... with the alert receivers down: logged, and the run fails as it would anyway."""
    down = alert_env(closed_port(), closed_port(), oncall.statsd_port)
    empty = LocalAirflow(home=local.home, catalogue=local.catalogue,
                         registry=tmp_path / "registry", extra_env={**local.extra_env, **down})
    day = DAYS[1]
    before = read_manifest(local.catalogue, day)
    assert not empty.dag_test(day, {**DAG_CONF, "gate": {"min_accuracy": 0.999}})

    states = {t["task_id"]: (t["state"], t["try_number"])
              for t in empty.task_instances(run_of(empty, day))}
    assert states["gate_and_promote"] == ("failed", 1)  # a clear failure, not retried
    assert states["resolve_run"][0] == "upstream_failed"
    log = (empty.log_dir / f"dags-test-{day}.log").read_text()
    assert "no champion model" in log
    assert Registry(empty.registry).champion() is None
    assert read_manifest(local.catalogue, day) == before
    for channel in ("webhook", "email"):
        assert f"alert task_failed not sent by {channel}" in log
    assert not [a for a in oncall.alerts("task_failed") if a["task"] == "gate_and_promote"]
    assert f"airflow.{metrics.ALERTS_FAILED}:1|c" in oncall.statsd  # counted, twice


@pytest.mark.slow
def test_failing_shard_is_retried_and_blocks_publication(first_run, oncall):
    local = first_run
    day = DAYS[2]
    assert local.dag_test(day, DAG_CONF)
    before = published_state(local.catalogue, day)

    add_corrupt_input(local.catalogue, day)
    assert not local.dag_test(day, DAG_CONF)

    tis = local.task_instances(run_of(local, day))
    shards = [t for t in tis if t["task_id"] == "tag_shard"]
    assert [(s["map_index"], s["state"]) for s in shards] == [(0, "success"), (1, "failed")]
    assert shards[1]["try_number"] == 2  # TAGGING_SHARD_RETRIES=1: tried, then retried
    states = {t["task_id"]: t["state"] for t in tis}
    assert states["publish"] == states["validate"] == "upstream_failed"
    assert published_state(local.catalogue, day) == before
    assert read_published(local.catalogue, day).num_rows == 55

    # the shard that failed for good (not its first try) is alerted, with where to look
    [alert] = oncall.alerts("task_failed")
    assert alert["title"] == f"tag_shard[1] failed for {day}" and alert["severity"] == "critical"
    assert alert["run_id"] == run_of(local, day)
    error = alert["details"][0]
    assert error.startswith("error: StorageError: ") and "deserialize" in error
    assert "\n" not in error and len(error) < 320
    assert alert["log_url"].endswith("/tasks/tag_shard/mapped/1?try_number=2")
    assert oncall.emails_about(f"tag_shard[1] failed for {day}")


@pytest.mark.slow
def test_run_demo_summarises_each_day(first_run, monkeypatch):
    """What `tagging demo` prints, on the fixture's work dir (the day is already published);
    the alert receivers are down: the backlog alert is logged, the run succeeds."""
    monkeypatch.setenv(settings.DATA_ENV, FMNIST_DIR)
    for key, value in alert_env(closed_port(), closed_port(), closed_port()).items():
        monkeypatch.setenv(key, value)
    run = run_demo(first_run.home.parent, DAYS[:1], train_overrides=DAG_CONF["train"],
                   gate_overrides=DAG_CONF["gate"],
                   params={"max_error_rate": 0.2, "max_review_rate": 1.0})
    assert run.failed == [] and run.champion == "v0001"
    [day] = run.days
    assert day.partition == DAYS[0] and day.ok and day.model_version == "v0001"
    assert (day.rows, day.errors, day.tagged) == (55, 5, 50)
    flagged = read_published(first_run.catalogue, DAYS[0], columns=["needs_review"])
    assert day.needs_review == sum(flagged["needs_review"].to_pylist()) >= 5  # broken rows
    assert day.published == str(published_dir(first_run.catalogue, DAYS[0]))
    assert run.catalogue == str(first_run.catalogue)
    log = Path(day.log).read_text()
    for channel in ("webhook", "email"):
        assert f"alert review_backlog not sent by {channel}" in log


@pytest.mark.slow
def test_real_photos_from_the_environment_are_trained_on(local, tmp_path, photo_set, oncall):
    """TAGGING_REAL_PHOTOS joins the label store: trained on, calibrated on its holdout;
    validation's warnings (a few held-out photos certify no tag: every one is reviewed)
    reach the people on call, and the run succeeds."""
    from tagging.catalogue.demo import generate_demo_catalogue

    day = "2026-03-04"
    # its own Airflow home: the catalogue_tagged asset's URI is this catalogue's
    airflow = LocalAirflow.in_workdir(
        tmp_path, extra_env={**local.extra_env, settings.REAL_PHOTOS_ENV: str(photo_set)})
    airflow.setup()
    generate_demo_catalogue(airflow.catalogue, [day], rows_per_day=20, data_dir=FMNIST_DIR,
                            workers=2)
    train = {**DAG_CONF["train"], "real_photo_repeats": 5}
    assert airflow.dag_test(day, {**DAG_CONF, "train": train})

    meta = Registry(airflow.registry).get("champion").metadata
    labels = meta["metrics"]["labels"]
    assert labels["train"] + labels["holdout"] == 40 and labels["holdout"] > 0
    assert meta["hyperparameters"]["label_store"] == str(label_store_dir(airflow.catalogue))
    assert meta["review"]["selection_source"].startswith(f"{labels['holdout']} held-out")
    manifest = read_manifest(airflow.catalogue, day)
    assert manifest["model_version"] == "v0001"

    warnings = check_live_quality(manifest["quality"], expected_of(airflow.registry, "v0001"),
                                  version="v0001").warnings
    [alert] = [a for a in oncall.alerts("validation_warning") if a["day"] == day]
    assert warnings and alert["details"] == [f"warning: {w}" for w in warnings]
    assert (alert["day"], alert["task"], alert["severity"]) == (day, "validate", "warning")

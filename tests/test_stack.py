"""The stack test: the DAG on the real distributed engine, started by `tagging.ops.stack`.

PostgreSQL, Redis, an S3 server (SeaweedFS), api-server, scheduler, dag-processor,
triggerer and Celery workers (general, training, tagging-1, tagging-2) as local processes on
127.0.0.1, the catalogue on S3 (no shared disk); two days backfilled with `airflow backfill
create`, then a tagging worker SIGKILLed mid-shard.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DAG_CONF, FMNIST_DIR
from helpers import snapshot

from model_registry import Registry
from tagging import settings, storage
from tagging.catalogue.layout import tagged_root
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.table import history
from tagging.ops.stack import Stack

pytestmark = pytest.mark.stack

DAYS = ["2026-04-01", "2026-04-02"]
FAULT_DAY = "2026-04-03"
ROWS_PER_SHARD = 15  # demo days of 40 + 5 broken rows in row groups of 15: 3 shards a day
CONF = {**DAG_CONF, "rows_per_shard": ROWS_PER_SHARD}
TAGGING_WORKERS = {"tagging-1", "tagging-2"}


def write_days(local: Path, catalogue: storage.Root, days: list[str], rows: int) -> None:
    """Demo partitions in row groups of ROWS_PER_SHARD rows (several shards), written
    locally, then uploaded to the catalogue on the stack's S3 server."""
    from tagging.catalogue.demo import generate_demo_catalogue

    for path in generate_demo_catalogue(local, days, rows_per_day=rows, data_dir=FMNIST_DIR,
                                        workers=1):
        pq.write_table(pq.read_table(path), path, row_group_size=ROWS_PER_SHARD)
        storage.write_bytes(catalogue / str(path.relative_to(local)), path.read_bytes())


def assert_published_once_with_every_row(stack: Stack, day: str) -> None:
    source = pq.read_table(stack.workdir / "source" / "incoming" / f"dt={day}")
    table = read_published(stack.catalogue, day)
    assert sorted(table["product_id"].to_pylist()) == sorted(source["product_id"].to_pylist())
    assert read_manifest(stack.catalogue, day)["counts"]["rows"] == source.num_rows
    assert len(history(stack.catalogue, day)) == 1


def tagged_events(stack: Stack) -> int:
    return stack.query("SELECT count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                       "WHERE a.name = 'catalogue_tagged'")[0][0]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The native stack over a fresh work dir; always stopped (and checked) at the end."""
    # Not under pytest's 0700 tmp dir: PostgreSQL runs as an unprivileged user when the
    # tests run as root (CI), and it must be able to reach its data directory.
    workdir = Path(tempfile.mkdtemp(prefix="tagging-stack-"))
    workdir.chmod(0o755)
    stack = Stack(workdir, heartbeat_timeout=30, extra_env={
        settings.DATA_ENV: FMNIST_DIR, settings.SHARD_RETRY_DELAY_ENV: "2"})
    saved = dict(os.environ)
    try:
        started = time.monotonic()
        status = stack.up(timeout=400)
        print(f"stack start-up: {time.monotonic() - started:.0f} s wall")
        assert status["up"], status
        assert status["catalogue"].startswith("s3://")
        os.environ.update(stack.s3_env())  # this process reads and writes the catalogue too
        write_days(workdir / "source", stack.catalogue, [*DAYS, FAULT_DAY], rows=40)
        yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services = stack.services
        stack.down()
        assert not [p for s in services for p in s.session()]
        shutil.rmtree(workdir)


def test_every_service_listens_on_loopback_only(stack):
    import psutil

    addresses = set()
    for service in stack.services:
        for proc in service.session():
            addresses |= {c.laddr.ip for c in proc.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN}
    assert addresses == {"127.0.0.1"}
    assert {s.name for s in stack.services} == {
        "postgres", "redis", "s3", "api-server", "scheduler", "dag-processor", "triggerer",
        "general", "training", *TAGGING_WORKERS}


def test_two_days_backfilled_across_both_tagging_workers(stack):
    started = time.monotonic()
    runs = stack.wait_backfill(stack.backfill(DAYS[0], DAYS[-1], conf=CONF, max_active_runs=2),
                               timeout=900)
    print(f"2-day backfill: {time.monotonic() - started:.0f} s wall")
    assert [(r["day"], r["state"]) for r in runs] == [(day, "success") for day in DAYS]

    shard_hosts: Counter[str] = Counter()
    for run in runs:
        tis = stack.task_instances(run["run_id"])
        assert {t["state"] for t in tis} == {"success"}  # validate and announce included
        shards = [t for t in tis if t["task_id"] == "tag_shard"]
        assert len(shards) == 3
        shard_hosts.update(t["hostname"] for t in shards)
        queues = {t["task_id"]: (t["queue"], t["hostname"]) for t in tis}
        assert queues["retrain"] == queues["gate_and_promote"] == ("training", "training")
        assert queues["publish"] == ("default", "general")
        assert {t["queue"] for t in shards} == {"tagging"}
    print(f"shards per worker: {dict(shard_hosts)}")
    assert set(shard_hosts) == TAGGING_WORKERS  # both workers tagged

    for day in DAYS:
        assert_published_once_with_every_row(stack, day)
    assert Registry(stack.registry).version_ids() == ["v0001"]  # trained once, then reused
    assert tagged_events(stack) == len(DAYS)


def test_a_worker_killed_mid_shard_loses_nothing_and_reruns_change_nothing(stack):
    backfill = stack.backfill(FAULT_DAY, FAULT_DAY, conf=CONF, max_active_runs=2)
    deadline = time.monotonic() + 600
    running: list[tuple] = []
    while not running:
        assert time.monotonic() < deadline, "no shard started"
        running = stack.query(
            "SELECT map_index, hostname FROM task_instance WHERE task_id = 'tag_shard' "
            "AND state = 'running' AND hostname LIKE 'tagging-%%' AND run_id IN "
            "(SELECT run_id FROM dag_run WHERE backfill_id = %s)", backfill)
        time.sleep(0.5)
    time.sleep(2)  # well inside the shard: its process has started and is tagging
    map_index, victim = running[0]
    stack.service(victim).kill(signal.SIGKILL)  # the worker and its task processes at once
    killed_at = datetime.now(UTC)

    runs = stack.wait_backfill(backfill, timeout=900)
    assert [(r["day"], r["state"]) for r in runs] == [(FAULT_DAY, "success")]
    tis = {(t["task_id"], t["map_index"]): t for t in stack.task_instances(runs[0]["run_id"])}
    retried = tis[("tag_shard", map_index)]
    assert retried["state"] == "success" and retried["try_number"] >= 2
    assert retried["hostname"] in TAGGING_WORKERS - {victim}
    lost = stack.query("SELECT state, hostname FROM task_instance_history WHERE task_id = "
                       "'tag_shard' AND map_index = %s AND run_id = %s",
                       map_index, runs[0]["run_id"])
    assert ("failed", victim) in lost
    published_at = stack.query("SELECT end_date FROM task_instance WHERE task_id = 'publish' "
                               "AND run_id = %s", runs[0]["run_id"])[0][0]
    print(f"worker kill -> publication: {(published_at - killed_at).total_seconds():.0f} s")
    assert_published_once_with_every_row(stack, FAULT_DAY)

    # The killed worker comes back; re-running every day changes nothing, announces nothing.
    stack.start_worker(victim)
    stack.wait_worker(victim)
    before, events = snapshot(tagged_root(stack.catalogue)), tagged_events(stack)
    rerun = stack.wait_backfill(stack.backfill(DAYS[0], FAULT_DAY, conf=CONF,
                                               reprocess="completed", max_active_runs=2),
                                timeout=900)
    assert [r["state"] for r in rerun] == ["success"] * 3
    for run in rerun:
        states = {t["task_id"]: t["state"] for t in stack.task_instances(run["run_id"])}
        assert states["validate"] == "success" and states["announce"] == "skipped"
    assert snapshot(tagged_root(stack.catalogue)) == before
    assert tagged_events(stack) == events
    assert Registry(stack.registry).version_ids() == ["v0001"]

"""`airflow backfill create` run by a real scheduler (LocalExecutor, SQLite, loopback only)."""

from __future__ import annotations

import psutil
import pytest
from conftest import DAG_CONF, FMNIST_DIR
from helpers import snapshot

from model_registry import Registry
from tagging import settings
from tagging.catalogue.layout import tagged_root
from tagging.catalogue.published import read_manifest
from tagging.ops.local import LocalAirflow

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]


def listening_addresses(procs: list) -> set[str]:
    """IP addresses the service processes (and their children) listen on."""
    addresses = set()
    for proc in procs:
        parent = psutil.Process(proc.pid)
        for p in [parent, *parent.children(recursive=True)]:
            addresses |= {c.laddr.ip for c in p.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN}
    return addresses


@pytest.mark.slow
def test_backfill_publishes_each_day_and_rerunning_changes_nothing(tmp_path):
    from tagging.catalogue.demo import generate_demo_catalogue

    local = LocalAirflow.in_workdir(tmp_path, extra_env={settings.DATA_ENV: FMNIST_DIR})
    generate_demo_catalogue(local.catalogue, DAYS, rows_per_day=50, data_dir=FMNIST_DIR,
                            workers=2)
    local.setup()
    with local.services():
        assert listening_addresses(local.processes) == {"127.0.0.1"}

        # One run at a time: the first trains and promotes, the others reuse the champion.
        runs = local.wait_backfill(local.backfill(DAYS[0], DAYS[-1], conf=DAG_CONF,
                                                  max_active_runs=1))
        assert [(r["day"], r["run_type"], r["state"]) for r in runs] == [
            (day, "backfill", "success") for day in DAYS]
        assert Registry(local.registry).version_ids() == ["v0001"]
        for day in DAYS:
            manifest = read_manifest(local.catalogue, day)
            assert manifest["model_version"] == "v0001"
            assert manifest["counts"]["rows"] == 55
        before = snapshot(tagged_root(local.catalogue))

        # Re-running the same days (completed runs reprocessed, in parallel) changes nothing.
        rerun = local.wait_backfill(local.backfill(DAYS[0], DAYS[-1], conf=DAG_CONF,
                                                   reprocess="completed", max_active_runs=3))
        assert [r["state"] for r in rerun] == ["success"] * 3
        assert snapshot(tagged_root(local.catalogue)) == before
        assert Registry(local.registry).version_ids() == ["v0001"]
    assert local.processes == []


def test_an_airflow_command_waits_for_a_busy_metadata_db(tmp_path):
    """SQLite has one writer: a command that finds the DB locked (by the scheduler, in a
    backfill) waits for the lock instead of failing after pysqlite's 5 s."""
    import sqlite3
    import threading
    import time

    local = LocalAirflow.in_workdir(tmp_path)
    local.setup()
    held = threading.Event()

    def busy_writer() -> None:
        db = sqlite3.connect(local.db_path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(40)  # longer than the command takes to start, shorter than SQLITE_BUSY_S
        db.execute("COMMIT")
        db.close()

    writer = threading.Thread(target=busy_writer)
    writer.start()
    held.wait(30)
    started = time.monotonic()
    local.airflow("pools", "set", "busy-probe", "1", "written while the DB was locked",
                  log_name="busy")
    writer.join()
    assert time.monotonic() - started > 30  # it did meet the lock, and waited it out
    assert local.query("SELECT slots FROM slot_pool WHERE pool = ?", "busy-probe") == [(1,)]

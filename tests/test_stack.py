"""The stack test: the DAG on the real distributed engine, started by `tagging.ops.stack`.

PostgreSQL, Redis, an S3 server (SeaweedFS), api-server, scheduler, dag-processor,
triggerer and Celery workers (general, training, tagging-1, tagging-2) as local processes on
127.0.0.1, with catalogue, registry, label store and review answers on S3 and the review
store in PostgreSQL (no shared disk); two days backfilled with `airflow backfill create`,
then a tagging worker SIGKILLed mid-shard; then the documented stack sequence
(docs/platform/native-stack.md), command by command (fill a day with `tagging
demo-catalogue`, backfill it, read it with DuckDB, the review page, an answer that reaches
search at the day's next run).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
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
from tagging.labels import CATEGORY_SLUGS
from tagging.loop.labelstore import LabelStore
from tagging.ops.airflow import free_port, wait_http
from tagging.ops.stack import Stack

pytestmark = pytest.mark.stack

DAYS = ["2026-04-01", "2026-04-02"]
FAULT_DAY = "2026-04-03"
ROWS_PER_SHARD = 15  # demo days of 40 + 5 broken rows in row groups of 15: 3 shards a day
CONF = {**DAG_CONF, "rows_per_shard": ROWS_PER_SHARD}
TAGGING_WORKERS = {"tagging-1", "tagging-2"}
# The documented sequence (docs/platform/native-stack.md), run command by command below.
SEQUENCE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "platform" / "native-stack.md"
SEQUENCE_DAY = "2026-11-27"  # the page's day


def write_days(local: Path, catalogue: storage.Root, days: list[str], rows: int) -> None:
    """Demo partitions in row groups of ROWS_PER_SHARD rows (several shards), written
    locally, then uploaded to the catalogue on the stack's S3 server."""
    from tagging.catalogue.demo import generate_demo_catalogue

    for written in generate_demo_catalogue(local, days, rows_per_day=rows,
                                           data_dir=FMNIST_DIR, workers=1):
        path = written.path
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
def stack(request) -> Iterator[Stack]:
    """The native stack over a fresh work dir; always stopped (and checked) at the end."""
    # Not under pytest's 0700 tmp dir: PostgreSQL runs as an unprivileged user when the
    # tests run as root (CI), and it must be able to reach its data directory.
    workdir = Path(tempfile.mkdtemp(prefix="tagging-stack-"))
    workdir.chmod(0o755)
    stack = Stack(workdir, heartbeat_timeout=30, extra_env={
        settings.DATA_ENV: FMNIST_DIR, settings.SHARD_RETRY_DELAY_ENV: "2"})
    saved, failed_before = dict(os.environ), request.session.testsfailed
    try:
        started = time.monotonic()
        status = stack.up(timeout=400)
        print(f"stack start-up: {time.monotonic() - started:.0f} s wall")
        assert status["up"], status
        assert status["catalogue"].startswith("s3://")
        assert status["registry"].startswith("s3://")
        assert stack.env()[settings.REVIEW_DB_ENV].startswith("postgresql://")
        os.environ.update(stack.s3_env())  # this process reads and writes the catalogue too
        write_days(workdir / "source", stack.catalogue, [*DAYS, FAULT_DAY], rows=40)
        yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services = stack.services
        stack.down()
        assert not [p for s in services for p in s.session()]
        if request.session.testsfailed == failed_before:
            shutil.rmtree(workdir)
        else:  # the services' and tasks' logs, for whoever finds out why
            print(f"stack test failed: logs kept in {stack.log_dir} and {stack.home / 'logs'}")


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


# -------------------------------------------------------------- the documented sequence


def documented_commands() -> list[str]:
    """The documented stack sequence: each command (comments dropped; a heredoc is one)."""
    text = SEQUENCE_PAGE.read_text().split("<!-- stack-sequence -->", 1)[1]
    block = text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands, lines = [], iter(block.splitlines())
    for line in lines:
        command = line.split("  #", 1)[0].rstrip()
        if command.endswith("<<'EOF'"):
            command += "".join("\n" + body for body in iter(lines.__next__, "EOF")) + "\nEOF"
        commands.append(command)
    return commands


def documented_command(start: str) -> str:
    [command] = [c for c in documented_commands() if c.startswith(start)]
    return command


def shell(stack: Stack, command: str, **popen: object) -> subprocess.CompletedProcess | \
        subprocess.Popen:
    """`command` in a shell that sourced the stack's airflow.env, as the page says."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "USER": "stack-reviewer"}
    argv = ["bash", "-c", f"source {shlex.quote(str(stack.env_file))} && {command}"]
    if popen:
        return subprocess.Popen(argv, env=env, **popen)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def backfilled(stack: Stack, command: str) -> dict:
    """Run a documented backfill command (with this test's tiny-model params, which the test
    champion needs) and wait for its one run."""
    shell(stack, f"{command} --dag-run-conf {shlex.quote(json.dumps(DAG_CONF))}")
    [run] = stack.wait_backfill(stack.query("SELECT max(id) FROM backfill")[0][0],
                                timeout=900)
    return run


def get(url: str, **headers: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers.get_content_type(), response.read()


def test_the_documented_sequence_fills_backfills_reads_and_reviews(stack):
    assert documented_commands()[:2] == ["make stack", "source var/stack/stack/airflow.env"]
    assert documented_commands()[-1] == "make stack-down"  # the fixture's up and down
    started = time.monotonic()
    shell(stack, documented_command("tagging demo-catalogue"))
    incoming = stack.catalogue / f"incoming/dt={SEQUENCE_DAY}/part-0.parquet"
    assert storage.exists(incoming)
    shell(stack, documented_command("airflow dags unpause"))
    backfill = documented_command("airflow backfill create")
    run = backfilled(stack, backfill)
    assert (run["day"], run["state"]) == (SEQUENCE_DAY, "success")
    listed = shell(stack, documented_command("airflow dags list-runs")).stdout
    assert f"{SEQUENCE_DAY}" in listed and "success" in listed
    print(f"documented sequence, fill to published: {time.monotonic() - started:.0f} s wall")

    read = shell(stack, documented_command("python - <<'EOF'")).stdout
    assert SEQUENCE_DAY in read and any(slug in read for slug in CATEGORY_SLUGS)

    port = free_port()
    serve = documented_command("tagging review serve").replace("--port 8000", f"--port {port}")
    app = shell(stack, f"exec {serve}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", alive=lambda: app.poll() is None, name="review app",
                  timeout=120)
        status, _, page = get(f"{base}/", Accept="text/html")
        assert status == 200
        photo = page.decode().split(f'src="/photos/{SEQUENCE_DAY}/', 1)[1].split('"', 1)[0]
        status, kind, _ = get(f"{base}/photos/{SEQUENCE_DAY}/{photo}")
        assert status == 200 and kind.startswith("image/")
        _, _, scraped = get(f"{base}/metrics")
        assert "tagging_review_queue_length" in scraped.decode()
        queued = json.loads(get(f"{base}/api/queue?limit=5")[2])["items"]
        item = next(i for i in queued if i["top3"])
        answer = next(s for s in CATEGORY_SLUGS if s != item["top3"][0]["category"])
        request = json.dumps({"partition": SEQUENCE_DAY, "product_id": item["product_id"],
                              "category": answer}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{base}/api/verifications", data=request, method="POST",
                headers={"Content-Type": "application/json"}), timeout=30) as response:
            assert response.status == 201
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(30)

    # the answer reaches search at the day's next run, through S3 only
    rerun = backfilled(stack, f"{backfill} --reprocess-behavior completed")
    assert rerun["state"] == "success"
    assert storage.exists(stack.catalogue / f"reviews/dt={SEQUENCE_DAY}/answers.parquet")
    labels = LabelStore.of_catalogue(stack.catalogue)
    assert str(labels.root).startswith("s3://")
    assert item["product_id"] in labels.rows()["product_id"].to_pylist()
    published = read_published(stack.catalogue, SEQUENCE_DAY,
                               ["product_id", "category", "category_source"]).to_pylist()
    [row] = [r for r in published if r["product_id"] == item["product_id"]]
    assert (row["category"], row["category_source"]) == (answer, "verified")
    assert storage.list_objects(storage.Root(stack.registry))  # the registry: S3 only

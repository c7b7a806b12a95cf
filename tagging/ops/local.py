"""Run the real `catalogue_tagging` DAG with Airflow on SQLite, on this machine.

`LocalAirflow.dag_test` executes one DAG run with `airflow dags test` (Airflow's in-process
runner: the real DAG, metadata DB, XCom, retries and asset events); ops.demo builds the
demos on it. `LocalAirflow.services()` starts a real scheduler with the LocalExecutor plus
the execution API server it needs, bound to 127.0.0.1 only, so that `backfill()` runs
`airflow backfill create` the production way. Commands and queries: ops.airflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging.errors import AirflowRunError
from tagging.ops.airflow import AirflowHarness, airflow_env, free_port, wait_http
from tagging.settings import DAG_ID

log = logging.getLogger(__name__)

SQLITE_BUSY_S = 60  # how long a reader or writer of the metadata DB waits for SQLite's lock


@dataclass
class LocalAirflow(AirflowHarness):
    """One local Airflow installation: AIRFLOW_HOME, SQLite DB, catalogue and registry paths."""

    home: Path
    catalogue: Path
    registry: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    parallelism: int = 2
    api_url: str | None = None  # set while services() runs
    processes: list[subprocess.Popen] = field(default_factory=list)  # idem

    @classmethod
    def in_workdir(cls, workdir: Path, **kwargs: Any) -> LocalAirflow:
        workdir = Path(workdir).absolute()
        return cls(home=workdir / "airflow", catalogue=workdir / "catalogue",
                   registry=workdir / "registry", **kwargs)

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def log_dir(self) -> Path:
        return self.home / "local-logs"

    def env(self) -> dict[str, str]:
        """The environment every Airflow process of this installation runs with."""
        # SQLite has one writer at a time: wait up to SQLITE_BUSY_S for the lock instead of
        # pysqlite's 5 s (a backfill's `airflow backfill create` failed with "database is
        # locked" while the scheduler wrote, on a loaded machine).
        db_url = f"sqlite:///{self.db_path}?timeout={SQLITE_BUSY_S}"
        env = airflow_env(home=self.home, executor="LocalExecutor",
                          db_url=db_url, catalogue=self.catalogue,
                          registry=self.registry, api_url=self.api_url)
        env["AIRFLOW__CORE__PARALLELISM"] = str(self.parallelism)
        return env | self.extra_env

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read Airflow's metadata DB (schema of Airflow 3.3, read-only)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                                timeout=SQLITE_BUSY_S)) as db:
            return db.execute(sql, args).fetchall()

    def setup(self) -> None:
        """Create or upgrade the SQLite metadata DB and the training pool."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.migrate()

    def dag_test(self, date: str, conf: dict | None = None, *, timeout: float = 3600) -> bool:
        """One DAG run for logical date `date` via `airflow dags test`; True if it succeeded."""
        args = ["dags", "test", DAG_ID, date, "--conf", json.dumps(conf or {})]
        try:
            self.airflow(*args, log_name=f"dags-test-{date}", timeout=timeout, append=False)
        except AirflowRunError as e:
            log.error("%s", e)
            return False
        return True

    def dag_test_log(self, date: str) -> Path:
        """The log of dag_test(date)."""
        return self.log_dir / f"dags-test-{date}.log"

    # ------------------------------------------------------------ scheduler + backfill

    @contextlib.contextmanager
    def services(self, *, startup_timeout: float = 120) -> Iterator[LocalAirflow]:
        """Run the execution API server and a LocalExecutor scheduler, on loopback only."""
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        started = self.processes
        try:
            started.append(self._spawn("api-server", "api-server", "--apps", "execution",
                                       "--host", "127.0.0.1", "--port", str(port)))
            # --skip-serve-logs: no log server on 0.0.0.0; task logs are local files.
            started.append(self._spawn("scheduler", "scheduler", "--skip-serve-logs"))
            api = started[0]
            wait_http(f"{self.api_url}/execution/health", alive=lambda: api.poll() is None,
                      name=f"{api.args} (see {self.log_dir / 'api-server.log'})",
                      timeout=startup_timeout)
            yield self
        finally:
            for proc in reversed(started):
                _stop(proc)
            started.clear()
            self.api_url = None

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env(),
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def dead_services(self) -> list[str]:
        return [" ".join(map(str, p.args)) for p in self.processes if p.poll() is not None]

    def backfill(self, from_date: str, to_date: str, **kwargs: Any) -> int:
        """`airflow backfill create` (needs services(): no dag-processor runs here, so the DAG
        is serialized first); returns the backfill id for wait_backfill."""
        if not self.api_url:
            raise AirflowRunError("backfill() needs a running scheduler: use `with services():`")
        self.airflow("dags", "reserialize", log_name="backfill")
        return super().backfill(from_date, to_date, **kwargs)


def _stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM the process, wait for a clean exit, then SIGKILL its whole session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover children of its own session only
    proc.wait()

"""Run the real `catalogue_tagging` DAG with Airflow on SQLite, on this machine.

`run_demo` (behind `tagging demo`) executes one DAG run per day with `airflow dags test`
(Airflow's in-process runner: the real DAG, metadata DB, XCom, retries and asset events)
and summarises what was published. `LocalAirflow.services()` starts a real scheduler with
the LocalExecutor plus the execution API server it needs, bound to 127.0.0.1 only, so
that `LocalAirflow.backfill()` can run `airflow backfill create` the production way.

Every Airflow command runs in a subprocess with its own AIRFLOW_HOME under the work dir,
so this module never imports Airflow (nor TensorFlow) into the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagging import settings
from tagging.errors import AirflowRunError

log = logging.getLogger(__name__)

DAG_ID = "catalogue_tagging"
DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
TRAINING_POOL = settings.Settings().training_pool


@dataclass
class LocalAirflow:
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
            # Local runs happen by trigger or backfill only, never by the clock.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            settings.CATALOGUE_ENV: str(self.catalogue),
            settings.REGISTRY_ENV: str(self.registry),
            settings.TRAINING_POOL_ENV: TRAINING_POOL,
        }
        if self.api_url:
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.api_url}/execution/"
        return env | self.extra_env

    # ------------------------------------------------------------ commands

    def airflow(self, *args: str, log_name: str, timeout: float = 600,
                append: bool = True) -> Path:
        """Run `airflow ARGS` to completion; output goes to a log file, returned."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{log_name}.log"
        with open(log_path, "ab" if append else "wb") as out:
            proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)
        if proc.returncode != 0:
            raise AirflowRunError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}), "
                                  f"see {log_path}:\n{_tail(log_path)}")
        return log_path

    def setup(self) -> None:
        """Create or upgrade the SQLite metadata DB and the training pool."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", log_name="setup")
        self.airflow("pools", "set", TRAINING_POOL, "1", "one model training at a time",
                     log_name="setup")

    def dag_test(self, date: str, conf: dict | None = None, *, timeout: float = 3600) -> bool:
        """One DAG run for logical date `date` via `airflow dags test`; True if it succeeded."""
        args = ["dags", "test", DAG_ID, date, "--conf", json.dumps(conf or {})]
        try:
            self.airflow(*args, log_name=f"dags-test-{date}", timeout=timeout, append=False)
        except AirflowRunError as e:
            log.error("%s", e)
            return False
        return True

    # ------------------------------------------------------------ scheduler + backfill

    @contextlib.contextmanager
    def services(self, *, startup_timeout: float = 120) -> Iterator[LocalAirflow]:
        """Run the execution API server and a LocalExecutor scheduler, on loopback only."""
        port = _free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        started = self.processes
        try:
            started.append(self._spawn("api-server", "api-server", "--apps", "execution",
                                       "--host", "127.0.0.1", "--port", str(port)))
            # --skip-serve-logs: no log server on 0.0.0.0; task logs are local files.
            started.append(self._spawn("scheduler", "scheduler", "--skip-serve-logs"))
            _wait_http(f"{self.api_url}/execution/health", started[0], startup_timeout)
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

    def backfill(self, from_date: str, to_date: str, *, conf: dict | None = None,
                 reprocess: str = "none", max_active_runs: int = 1,
                 timeout: float = 1800) -> list[dict]:
        """`airflow backfill create` for the days, then wait for it (needs services())."""
        if not self.api_url:
            raise AirflowRunError("backfill() needs a running scheduler: use `with services():`")
        self.airflow("dags", "reserialize", log_name="backfill")
        args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", from_date,
                "--to-date", to_date, "--reprocess-behavior", reprocess,
                "--max-active-runs", str(max_active_runs)]
        if conf:
            args += ["--dag-run-conf", json.dumps(conf)]
        self.airflow(*args, log_name="backfill")
        backfill_id = self.query("SELECT max(id) FROM backfill WHERE dag_id = ?", DAG_ID)[0][0]
        deadline = time.monotonic() + timeout
        while not self.query("SELECT completed_at FROM backfill WHERE id = ?", backfill_id)[0][0]:
            if time.monotonic() > deadline:
                raise AirflowRunError(f"backfill {backfill_id} not done after {timeout:.0f} s; "
                                      f"see {self.log_dir / 'scheduler.log'}")
            if dead := [p.args for p in self.processes if p.poll() is not None]:
                raise AirflowRunError(f"{dead} exited during backfill {backfill_id}; "
                                      f"see {self.log_dir}")
            time.sleep(2)
        return self.runs(backfill_id)

    def runs(self, backfill_id: int | None = None) -> list[dict]:
        """DAG runs (all, or one backfill's) with their state, oldest logical date first."""
        where, args = ("WHERE backfill_id = ?", (backfill_id,)) if backfill_id else ("", ())
        rows = self.query("SELECT run_id, logical_date, state, run_type FROM dag_run "
                           f"{where} ORDER BY logical_date", *args)
        return [dict(zip(("run_id", "logical_date", "state", "run_type"), r, strict=True))
                for r in rows]

    def task_instances(self, run_id: str) -> list[dict]:
        """Task instances of one run: task_id, map_index, state, try_number."""
        rows = self.query("SELECT task_id, map_index, state, try_number FROM task_instance "
                           "WHERE run_id = ? ORDER BY task_id, map_index", run_id)
        return [dict(zip(("task_id", "map_index", "state", "try_number"), r, strict=True))
                for r in rows]

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read Airflow's metadata DB (schema of Airflow 3.3, read-only)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                                timeout=30)) as db:
            return db.execute(sql, args).fetchall()


# ------------------------------------------------------------ the demo


def run_demo(workdir: Path, dates: list[str], *, train_overrides: dict | None = None,
             gate_overrides: dict | None = None, params: dict | None = None,
             data_dir: Path | None = None) -> dict:
    """Run the DAG once per day (demo catalogue already under workdir/catalogue); summarise.

    `train_overrides` / `gate_overrides` become the runs' `train` / `gate` params; `params`
    sets any other DAG param (e.g. max_review_rate); `data_dir` is the Fashion-MNIST
    directory the DAG trains on (default: $TAGGING_FASHION_MNIST_DIR, else the cache).
    """
    from tagging.catalogue.layout import published_dir
    from tagging.catalogue.published import read_manifest
    from tagging.catalogue.validate import truth_agreement

    extra_env = {settings.DATA_ENV: str(Path(data_dir).absolute())} if data_dir else {}
    local = LocalAirflow.in_workdir(workdir, extra_env=extra_env)
    local.setup()
    conf = {**(params or {}), "train": train_overrides or {}, "gate": gate_overrides or {}}
    days = []
    for date in dates:
        start = time.perf_counter()
        ok = local.dag_test(date, conf)
        manifest = read_manifest(local.catalogue, date) if ok else None
        day: dict[str, Any] = {"partition": date, "state": "success" if ok else "failed",
                               "seconds": round(time.perf_counter() - start, 1),
                               "log": str(local.log_dir / f"dags-test-{date}.log")}
        if manifest:
            day |= {"published": str(published_dir(local.catalogue, date)),
                    "model_version": manifest["model_version"], **manifest["counts"],
                    **truth_agreement(local.catalogue, date)}
        elif not ok:
            day["error"] = last_error(Path(day["log"]))
        days.append(day)
    return {"airflow_home": str(local.home), "catalogue": str(local.catalogue),
            "registry": str(local.registry), "champion": _champion(local.registry),
            "days": days, "failed": [d["partition"] for d in days if d["state"] != "success"]}


def last_error(log_path: Path) -> str | None:
    """The last exception message in an Airflow log, to tell a user why a run failed."""
    errors = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
              if re.match(r"^[\w.]+(Exception|Error): ", line.strip())]
    return errors[-1] if errors else None


def _champion(registry: Path) -> str | None:
    from tagging.model.registry import open_registry

    return open_registry(registry).champion()


# ------------------------------------------------------------ process helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AirflowRunError(f"{proc.args} exited with {proc.returncode} while starting")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise AirflowRunError(f"{url} did not answer within {timeout:.0f} s")


def _stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM the process, wait for a clean exit, then SIGKILL its whole session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover children of its own session only
    proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

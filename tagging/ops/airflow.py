"""One Airflow harness, shared by the local SQLite runner (ops.local) and the native stack
(ops.stack): the environment of an installation's Airflow processes, the `airflow` command
runner, backfills, queries about runs and task instances, and small process helpers (a
free port, waiting for an HTTP endpoint, a log's tail or last error).

Every Airflow command runs in a subprocess with the installation's own AIRFLOW_HOME, so
this module never imports Airflow (nor TensorFlow) into the caller.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagging import settings
from tagging.errors import AirflowRunError
from tagging.settings import DAG_ID

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
TRAINING_POOL = settings.Settings().training_pool
RUN_COLUMNS = ("run_id", "logical_date", "state", "run_type")
TASK_COLUMNS = ("task_id", "map_index", "state", "try_number", "hostname", "queue")


def airflow_env(*, home: Path, executor: str, db_url: str, catalogue: Path, registry: Path,
                scheduled: bool = False, api_url: str | None = None) -> dict[str, str]:
    """The environment of an installation's Airflow processes: the caller's, without its
    AIRFLOW__ settings, plus this installation's home, DAG folder, executor, metadata DB,
    and the catalogue and registry the DAG works on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        # By trigger or backfill only, unless asked to run by the clock.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled),
        settings.CATALOGUE_ENV: str(catalogue),
        settings.REGISTRY_ENV: str(registry),
        settings.TRAINING_POOL_ENV: TRAINING_POOL,
    }
    if api_url:
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{api_url}/execution/"
    return env


class AirflowHarness:
    """Commands and queries against one Airflow installation.

    A subclass provides `log_dir`, `env()`, `query()` (on its metadata DB, with `PARAM` as
    the driver's placeholder) and `dead_services()` (which of its services exited).
    """

    PARAM = "?"
    log_dir: Path

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read Airflow's metadata DB (schema of Airflow 3.3)."""
        raise NotImplementedError

    def dead_services(self) -> list[str]:
        """Services that should be running but exited (a backfill cannot finish then)."""
        raise NotImplementedError

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
                                  f"see {log_path}:\n{tail(log_path)}")
        return log_path

    def migrate(self, *, timeout: float = 600) -> None:
        """Create or upgrade the metadata DB, and the training pool (one training at a time)."""
        self.airflow("db", "migrate", log_name="setup", timeout=timeout)
        self.airflow("pools", "set", TRAINING_POOL, "1", "one model training at a time",
                     log_name="setup")

    # ------------------------------------------------------------ backfill

    def backfill(self, from_date: str, to_date: str, *, conf: dict | None = None,
                 reprocess: str = "none", max_active_runs: int = 1) -> int:
        """`airflow backfill create` for the days; returns the backfill id (wait_backfill)."""
        args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", from_date,
                "--to-date", to_date, "--reprocess-behavior", reprocess,
                "--max-active-runs", str(max_active_runs)]
        if conf:
            args += ["--dag-run-conf", json.dumps(conf)]
        self.airflow(*args, log_name="backfill")
        return self.query(f"SELECT max(id) FROM backfill WHERE dag_id = {self.PARAM}",
                          DAG_ID)[0][0]

    def wait_backfill(self, backfill_id: int, timeout: float = 1800) -> list[dict]:
        """Wait until the backfill completes; its runs, oldest logical date first."""
        def dead() -> str | None:
            exited = self.dead_services()
            return f"{exited} exited during backfill {backfill_id}; see {self.log_dir}" \
                if exited else None

        wait_for(lambda: bool(self.query(
                     f"SELECT completed_at FROM backfill WHERE id = {self.PARAM}",
                     backfill_id)[0][0]),
                 failed=dead, timeout=timeout, interval=2,
                 late=f"backfill {backfill_id} not done after {timeout:.0f} s; "
                      f"see {self.log_dir / 'scheduler.log'}")
        return self.runs(backfill_id)

    # ------------------------------------------------------------ queries

    def runs(self, backfill_id: int | None = None) -> list[dict]:
        """DAG runs (all, or one backfill's), oldest logical date first: run_id, logical_date
        (as text), day (its date), state, run_type."""
        where, args = ((f"WHERE backfill_id = {self.PARAM}", (backfill_id,)) if backfill_id
                       else ("", ()))
        rows = self.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM dag_run {where} "
                          "ORDER BY logical_date", *args)
        runs = [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows]
        for run in runs:
            run["logical_date"] = str(run["logical_date"])
            run["day"] = run["logical_date"][:10]
        return runs

    def task_instances(self, run_id: str) -> list[dict]:
        """Task instances of one run: task_id, map_index, state, try_number, hostname, queue."""
        rows = self.query(f"SELECT {', '.join(TASK_COLUMNS)} FROM task_instance "
                          f"WHERE run_id = {self.PARAM} ORDER BY task_id, map_index", run_id)
        return [dict(zip(TASK_COLUMNS, row, strict=True)) for row in rows]


# ------------------------------------------------------------ process helpers


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready: Callable[[], bool], *, failed: Callable[[], str | None], late: str,
             timeout: float, interval: float = 1.0,
             errors: tuple[type[Exception], ...] = (),
             error: type[AirflowRunError] = AirflowRunError) -> None:
    """Poll `ready()` until it is true. `failed()` says why waiting is pointless (a process
    died), `late` why it took too long; `errors` raised by `ready()` count as not ready yet
    (the last one is quoted in the message)."""
    deadline = time.monotonic() + timeout
    while True:
        last = None
        try:
            if ready():
                return
        except errors as e:
            last = e
        why = failed() or (late if time.monotonic() > deadline else None)
        if why:
            raise error(why + (f" (last error: {last})" if last else "")) from last
        time.sleep(interval)


def wait_http(url: str, *, alive: Callable[[], bool], name: str, timeout: float) -> None:
    """Wait until `url` answers 200; fails when the service `name` exits or time runs out."""
    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    wait_for(answers, failed=lambda: None if alive() else f"{name} exited while starting",
             late=f"{url} did not answer within {timeout:.0f} s", timeout=timeout,
             interval=0.5, errors=(OSError,))


def shell_exports(env: dict[str, str]) -> str:
    """`export` lines for what `env` sets beyond this process's own environment."""
    ours = {k: v for k, v in env.items() if os.environ.get(k) != v}
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(ours.items()))


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def last_error(log_path: Path) -> str | None:
    """The last exception message in an Airflow log, to tell a user why a run failed."""
    errors = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
              if re.match(r"^[\w.]+(Exception|Error): ", line.strip())]
    return errors[-1] if errors else None

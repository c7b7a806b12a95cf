"""The distributed engine on one machine, without Docker: `tagging stack up|status|down`.

Starts the services of docker-compose.yml as local processes: PostgreSQL (a cluster under
the work dir, run by the Debian binaries as an unprivileged user), Redis, and Airflow's
api-server, scheduler, dag-processor, triggerer and Celery workers (CeleryExecutor), and an
S3 server (SeaweedFS, tagging.ops.s3server) holding the catalogue (its label store and
review answers included) and the model registry; the review queue's store is a database
of the PostgreSQL server: the workers share no disk, as on several machines. Laid
out as in the compose file: `general` (default queue, 2 tasks), `training` (training
queue, 1) and N `tagging-i` (tagging queue, 1: a shard uses every core). Everything
listens on 127.0.0.1 only, on free ports. Each service runs in its own session, so `down`
(or a killed worker) takes every process it forked with it, the task processes included.

The ports, secrets and process ids are kept in `<workdir>/stack/state.json` (mode 0600),
so `status` and `down` work from another process than `up`. Like LocalAirflow, this module
never imports Airflow (nor TensorFlow) into the caller.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from tagging import settings
from tagging.errors import StackError
from tagging.ops.airflow import (
    AirflowHarness,
    airflow_env,
    free_port,
    shell_exports,
    tail,
    wait_for,
    wait_http,
)
from tagging.ops.s3server import S3Server
from tagging.ops.services import (
    DB_NAME,
    DB_USER,
    REVIEW_DB_NAME,
    Postgres,
    Redis,
    Service,
    as_user,
    write_private,
)
from tagging.settings import DAG_ID
from tagging.storage import Root

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
BUCKET = "tagging"  # the stack's S3 bucket
VISIBILITY_TIMEOUT = 4 * 3600


def worker_hostname() -> str:
    """Airflow's [core] hostname_callable on the stack's workers: the worker's own name.

    Several workers on one machine would otherwise all record the same host name in
    task_instance.hostname; on separate machines the machine name is already unique.
    """
    return settings.Settings.from_env().worker_name or socket.getfqdn()


@dataclass
class Stack(AirflowHarness):
    """PostgreSQL + Redis + Airflow with the CeleryExecutor, under one work dir, on loopback.

    `heartbeat_timeout` is Airflow's [scheduler] task_instance_heartbeat_timeout: how long
    a task whose worker died stays "running" before the scheduler fails it and retries it
    (300 s in Airflow; tests use less). `scheduled` lets the scheduler create runs by the
    clock; off by default, so the stack runs only what is triggered or backfilled.
    Commands, backfills and queries: ops.airflow.AirflowHarness.
    """

    PARAM = "%s"

    workdir: Path
    tagging_workers: int = 2
    heartbeat_timeout: int = 300
    scheduled: bool = False
    # The catalogue and the registry on the stack's S3 server (else folders of the work dir).
    object_storage: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    # ------------------------------------------------------------ paths

    @property
    def root(self) -> Path:
        return self.workdir / "stack"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def home(self) -> Path:
        return self.root / "airflow"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pg_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def catalogue(self) -> Root:
        if self.object_storage:
            return Root(f"s3://{BUCKET}/catalogue")
        return Root(self.workdir / "catalogue")

    @property
    def registry(self) -> Path | str:
        if self.object_storage:
            return f"s3://{BUCKET}/registry"
        return self.workdir / "registry"

    @property
    def s3(self) -> S3Server:
        """The stack's S3 server (its ports and keys kept in the state file)."""
        saved = self.state["s3"]
        return S3Server(self.root / "s3", access_key=saved["access_key"],
                        secret_key=saved["secret_key"], ports=saved["ports"])

    def s3_env(self) -> dict[str, str]:
        """The AWS_* variables of the stack's S3 server (empty without object storage)."""
        return self.s3.env() if self.state.get("s3") else {}

    @property
    def services(self) -> list[Service]:
        return [Service(**s) for s in self.state.get("services", [])]

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise StackError(f"no service {name!r} in {self.state_file}")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.state['ports']['api']}"

    @property
    def db_url(self) -> str:
        return self._postgres_url("postgresql+psycopg2", DB_NAME)

    @property
    def review_db_url(self) -> str:
        """The review queue's store: its own database on the stack's PostgreSQL server."""
        return self._postgres_url("postgresql", REVIEW_DB_NAME)

    def _postgres_url(self, scheme: str, database: str) -> str:
        ports, secret = self.state["ports"], self.state["secrets"]["postgres"]
        return f"{scheme}://{DB_USER}:{secret}@127.0.0.1:{ports['postgres']}/{database}"

    # ------------------------------------------------------------ environment

    def env(self, worker: str | None = None) -> dict[str, str]:
        """The environment of every Airflow process of the stack (`worker`: its name)."""
        keys = self.state["secrets"]
        env = airflow_env(home=self.home, executor="CeleryExecutor", db_url=self.db_url,
                          catalogue=self.catalogue, registry=self.registry,
                          scheduled=self.scheduled, api_url=self.api_url)
        env |= {
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__CELERY__BROKER_URL": (f"redis://:{keys['redis']}@127.0.0.1:"
                                            f"{self.state['ports']['redis']}/0"),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url,
            # A message not acked (task_acks_late) within this is redelivered: longer than
            # the longest task's execution_timeout (retrain: 3 h), so no task runs twice.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
                max(2, min(10, self.heartbeat_timeout // 3))),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        }
        env |= self.s3_env()
        # The review queue's store (none is derived from a catalogue on S3): in PostgreSQL,
        # which the general worker (fill, export) and the review app all reach.
        env.setdefault(settings.REVIEW_DB_ENV, self.review_db_url)
        env.pop(settings.WORKER_NAME_ENV, None)
        if worker:
            env[settings.WORKER_NAME_ENV] = worker
        return env | self.extra_env

    # ------------------------------------------------------------ up / down

    def up(self, *, timeout: float = 300) -> dict:
        """Start every service (PostgreSQL and the metadata DB first); returns status()."""
        if self.state.get("services"):
            if all(s.alive() for s in self.services):
                raise StackError(f"the stack in {self.root} is already up; "
                                 "`tagging stack down` first")
            self.down()  # a half-dead stack from an earlier run
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.state = {"ports": {"postgres": free_port(), "redis": free_port(),
                                "api": free_port()},
                      "secrets": self._secrets(), "services": []}
        self._save()
        try:
            self._start_postgres(timeout)
            self._start_redis(timeout)
            if self.object_storage:
                self._start_s3(timeout)
            self.migrate(timeout=timeout)
            self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port",
                        str(self.state["ports"]["api"]), "--workers", "1")
            api = self.service("api-server")
            wait_http(f"{self.api_url}/api/v2/monitor/health", alive=api.alive,
                      name=f"api-server (see {api.log})", timeout=timeout)
            self._spawn("scheduler", "scheduler", "--skip-serve-logs")
            self._spawn("dag-processor", "dag-processor")
            self._spawn("triggerer", "triggerer", "--skip-serve-logs")
            for name, queue, concurrency in self.workers():
                self.start_worker(name, queue, concurrency)
            for name, _, _ in self.workers():
                self.wait_worker(name, timeout)
            self.wait_dag(timeout)
        except BaseException:
            self.down()
            raise
        self.state["startup_seconds"] = round(time.monotonic() - started, 1)
        self._save()
        self._write_env_file()
        return self.status()

    def down(self) -> None:
        """Stop every service, Airflow first and PostgreSQL last; leaves no process behind."""
        airflow = [s for s in self.services if s.name not in ("postgres", "redis", "s3")]
        for group in (airflow, [s for s in self.services if s not in airflow]):
            for service in group:  # all at once: their clean exits overlap
                service.terminate()
            for service in group:
                service.stop()
        leftovers = [(s.name, p.pid) for s in self.services for p in s.session()]
        if self.state:
            self.state["services"] = []
            self._save()
        if leftovers:
            raise StackError(f"processes still running after stop: {leftovers}")

    def status(self) -> dict:
        """Which services run, their pids and logs, and where to reach the stack."""
        if not self.state:
            return {"up": False, "workdir": str(self.workdir), "services": []}
        services = [{"name": s.name, "pid": s.pid, "alive": s.alive(), "log": s.log}
                    for s in self.services]
        return {"up": bool(services) and all(s["alive"] for s in services),
                "workdir": str(self.workdir), "api_url": self.api_url,
                "ports": self.state["ports"], "startup_seconds": self.state.get("startup_seconds"),
                "airflow_home": str(self.home), "catalogue": str(self.catalogue),
                "s3": self.s3.endpoint if self.state.get("s3") else None,
                "registry": str(self.registry), "services": services}

    # ------------------------------------------------------------ workers

    def workers(self) -> list[tuple[str, str, int]]:
        """(name, queue, concurrency) of each Celery worker, as in docker-compose.yml.

        Concurrency 1 runs in Celery's solo pool: the task then runs in a child of the
        worker's main process, not of a (daemonic) prefork pool process, which may not
        start the process pools that training and tagging decode images with.
        """
        config = settings.Settings.from_env(self.env())
        return [("general", DEFAULT_QUEUE, 2), ("training", config.training_queue, 1),
                *((f"tagging-{i}", config.tagging_queue, 1)
                  for i in range(1, self.tagging_workers + 1))]

    def start_worker(self, name: str, queue: str | None = None,
                     concurrency: int | None = None) -> Service:
        """(Re)start the Celery worker `name` (its queue and concurrency from workers())."""
        layout = {n: (q, c) for n, q, c in self.workers()}
        if queue is None or concurrency is None:
            queue, concurrency = layout[name]
        if any(s.name == name and s.alive() for s in self.services):
            raise StackError(f"worker {name} is already running")
        self.state["services"] = [s for s in self.state["services"] if s["name"] != name]
        pool = "solo" if concurrency == 1 else "prefork"
        return self._spawn(name, "celery", "worker", "--celery-hostname", f"{name}@%h",
                           "--queues", queue, "--concurrency", str(concurrency),
                           "--skip-serve-logs", "--without-gossip", worker=name,
                           extra_env={"AIRFLOW__CELERY__POOL": pool})

    def wait_worker(self, name: str, timeout: float = 300) -> None:
        """Wait for the worker's "ready." log line (it then consumes its queues)."""
        service = self.service(name)
        log_file = Path(service.log)
        wait_for(lambda: "ready." in log_file.read_text(errors="replace"),
                 failed=lambda: None if service.alive() else (
                     f"worker {name} exited while starting, see {log_file}:\n{tail(log_file)}"),
                 late=f"worker {name} not ready after {timeout:.0f} s, see {log_file}",
                 timeout=timeout, error=StackError)

    def wait_dag(self, timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed and serialized the DAG."""
        def import_errors() -> str | None:
            errors = self.query("SELECT filename, stacktrace FROM import_error")
            return f"the DAG does not import: {errors}" if errors else None

        wait_for(lambda: bool(self.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s",
                                         DAG_ID)),
                 failed=import_errors, timeout=timeout, error=StackError,
                 late=f"{DAG_ID} not parsed after {timeout:.0f} s, see "
                      f"{self.log_dir / 'dag-processor.log'}")

    # ------------------------------------------------------------ the harness's hooks

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read Airflow's metadata DB (schema of Airflow 3.3)."""
        ports, secret = self.state["ports"], self.state["secrets"]["postgres"]
        with contextlib.closing(psycopg2.connect(
                host="127.0.0.1", port=ports["postgres"], dbname=DB_NAME, user=DB_USER,
                password=secret, connect_timeout=10)) as db, db.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def dead_services(self) -> list[str]:
        """Services that exited (a tagging worker may be down: its tasks are retried)."""
        return [s.name for s in self.services
                if not s.alive() and not s.name.startswith("tagging-")]

    # ------------------------------------------------------------ PostgreSQL and Redis

    def _start_postgres(self, timeout: float) -> None:
        postgres = Postgres(self.pg_dir, self.state["ports"]["postgres"],
                            self.state["secrets"]["postgres"], self.log_dir)
        self.state["secrets"]["postgres"] = postgres.prepare()
        self._save()
        self._spawn_process("postgres", postgres.argv(), env=postgres.env(),
                            user=postgres.user)
        postgres.wait_ready(self.service("postgres").alive, timeout)

    def _start_redis(self, timeout: float) -> None:
        redis = Redis(self.root / "redis", self.state["ports"]["redis"],
                      self.state["secrets"]["redis"], self.log_dir)
        self._spawn_process("redis", redis.prepare(), env=redis.env())
        redis.wait_ready(self.service("redis").alive, timeout)

    def _start_s3(self, timeout: float) -> None:
        server = S3Server(self.root / "s3").start(buckets=(BUCKET,), timeout=timeout)
        self.state["s3"] = {"access_key": server.access_key, "secret_key": server.secret_key,
                            "ports": server.ports}
        proc = psutil.Process(server.process.pid)
        self.state["services"].append(vars(Service(
            name="s3", pid=proc.pid, argv=proc.cmdline(), log=str(server.workdir / "weed.log"),
            created=proc.create_time())))
        self._save()

    # ------------------------------------------------------------ processes

    def _spawn(self, name: str, *args: str, worker: str | None = None,
               extra_env: dict[str, str] | None = None) -> Service:
        return self._spawn_process(name, [sys.executable, "-m", "airflow", *args],
                                   env=self.env(worker) | (extra_env or {}))

    def _spawn_process(self, name: str, argv: list[str], *, env: dict[str, str],
                       user: pwd.struct_passwd | None = None) -> Service:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            if user is not None:
                shutil.chown(log_path, user.pw_uid, user.pw_gid)
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.root, **as_user(user))
        service = Service(name=name, pid=proc.pid, argv=argv, log=str(log_path),
                          created=psutil.Process(proc.pid).create_time())
        self.state["services"].append(vars(service))
        self._save()
        return service

    def _secrets(self) -> dict[str, str]:
        return {"postgres": secrets.token_urlsafe(24), "redis": secrets.token_urlsafe(24),
                "jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32),
                "fernet": base64.urlsafe_b64encode(os.urandom(32)).decode()}

    @property
    def env_file(self) -> Path:
        return self.root / "airflow.env"

    def _write_env_file(self) -> None:
        """`source` it to run the airflow CLI against the stack (mode 0600: it has secrets)."""
        write_private(self.env_file, shell_exports(self.env()))

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        write_private(tmp, json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)

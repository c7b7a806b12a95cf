"""The distributed engine on one machine, without Docker: `tagging stack up|status|down`.

Starts the services of docker-compose.yml as local processes: PostgreSQL (a cluster under
the work dir, run by the Debian binaries as an unprivileged user), Redis, and Airflow's
api-server, scheduler, dag-processor, triggerer and Celery workers (CeleryExecutor), laid
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
import glob
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from tagging import settings
from tagging.errors import AirflowRunError
from tagging.ops.airflow_local import DAG_ID, DAGS_DIR, TRAINING_POOL, _free_port, _tail, _wait_http

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
DB_NAME = DB_USER = "airflow"
VISIBILITY_TIMEOUT = 4 * 3600


class StackError(AirflowRunError):
    """The native stack cannot start, or one of its services failed."""


def worker_hostname() -> str:
    """Airflow's [core] hostname_callable on the stack's workers: the worker's own name.

    Several workers on one machine would otherwise all record the same host name in
    task_instance.hostname; on separate machines the machine name is already unique.
    """
    return os.environ.get(settings.WORKER_NAME_ENV) or socket.getfqdn()


@dataclass
class Service:
    """One started process (the leader of its own session) and its log file."""

    name: str
    pid: int
    argv: list[str]
    log: str
    created: float  # psutil create_time: a reused pid is not ours

    def alive(self) -> bool:
        """True while the leader runs (a zombie child of ours counts as gone)."""
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                return False
        try:
            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() == self.created
        except psutil.Error:
            return False

    def session(self) -> list[psutil.Process]:
        """Every live process of this service's session (forked children included)."""
        members = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getsid(proc.pid) == self.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        return members

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to every process of the session at once (a machine that dies)."""
        for proc in self.session():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def terminate(self) -> None:
        """Ask the leader to exit (SIGTERM); stop() waits for it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM the leader, wait for a clean exit, then SIGKILL what is left of the session."""
        if self.alive():
            self.terminate()
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.kill(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (self.alive() or self.session()) and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass
class Stack:
    """PostgreSQL + Redis + Airflow with the CeleryExecutor, under one work dir, on loopback.

    `heartbeat_timeout` is Airflow's [scheduler] task_instance_heartbeat_timeout: how long
    a task whose worker died stays "running" before the scheduler fails it and retries it
    (300 s in Airflow; tests use less). `scheduled` lets the scheduler create runs by the
    clock; off by default, so the stack runs only what is triggered or backfilled.
    """

    workdir: Path
    tagging_workers: int = 2
    heartbeat_timeout: int = 300
    scheduled: bool = False
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
    def catalogue(self) -> Path:
        return self.workdir / "catalogue"

    @property
    def registry(self) -> Path:
        return self.workdir / "registry"

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
        ports, secret = self.state["ports"], self.state["secrets"]["postgres"]
        return f"postgresql+psycopg2://{DB_USER}:{secret}@127.0.0.1:{ports['postgres']}/{DB_NAME}"

    # ------------------------------------------------------------ environment

    def env(self, worker: str | None = None) -> dict[str, str]:
        """The environment of every Airflow process of the stack (`worker`: its name)."""
        ports, keys = self.state["ports"], self.state["secrets"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__CELERY__BROKER_URL": (f"redis://:{keys['redis']}@127.0.0.1:"
                                            f"{ports['redis']}/0"),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url,
            # A message not acked (task_acks_late) within this is redelivered: longer than
            # the longest task's execution_timeout (retrain: 3 h), so no task runs twice.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(self.scheduled),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
                max(2, min(10, self.heartbeat_timeout // 3))),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            settings.CATALOGUE_ENV: str(self.catalogue),
            settings.REGISTRY_ENV: str(self.registry),
            settings.TRAINING_POOL_ENV: TRAINING_POOL,
        }
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
        self.state = {"ports": {"postgres": _free_port(), "redis": _free_port(),
                                "api": _free_port()},
                      "secrets": self._secrets(), "services": []}
        self._save()
        try:
            self._start_postgres(timeout)
            self._start_redis(timeout)
            self.airflow("db", "migrate", log_name="setup", timeout=timeout)
            self.airflow("pools", "set", TRAINING_POOL, "1", "one model training at a time",
                         log_name="setup")
            self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port",
                        str(self.state["ports"]["api"]), "--workers", "1")
            _wait_http(f"{self.api_url}/api/v2/monitor/health",
                       _Pid(self.service("api-server")), timeout)
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
        airflow = [s for s in self.services if s.name not in ("postgres", "redis")]
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
        deadline = time.monotonic() + timeout
        while "ready." not in Path(service.log).read_text(errors="replace"):
            if not service.alive():
                raise StackError(f"worker {name} exited while starting, see {service.log}:\n"
                                 f"{_tail(Path(service.log))}")
            if time.monotonic() > deadline:
                raise StackError(f"worker {name} not ready after {timeout:.0f} s, "
                                 f"see {service.log}")
            time.sleep(1)

    def wait_dag(self, timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed and serialized the DAG."""
        deadline = time.monotonic() + timeout
        while not self.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", DAG_ID):
            if errors := self.query("SELECT filename, stacktrace FROM import_error"):
                raise StackError(f"the DAG does not import: {errors}")
            if time.monotonic() > deadline:
                raise StackError(f"{DAG_ID} not parsed after {timeout:.0f} s, see "
                                 f"{self.log_dir / 'dag-processor.log'}")
            time.sleep(1)

    # ------------------------------------------------------------ commands and queries

    def airflow(self, *args: str, log_name: str, timeout: float = 600) -> Path:
        """Run `airflow ARGS` against the stack to completion; returns its log file."""
        log_path = self.log_dir / f"{log_name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False)
        if proc.returncode != 0:
            raise StackError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}), "
                             f"see {log_path}:\n{_tail(log_path)}")
        return log_path

    def backfill(self, from_date: str, to_date: str, *, conf: dict | None = None,
                 reprocess: str = "none", max_active_runs: int = 2) -> int:
        """`airflow backfill create` for the days; returns the backfill id (see wait_backfill)."""
        args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", from_date,
                "--to-date", to_date, "--reprocess-behavior", reprocess,
                "--max-active-runs", str(max_active_runs)]
        if conf:
            args += ["--dag-run-conf", json.dumps(conf)]
        self.airflow(*args, log_name="backfill")
        return self.query("SELECT max(id) FROM backfill WHERE dag_id = %s", DAG_ID)[0][0]

    def wait_backfill(self, backfill_id: int, timeout: float = 1800) -> list[dict]:
        """Wait until the backfill completes; its runs, oldest logical date first."""
        deadline = time.monotonic() + timeout
        while not self.query("SELECT completed_at FROM backfill WHERE id = %s",
                             backfill_id)[0][0]:
            if dead := [s.name for s in self.services
                        if not s.alive() and not s.name.startswith("tagging-")]:
                raise StackError(f"{dead} exited during backfill {backfill_id}; "
                                 f"see {self.log_dir}")
            if time.monotonic() > deadline:
                raise StackError(f"backfill {backfill_id} not done after {timeout:.0f} s; "
                                 f"see {self.log_dir / 'scheduler.log'}")
            time.sleep(2)
        rows = self.query("SELECT run_id, logical_date, state FROM dag_run "
                          "WHERE backfill_id = %s ORDER BY logical_date", backfill_id)
        return [{"run_id": r, "day": d.date().isoformat(), "state": s} for r, d, s in rows]

    def task_instances(self, run_id: str) -> list[dict]:
        """Task instances of one run: task, map index, state, tries, worker host, queue."""
        cols = ("task_id", "map_index", "state", "try_number", "hostname", "queue")
        rows = self.query(f"SELECT {', '.join(cols)} FROM task_instance WHERE run_id = %s "
                          "ORDER BY task_id, map_index", run_id)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Read Airflow's metadata DB (schema of Airflow 3.3)."""
        ports, secret = self.state["ports"], self.state["secrets"]["postgres"]
        with contextlib.closing(psycopg2.connect(
                host="127.0.0.1", port=ports["postgres"], dbname=DB_NAME, user=DB_USER,
                password=secret, connect_timeout=10)) as db, db.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    # ------------------------------------------------------------ PostgreSQL and Redis

    def _start_postgres(self, timeout: float) -> None:
        bindir = postgres_bindir()
        user = _postgres_user()
        data = self.pg_dir / "data"
        self.pg_dir.mkdir(exist_ok=True)
        if user is not None:
            _check_reachable(self.pg_dir, user)
            shutil.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        self.pg_dir.chmod(0o700)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            pwfile = self.pg_dir / "password"
            _write_private(pwfile, self.state["secrets"]["postgres"] + "\n")
            if user is not None:
                shutil.chown(pwfile, user.pw_uid, user.pw_gid)
            try:
                self._run_as(user, [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER,
                                    f"--pwfile={pwfile}", "--auth=scram-sha-256",
                                    "--encoding=UTF8", "--no-locale"], log_name="postgres")
            finally:
                pwfile.unlink()
        else:  # an existing cluster keeps the password it was created with
            self.state["secrets"]["postgres"] = json.loads(
                (self.pg_dir / "secret.json").read_text())["password"]
        secret_file = self.pg_dir / "secret.json"
        _write_private(secret_file, json.dumps({"password": self.state["secrets"]["postgres"]}))
        self._save()
        run_dir = self.pg_dir / "run"
        run_dir.mkdir(exist_ok=True)
        if user is not None:
            shutil.chown(run_dir, user.pw_uid, user.pw_gid)
        self._spawn_process("postgres", [
            str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.state['ports']['postgres']}",
            "-c", f"unix_socket_directories={run_dir}", "-c", "max_connections=200"],
            env=_user_env(user), user=user)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with contextlib.closing(psycopg2.connect(
                        host="127.0.0.1", port=self.state["ports"]["postgres"],
                        dbname="postgres", user=DB_USER,
                        password=self.state["secrets"]["postgres"], connect_timeout=5)) as db:
                    db.autocommit = True
                    with db.cursor() as cur:
                        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                        if not cur.fetchone():
                            cur.execute(f"CREATE DATABASE {DB_NAME}")
                return
            except psycopg2.OperationalError as e:
                if not self.service("postgres").alive() or time.monotonic() > deadline:
                    raise StackError(f"PostgreSQL did not start ({e}), see "
                                     f"{self.log_dir / 'postgres.log'}") from e
                time.sleep(0.5)

    def _start_redis(self, timeout: float) -> None:
        import redis

        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis-server not found: `make system-deps` installs it "
                             "(apt-get install -y redis-server)")
        redis_dir = self.root / "redis"
        redis_dir.mkdir(exist_ok=True)
        port, secret = self.state["ports"]["redis"], self.state["secrets"]["redis"]
        # The password goes in a config file only its owner may read, not on the command line.
        conf = redis_dir / "redis.conf"
        _write_private(conf, f"bind 127.0.0.1\nport {port}\ndir {redis_dir}\nsave \"\"\n"
                        f"appendonly no\nrequirepass {secret}\ndaemonize no\n")
        self._spawn_process("redis", [server, str(conf)], env=dict(os.environ))
        client = redis.Redis(host="127.0.0.1", port=port, password=secret, socket_timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as e:
                if not self.service("redis").alive() or time.monotonic() > deadline:
                    raise StackError(f"Redis did not start ({e}), see "
                                     f"{self.log_dir / 'redis.log'}") from e
                time.sleep(0.3)

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
                                    cwd=self.root, **_as_user(user))
        service = Service(name=name, pid=proc.pid, argv=argv, log=str(log_path),
                          created=psutil.Process(proc.pid).create_time())
        self.state["services"].append(vars(service))
        self._save()
        return service

    def _run_as(self, user: pwd.struct_passwd | None, argv: list[str], *,
                log_name: str) -> None:
        log_path = self.log_dir / f"{log_name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  cwd=self.root, env=_user_env(user), **_as_user(user))
        if proc.returncode != 0:
            raise StackError(f"{argv[0]} failed (exit {proc.returncode}), see {log_path}:\n"
                             f"{_tail(log_path)}")

    def _secrets(self) -> dict[str, str]:
        return {"postgres": secrets.token_urlsafe(24), "redis": secrets.token_urlsafe(24),
                "jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32),
                "fernet": base64.urlsafe_b64encode(os.urandom(32)).decode()}

    @property
    def env_file(self) -> Path:
        return self.root / "airflow.env"

    def _write_env_file(self) -> None:
        """`source` it to run the airflow CLI against the stack (mode 0600: it has secrets)."""
        ours = {k: v for k, v in self.env().items() if os.environ.get(k) != v}
        _write_private(self.env_file, "".join(f"export {k}={shlex.quote(v)}\n"
                                         for k, v in sorted(ours.items())))

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        _write_private(tmp, json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)


@dataclass
class _Pid:
    """The part of subprocess.Popen that _wait_http uses, for a Service."""

    service: Service

    @property
    def args(self) -> list[str]:
        return self.service.argv

    @property
    def returncode(self) -> str:
        return f"(see {self.service.log})"

    def poll(self) -> int | None:
        return None if self.service.alive() else 1


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (secrets), never readable even for a moment."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)


def postgres_bindir() -> Path:
    """The PostgreSQL server binaries: $TAGGING_PG_BINDIR, else Debian's newest version."""
    if os.environ.get(settings.PG_BINDIR_ENV):
        return Path(os.environ[settings.PG_BINDIR_ENV])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError("PostgreSQL server binaries not found: `make system-deps` installs "
                         f"them (apt-get install -y postgresql), or set {settings.PG_BINDIR_ENV}")
    return Path(found[-1]).parent


def _postgres_user() -> pwd.struct_passwd | None:
    """The unprivileged user PostgreSQL runs as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(settings.PG_USER_ENV) or "postgres"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise StackError(f"user {name!r} not found: PostgreSQL does not run as root; the Debian "
                         f"package creates 'postgres', or set {settings.PG_USER_ENV}") from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail early when `user` cannot traverse the parents of `path` (e.g. a 0700 temp dir)."""
    for parent in path.absolute().parents:
        mode = parent.stat()
        if mode.st_uid != user.pw_uid and not mode.st_mode & stat.S_IXOTH and not (
                mode.st_gid == user.pw_gid and mode.st_mode & stat.S_IXGRP):
            raise StackError(f"PostgreSQL runs as {user.pw_name!r}, which cannot enter "
                             f"{parent} (mode {stat.filemode(mode.st_mode)}): use a work dir "
                             "whose parents others may traverse")


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _user_env(user: pwd.struct_passwd | None) -> dict[str, str]:
    """A clean environment for PostgreSQL (the caller's, when not switching user)."""
    if user is None:
        return dict(os.environ)
    return {"HOME": user.pw_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8"}


@contextlib.contextmanager
def running(stack: Stack, *, timeout: float = 300) -> Iterator[Stack]:
    """`up()` the stack for a block and always bring it `down()` after."""
    try:
        stack.up(timeout=timeout)
        yield stack
    finally:
        stack.down()

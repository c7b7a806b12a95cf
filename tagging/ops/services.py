"""The native stack's services (ops.stack): a supervised process, PostgreSQL and Redis.

A Service is one started process, the leader of its own session, so that stopping it (or
killing it, as a machine that dies) takes everything it forked with it.

PostgreSQL is a cluster under the stack's work dir, run by Debian's binaries (as root: as an
unprivileged user, since it refuses to run as root); Redis gets a config file that only its
owner may read (it holds the password). The stack starts and supervises the processes;
this module prepares them and waits until they answer.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from tagging import settings
from tagging.errors import StackError
from tagging.ops.airflow import tail, wait_for

DB_NAME = DB_USER = "airflow"
REVIEW_DB_NAME = "review"  # the review queue's store: never Airflow's own database


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
class Postgres:
    """One PostgreSQL cluster in `folder`, listening on 127.0.0.1:`port`."""

    folder: Path
    port: int
    password: str  # for a new cluster; an existing one keeps its own (prepare() returns it)
    log_dir: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def prepare(self) -> str:
        """Create the cluster unless it exists; the password it accepts."""
        user = self.user
        self.folder.mkdir(exist_ok=True)
        if user is not None:
            check_reachable(self.folder, user)
            shutil.chown(self.folder, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o700)
        secret_file = self.folder / "secret.json"
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            pwfile = self.folder / "password"
            write_private(pwfile, self.password + "\n")
            if user is not None:
                shutil.chown(pwfile, user.pw_uid, user.pw_gid)
            try:
                self._run([str(postgres_bindir() / "initdb"), "-D", str(self.data),
                           "-U", DB_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                           "--encoding=UTF8", "--no-locale"])
            finally:
                pwfile.unlink()
        else:  # an existing cluster keeps the password it was created with
            self.password = json.loads(secret_file.read_text())["password"]
        write_private(secret_file, json.dumps({"password": self.password}))
        run_dir = self.folder / "run"
        run_dir.mkdir(exist_ok=True)
        if user is not None:
            shutil.chown(run_dir, user.pw_uid, user.pw_gid)
        return self.password

    @property
    def user(self) -> pwd.struct_passwd | None:
        return postgres_user()

    def argv(self) -> list[str]:
        return [str(postgres_bindir() / "postgres"), "-D", str(self.data),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.folder / 'run'}",
                "-c", "max_connections=200"]

    def env(self) -> dict[str, str]:
        return user_env(self.user)

    def wait_ready(self, alive: Callable[[], bool], timeout: float) -> None:
        """Wait until the server accepts connections; create the Airflow database and the
        review queue's."""
        def create_database() -> bool:
            with contextlib.closing(psycopg2.connect(
                    host="127.0.0.1", port=self.port, dbname="postgres", user=DB_USER,
                    password=self.password, connect_timeout=5)) as db:
                db.autocommit = True
                with db.cursor() as cur:
                    for name in (DB_NAME, REVIEW_DB_NAME):
                        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                        if not cur.fetchone():
                            cur.execute(f"CREATE DATABASE {name}")
            return True

        _wait_started("PostgreSQL", create_database, psycopg2.OperationalError, alive=alive,
                      timeout=timeout, log=self.log_dir / "postgres.log", interval=0.5)

    def _run(self, argv: list[str]) -> None:
        user = self.user
        log_path = self.log_dir / "postgres.log"
        with open(log_path, "ab") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False,
                                  cwd=self.folder.parent, env=user_env(user), **as_user(user))
        if proc.returncode != 0:
            raise StackError(f"{argv[0]} failed (exit {proc.returncode}), see {log_path}:\n"
                             f"{tail(log_path)}")


@dataclass
class Redis:
    """One Redis server in `folder`, on 127.0.0.1:`port`, with a password, no persistence."""

    folder: Path
    port: int
    password: str
    log_dir: Path

    def prepare(self) -> list[str]:
        """Write its config (the password in a file only its owner may read, not on the
        command line); the command line that starts it."""
        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis-server not found: `make system-deps` installs it "
                             "(apt-get install -y redis-server)")
        self.folder.mkdir(exist_ok=True)
        conf = self.folder / "redis.conf"
        write_private(conf, f"bind 127.0.0.1\nport {self.port}\ndir {self.folder}\nsave \"\"\n"
                      f"appendonly no\nrequirepass {self.password}\ndaemonize no\n")
        return [server, str(conf)]

    def env(self) -> dict[str, str]:
        return user_env(None)

    def wait_ready(self, alive: Callable[[], bool], timeout: float) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_timeout=2)
        _wait_started("Redis", client.ping, redis.RedisError, alive=alive, timeout=timeout,
                      log=self.log_dir / "redis.log", interval=0.3)


def _wait_started(name: str, answers: Callable[[], object], error: type[Exception], *,
                  alive: Callable[[], bool], timeout: float, log: Path, interval: float) -> None:
    """Wait until the server `name` answers (`answers()` raises `error` until then)."""
    wait_for(lambda: bool(answers()), errors=(error,), timeout=timeout, interval=interval,
             failed=lambda: None if alive() else f"{name} did not start, see {log}",
             late=f"{name} did not start within {timeout:.0f} s, see {log}", error=StackError)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (secrets), never readable even for a moment."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)


def postgres_bindir() -> Path:
    """The PostgreSQL server binaries: $TAGGING_PG_BINDIR, else Debian's newest version."""
    configured = settings.Settings.from_env().pg_bindir
    if configured is not None:
        return configured
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError("PostgreSQL server binaries not found: `make system-deps` installs "
                         f"them (apt-get install -y postgresql), or set {settings.PG_BINDIR_ENV}")
    return Path(found[-1]).parent


def postgres_user() -> pwd.struct_passwd | None:
    """The unprivileged user PostgreSQL runs as when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    name = settings.Settings.from_env().pg_user
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise StackError(f"user {name!r} not found: PostgreSQL does not run as root; the Debian "
                         f"package creates 'postgres', or set {settings.PG_USER_ENV}") from None


def check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail early when `user` cannot traverse the parents of `path` (e.g. a 0700 temp dir)."""
    for parent in path.absolute().parents:
        mode = parent.stat()
        if mode.st_uid != user.pw_uid and not mode.st_mode & stat.S_IXOTH and not (
                mode.st_gid == user.pw_gid and mode.st_mode & stat.S_IXGRP):
            raise StackError(f"PostgreSQL runs as {user.pw_name!r}, which cannot enter "
                             f"{parent} (mode {stat.filemode(mode.st_mode)}): use a work dir "
                             "whose parents others may traverse")


def as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that run a command as `user` (None: as ourselves)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def user_env(user: pwd.struct_passwd | None) -> dict[str, str]:
    """A clean environment for PostgreSQL (the caller's, when not switching user)."""
    if user is None:
        return dict(os.environ)
    return {"HOME": user.pw_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8"}

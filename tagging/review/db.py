"""The review store's database: a SQLite file (WAL) or a PostgreSQL URL, one small dialect.

SQL is written once with `?` placeholders and `{id}`, `{blob}`, `{float}` type slots;
`Database` fills them for its engine. A transaction is a context manager yielding a cursor
whose rows come back as dicts; writers on SQLite take the write lock up front
(BEGIN IMMEDIATE), so two app processes never deadlock upgrading a read lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tagging.errors import ConfigError

SQLITE_BUSY_TIMEOUT_S = 30.0
PG_POOL_SIZE = 8
_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "float": "REAL"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "float": "DOUBLE PRECISION"},
}


class Cursor:
    """A DB-API cursor that takes `?` placeholders and returns rows as dicts."""

    def __init__(self, cursor: Any, engine: str):
        self._cursor = cursor
        self._engine = engine

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self._engine == "postgresql":
            sql = sql.replace("?", "%s")
        self._cursor.execute(sql, tuple(params))
        return self

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def all(self) -> list[dict[str, Any]]:
        names = [d[0] for d in self._cursor.description or []]
        return [dict(zip(names, (_plain(v) for v in row), strict=True))
                for row in self._cursor.fetchall()]

    def one(self) -> dict[str, Any] | None:
        rows = self.all()
        return rows[0] if rows else None

    def scalar(self) -> Any:
        row = self._cursor.fetchone()
        return _plain(row[0]) if row else None


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


class Database:
    """Connections to the store: a SQLite file path, or postgresql://user:pw@host/db."""

    def __init__(self, url: str):
        self.url = str(url)
        if self.url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            self.engine = "postgresql"
            self._dsn = self.url.replace("postgresql+psycopg2://", "postgresql://", 1)
            self._pool: Any = None
            self._pool_lock = threading.Lock()
            self._slots = threading.BoundedSemaphore(PG_POOL_SIZE)  # wait, never PoolError
        elif "://" in self.url:
            raise ConfigError(f"review store {self.url!r}: a SQLite file path or a "
                              "postgresql:// URL")
        else:
            self.engine = "sqlite"
            self.path = Path(self.url)
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def sql(self, text: str) -> str:
        """DDL with the engine's types filled in."""
        return text.format(**_TYPES[self.engine])

    @property
    def shown(self) -> str:
        """The URL without its password, for messages."""
        if self.engine == "sqlite":
            return str(self.path)
        head, _, tail = self.url.rpartition("@")
        return f"{head.split(':')[0]}://…@{tail}" if head else self.url

    @contextlib.contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        if self.engine == "sqlite":
            with self._sqlite(write) as cursor:
                yield cursor
        else:
            with self._postgres() as cursor:
                yield cursor

    @contextlib.contextmanager
    def _sqlite(self, write: bool) -> Iterator[Cursor]:
        conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous=FULL")  # a committed answer survives a crash
            conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Cursor(conn.cursor(), "sqlite")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextlib.contextmanager
    def _postgres(self) -> Iterator[Cursor]:
        pool = self._postgres_pool()
        with self._slots:
            conn = pool.getconn()
            try:
                with conn, conn.cursor() as cursor:  # commit on success, else roll back
                    yield Cursor(cursor, "postgresql")
            finally:
                pool.putconn(conn)

    def _postgres_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from psycopg2.pool import ThreadedConnectionPool

                self._pool = ThreadedConnectionPool(1, PG_POOL_SIZE, self._dsn,
                                                    connect_timeout=10)
            return self._pool

    def close(self) -> None:
        if self.engine == "postgresql" and self._pool is not None:
            self._pool.closeall()
            self._pool = None

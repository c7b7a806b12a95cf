"""Every setting the project reads from the environment, and every shared default, in one place.

Paths default to ./var (TAGGING_HOME); the DAG's settings are read by the DAG processor,
so they must not depend on anything but the environment. Read with `Settings.from_env()`
(each call reads the environment afresh, so tests and subprocesses can set it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tagging.errors import ConfigError, StorageError
from tagging.storage import Root

DAG_ID = "catalogue_tagging"  # the DAG (dags/catalogue_tagging.py) and whoever runs it

HOME_ENV = "TAGGING_HOME"
DATA_ENV = "TAGGING_FASHION_MNIST_DIR"
REGISTRY_ENV = "TAGGING_REGISTRY"
CATALOGUE_ENV = "TAGGING_CATALOGUE"
IMAGE_ROOT_ENV = "TAGGING_IMAGE_ROOT"
REAL_PHOTOS_ENV = "TAGGING_REAL_PHOTOS"
SCHEDULE_ENV = "TAGGING_SCHEDULE"
START_DATE_ENV = "TAGGING_START_DATE"
MAX_ACTIVE_RUNS_ENV = "TAGGING_MAX_ACTIVE_RUNS"
TRAINING_POOL_ENV = "TAGGING_TRAINING_POOL"
SHARD_RETRIES_ENV = "TAGGING_SHARD_RETRIES"
SHARD_RETRY_DELAY_ENV = "TAGGING_SHARD_RETRY_DELAY"
TRAINING_QUEUE_ENV = "TAGGING_TRAINING_QUEUE"
TAGGING_QUEUE_ENV = "TAGGING_TAGGING_QUEUE"
# The native stack (tagging.ops.stack): a worker's name (its task instances' hostname), and
# where the PostgreSQL server binaries are and which unprivileged user runs them as root.
WORKER_NAME_ENV = "TAGGING_WORKER_NAME"
PG_BINDIR_ENV = "TAGGING_PG_BINDIR"
PG_USER_ENV = "TAGGING_PG_USER"
# Airflow's own setting: the most mapped task instances one task may expand to.
MAX_MAP_LENGTH_ENV = "AIRFLOW__CORE__MAX_MAP_LENGTH"

DEFAULT_CACHE = Path.home() / ".cache" / "catalogue-tagging" / "fashion-mnist"


@dataclass(frozen=True)
class TaggingLimits:
    """How a partition is cut into shards, and the quality limits its validation enforces."""

    rows_per_shard: int = 20_000
    max_error_rate: float = 0.05  # share of rows that could not be tagged
    max_review_rate: float = 0.6  # share of rows flagged needs_review
    # A run's staging folder no process has locked for this long is a killed run's leftover
    # (longer than any run, shard retries included): the day's next publish removes it.
    staging_max_age_s: float = 24 * 3600.0


@dataclass(frozen=True)
class TableLimits:
    """The tagged Delta table: how long old versions stay readable, how commits retry."""

    retention_days: int = 7  # superseded files and log entries kept (time travel, restore)
    checkpoint_interval: int = 10  # a checkpoint every N commits (log clean-up needs one)
    commit_attempts: int = 5  # a publisher of a day re-tries after losing to another of it
    commit_retries: int = 15  # delta-rs's own retries against publishers of other days


@dataclass(frozen=True)
class Settings:
    """Where things live and how the DAG runs; every field has an environment variable."""

    home: Path = Path("var")
    # Roots: a local path or s3://bucket/prefix (tagging.storage; AWS_* for the endpoint)
    registry: Root | None = None  # default: home/registry
    catalogue: Root | None = None  # default: home/catalogue
    image_root: Root | None = None  # default: catalogue/images
    fashion_mnist_dir: Path = DEFAULT_CACHE
    real_photos: str | None = None
    schedule: str = "@daily"
    start_date: datetime = datetime(2024, 1, 1)
    max_active_runs: int = 2
    training_pool: str = "tagging_training"
    shard_retries: int = 3
    shard_retry_delay_s: float = 30.0
    # Celery queues (CeleryExecutor): training and tagging each use every core of their
    # worker, so their workers serve them with concurrency 1; the rest go to "default".
    training_queue: str = "training"
    tagging_queue: str = "tagging"
    max_map_length: int = 1024  # Airflow's [core] max_map_length default
    # The native stack (tagging.ops.stack): a Celery worker's own name, the PostgreSQL
    # server binaries (default: Debian's newest) and the user they run as when we are root.
    worker_name: str | None = None
    pg_bindir: Path | None = None
    pg_user: str = "postgres"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        def root(name: str) -> Root | None:
            return Root(env[name]) if env.get(name) else None

        try:
            return cls(
                home=path(HOME_ENV) or d.home,
                registry=root(REGISTRY_ENV),
                catalogue=root(CATALOGUE_ENV),
                image_root=root(IMAGE_ROOT_ENV),
                fashion_mnist_dir=path(DATA_ENV) or d.fashion_mnist_dir,
                real_photos=env.get(REAL_PHOTOS_ENV) or None,
                schedule=env.get(SCHEDULE_ENV) or d.schedule,
                start_date=datetime.fromisoformat(env[START_DATE_ENV])
                if env.get(START_DATE_ENV) else d.start_date,
                max_active_runs=int(env.get(MAX_ACTIVE_RUNS_ENV) or d.max_active_runs),
                training_pool=env.get(TRAINING_POOL_ENV) or d.training_pool,
                shard_retries=int(env.get(SHARD_RETRIES_ENV) or d.shard_retries),
                shard_retry_delay_s=float(env.get(SHARD_RETRY_DELAY_ENV)
                                          or d.shard_retry_delay_s),
                training_queue=env.get(TRAINING_QUEUE_ENV) or d.training_queue,
                tagging_queue=env.get(TAGGING_QUEUE_ENV) or d.tagging_queue,
                max_map_length=int(env.get(MAX_MAP_LENGTH_ENV) or d.max_map_length),
                worker_name=env.get(WORKER_NAME_ENV) or None,
                pg_bindir=path(PG_BINDIR_ENV),
                pg_user=env.get(PG_USER_ENV) or d.pg_user,
            )
        except (ValueError, StorageError) as e:
            raise ConfigError(f"bad TAGGING_* environment variable: {e}") from None

    @property
    def registry_root(self) -> Root:
        return self.registry or Root(self.home / "registry")

    @property
    def catalogue_root(self) -> Root:
        return self.catalogue or Root(self.home / "catalogue")

    def image_root_for(self, catalogue: Root | Path | str) -> Root:
        """Root that `image_uri` values are resolved under (never escaped)."""
        return self.image_root or Root(catalogue) / "images"

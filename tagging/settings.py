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
# The review queue (tagging.review): its store, who the reviewer is, what is asked.
REVIEW_DB_ENV = "TAGGING_REVIEW_DB"
REVIEW_USER_HEADER_ENV = "TAGGING_REVIEW_USER_HEADER"
REVIEW_ORIGINS_ENV = "TAGGING_REVIEW_ORIGINS"
REVIEW_AUDIT_SHARE_ENV = "TAGGING_REVIEW_AUDIT_SHARE"
REVIEW_AUDIT_SEED_ENV = "TAGGING_REVIEW_AUDIT_SEED"
REVIEW_LEASE_ENV = "TAGGING_REVIEW_LEASE_S"
# Alerts (tagging.ops.alerts): each channel is off while its variable is unset. The webhook's
# URL (a secret for Slack) lives in an Airflow connection; email goes through Airflow's SMTP
# connection ([email] email_conn_id, smtp_default) to these recipients.
ALERT_WEBHOOK_CONN_ENV = "TAGGING_ALERT_WEBHOOK_CONN"
ALERT_EMAIL_TO_ENV = "TAGGING_ALERT_EMAIL_TO"
ALERT_BACKLOG_DAYS_ENV = "TAGGING_ALERT_BACKLOG_DAYS"
# Airflow's own setting: the most mapped task instances one task may expand to.
MAX_MAP_LENGTH_ENV = "AIRFLOW__CORE__MAX_MAP_LENGTH"

CACHE_ENV = "TAGGING_CACHE_DIR"

# Rebuildable local files (Fashion-MNIST download, converted encoders, feature caches).
DEFAULT_CACHE = Path.home() / ".cache" / "catalogue-tagging"


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
    commit_retries: int = 15  # retries against publishers of other days (delta-rs's and ours)


@dataclass(frozen=True)
class LoopPolicy:
    """The learning loop's defaults: the DAG's params, the CLI's options and the pipeline's
    functions all start from these (the gate's own thresholds: model_registry.GatePolicy)."""

    harvest_days: int = 30  # partitions harvested for verified labels, up to the run's day
    min_new_labels: int = 50  # new train-side labels needed before a retrain
    target_precision: float = 0.95  # of the tags published without review, on the holdout
    retag_days: int = 7  # days before the run's re-tagged after a promotion
    # validate: a day fails when its live accuracy is this far below the version's holdout
    # accuracy (on at least min_verified verified rows), or its review rate this far above
    # the version's expected rate
    live_accuracy_margin: float = 0.10
    review_rate_margin: float = 0.15
    min_verified: int = 20


@dataclass(frozen=True)
class LoopDemoPolicy:
    """`tagging demo --real-photos`: a few hundred photos over a few days, most of each day
    verified, and a lower bar to retrain than in production, so the loop turns in days."""

    reveal: float = 0.8  # share of each day's rows with verified_category
    min_new_labels: int = 40


@dataclass(frozen=True)
class Settings:
    """Where things live and how the DAG runs; every field has an environment variable."""

    home: Path = Path("var")
    # Roots: a local path or s3://bucket/prefix (tagging.storage; AWS_* for the endpoint)
    registry: Root | None = None  # default: home/registry
    catalogue: Root | None = None  # default: home/catalogue
    image_root: Root | None = None  # default: catalogue/images
    fashion_mnist_dir: Path = DEFAULT_CACHE / "fashion-mnist"
    cache_dir: Path = DEFAULT_CACHE
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
                cache_dir=path(CACHE_ENV) or d.cache_dir,
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


@dataclass(frozen=True)
class AlertSettings:
    """Who is told when something goes wrong, and how (tagging.ops.alerts)."""

    webhook_conn: str | None = None  # an Airflow connection whose host is the webhook URL
    email_to: tuple[str, ...] = ()  # recipients; the SMTP server: Airflow's SMTP connection
    # a review backlog is alerted when the oldest unanswered photo was queued longer ago
    backlog_days: float = 7.0
    timeout_s: float = 10.0  # a webhook that does not answer within this is given up

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AlertSettings:
        env = os.environ if env is None else env
        try:
            backlog = float(env.get(ALERT_BACKLOG_DAYS_ENV) or cls.backlog_days)
        except ValueError as e:
            raise ConfigError(f"bad {ALERT_BACKLOG_DAYS_ENV}: {e}") from None
        if backlog < 0:
            raise ConfigError(f"{ALERT_BACKLOG_DAYS_ENV} must be >= 0, got {backlog}")
        to = tuple(a.strip() for a in (env.get(ALERT_EMAIL_TO_ENV) or "").split(",")
                   if a.strip())
        return cls(webhook_conn=env.get(ALERT_WEBHOOK_CONN_ENV) or None, email_to=to,
                   backlog_days=backlog)


@dataclass(frozen=True)
class ReviewSettings:
    """The review queue: where answers are kept, who a reviewer is, what is asked."""

    # A SQLite file (WAL) or a postgresql:// URL; default: <catalogue>/review/review.db.
    db: str | None = None
    # The trusted header the single-sign-on proxy sets to the signed-in user.
    user_header: str = "X-Forwarded-User"
    # Origins allowed to POST besides the app's own (a proxy that rewrites Host).
    allowed_origins: tuple[str, ...] = ()
    # Share of rows published without review that are asked anyway (unbiased ground
    # truth), chosen by a hash of the product id and the seed: the same rows every fill.
    audit_share: float = 0.05
    audit_seed: str = "review-audit-v1"
    lease_s: float = 600.0  # a claimed photo returns to the queue after this long
    max_photo_bytes: int = 20 * 1024 * 1024  # photos larger than this are not served
    fill_days: int = 30  # the newest published days the queue is filled from

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ReviewSettings:
        env = os.environ if env is None else env
        d = cls()
        try:
            share = float(env.get(REVIEW_AUDIT_SHARE_ENV) or d.audit_share)
            lease = float(env.get(REVIEW_LEASE_ENV) or d.lease_s)
        except ValueError as e:
            raise ConfigError(f"bad TAGGING_REVIEW_* environment variable: {e}") from None
        if not 0 <= share <= 1 or lease <= 0:
            raise ConfigError(f"{REVIEW_AUDIT_SHARE_ENV} must be in [0, 1] and "
                              f"{REVIEW_LEASE_ENV} > 0 (got {share}, {lease})")
        origins = tuple(o.strip().rstrip("/") for o in
                        (env.get(REVIEW_ORIGINS_ENV) or "").split(",") if o.strip())
        return cls(db=env.get(REVIEW_DB_ENV) or None,
                   user_header=env.get(REVIEW_USER_HEADER_ENV) or d.user_header,
                   allowed_origins=origins, audit_share=share,
                   audit_seed=env.get(REVIEW_AUDIT_SEED_ENV) or d.audit_seed, lease_s=lease)

    def db_for(self, catalogue: Root | Path | str) -> str:
        """The store's location: TAGGING_REVIEW_DB, else a file under a local catalogue."""
        found = self.db_or_none(catalogue)
        if found is None:
            raise ConfigError(f"the catalogue {catalogue} is not a local path: set "
                              f"{REVIEW_DB_ENV} (a SQLite file or a postgresql:// URL)")
        return found

    def db_or_none(self, catalogue: Root | Path | str) -> str | None:
        """db_for, or None when there is no store to use: a catalogue on object storage
        and no TAGGING_REVIEW_DB (the DAG's review steps then do nothing)."""
        if self.db:
            return self.db
        root = Root(catalogue)
        return None if root.is_remote else str(root.path / "review" / "review.db")

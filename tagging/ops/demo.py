"""The demos, on the real DAG with Airflow on SQLite (ops.local): `tagging demo`.

`run_demo` (`make demo`) runs the DAG once per day over a demo catalogue and summarises what
was published; `run_loop_demo` (`tagging demo --real-photos DIR`) spreads a labelled photo
folder over days with part of each day verified and runs the learning loop day by day. Both
return typed summaries; the loop demo also writes its details (the gate's reasons, the live
quality) to a JSON file.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tagging import settings
from tagging.catalogue.layout import input_dir, published_dir
from tagging.catalogue.published import read_manifest
from tagging.catalogue.table import open_table, table_root
from tagging.labels import CATEGORY_SLUGS
from tagging.ops.airflow import last_error
from tagging.ops.local import LocalAirflow
from tagging.settings import LoopDemoPolicy

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the demo catalogue


@dataclass
class DemoDay:
    """One day of `tagging demo`: the DAG run and what it published."""

    partition: str
    ok: bool
    seconds: float
    log: str
    published: str | None = None  # where the day is in the tagged table
    model_version: str | None = None
    rows: int = 0
    tagged: int = 0
    errors: int = 0
    needs_review: int = 0
    accuracy: float | None = None  # against the demo's true_category
    error: str | None = None  # why the run failed (the log's last exception)


@dataclass
class DemoRun:
    """Where `tagging demo` ran, and each day."""

    airflow_home: str
    catalogue: str
    table: str  # the tagged Delta table
    table_version: int | None  # its version after the demo (None: nothing published)
    registry: str
    champion: str | None
    days: list[DemoDay]
    champion_input: str | None = None  # "pixels" or the encoder its features come from
    champion_accuracy: float | None = None  # on the Fashion-MNIST test split

    @property
    def failed(self) -> list[str]:
        return [d.partition for d in self.days if not d.ok]


def run_demo(workdir: Path, dates: list[str], *, train_overrides: dict | None = None,
             gate_overrides: dict | None = None, params: dict | None = None,
             data_dir: Path | None = None) -> DemoRun:
    """Run the DAG once per day (demo catalogue already under workdir/catalogue); summarise.

    `train_overrides` / `gate_overrides` become the runs' `train` / `gate` params; `params`
    sets any other DAG param (e.g. max_review_rate); `data_dir` is the Fashion-MNIST
    directory the DAG trains on (default: $TAGGING_FASHION_MNIST_DIR, else the cache).
    """
    from tagging.catalogue.validate import truth_agreement

    local = _local_airflow(workdir, data_dir)
    local.setup()
    conf = {**(params or {}), "train": train_overrides or {}, "gate": gate_overrides or {}}
    days = []
    for date in dates:
        start = time.perf_counter()
        ok = local.dag_test(date, conf)
        day = DemoDay(partition=date, ok=ok, seconds=round(time.perf_counter() - start, 1),
                      log=str(local.dag_test_log(date)))
        manifest = read_manifest(local.catalogue, date) if ok else None
        if manifest:
            truth = truth_agreement(local.catalogue, date)
            day.published = str(published_dir(local.catalogue, date))
            day.model_version = manifest["model_version"]
            counts = manifest["counts"]
            day.rows, day.tagged = counts["rows"], counts["tagged"]
            day.errors, day.needs_review = counts["errors"], counts["needs_review"]
            day.accuracy = truth.get("accuracy_vs_true_category")
        elif not ok:
            day.error = last_error(local.dag_test_log(date))
        days.append(day)
    return DemoRun(airflow_home=str(local.home), catalogue=str(local.catalogue),
                   table=str(table_root(local.catalogue)),
                   table_version=_table_version(local.catalogue),
                   registry=str(local.registry), champion=_champion(local.registry), days=days,
                   **_champion_figures(local.registry))


def _local_airflow(workdir: Path | str, data_dir: Path | str | None) -> LocalAirflow:
    extra_env = {settings.DATA_ENV: str(Path(data_dir).absolute())} if data_dir else {}
    return LocalAirflow.in_workdir(Path(workdir), extra_env=extra_env)


def _table_version(catalogue: Path) -> int | None:
    table = open_table(catalogue)
    return table.version() if table is not None else None


def _champion(registry: Path) -> str | None:
    from tagging.model.registry import open_registry

    return open_registry(registry).champion()


def _champion_figures(registry: Path) -> dict:
    """The champion's input and Fashion-MNIST test accuracy (none without a champion)."""
    from model_registry.render import input_of
    from tagging.model.registry import open_registry

    found = open_registry(registry)
    if found.champion() is None:
        return {}
    meta = found.get("champion").metadata
    return {"champion_input": input_of(meta), "champion_accuracy": meta["metrics"]["accuracy"]}


# ---------------------------------------------------------------- the learning loop


@dataclass
class GateEvent:
    version: str
    event: str  # "promoted" or "refused"
    reasons: list[str]


@dataclass
class LoopDay:
    """One day of the loop demo: the run, the gate, the champion, the day's live quality."""

    partition: str
    ok: bool
    trained: list[str]  # versions registered by the run
    gate: list[GateEvent]
    champion: str | None
    holdout_photos: int | None  # the champion's held-out real-photo figures
    holdout_accuracy: float | None
    holdout_coverage: float | None
    quality: dict  # the day's live quality (tagging.catalogue.quality.live_quality)
    retagged: list[str]  # earlier days re-tagged by the run
    error: str | None = None


@dataclass
class LoopDemoRun:
    """Where the loop demo ran, each day, and the JSON file with all of it."""

    airflow_home: str
    catalogue: str
    registry: str
    champion: str | None
    days: list[LoopDay]
    details: str  # the JSON file

    @property
    def failed(self) -> list[str]:
        return [d.partition for d in self.days if not d.ok]


def photo_days(photos: int, days: int, reveal: float, seed: int
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per day: which photos (manifest row numbers, seeded order) and which of them are
    verified (a `reveal` share)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(photos)
    return [(picks, rng.random(len(picks)) < reveal)
            for picks in np.array_split(order, days)]


def real_photo_days(folder: Path | str, catalogue_root: Path | str, dates: list[str], *,
                    reveal: float, seed: int = 0) -> list[Path]:
    """Spread a labelled photo folder over `dates` as catalogue partitions.

    Each photo becomes one product (in a seeded order, so every day mixes classes); a
    `reveal` share of each day's rows carry `verified_category` (what merchandisers
    confirmed), and every row keeps its `true_category` for the demo's accuracy.
    """
    folder = Path(folder)
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    written = []
    for day, (picks, shown) in zip(dates, photo_days(len(rows), len(dates), reveal, seed),
                                   strict=True):
        chosen = [rows[i] for i in picks]
        slugs = [CATEGORY_SLUGS[int(r["label"])] for r in chosen]
        table = pa.table({
            "product_id": [f"sku-{Path(r['file']).stem}" for r in chosen],
            "image": pa.array([(folder / "images" / r["file"]).read_bytes() for r in chosen],
                              pa.binary()),
            "true_category": pa.array(slugs, pa.string()),
            "verified_category": pa.array([s if v else None for s, v in zip(
                slugs, shown, strict=True)], pa.string()),
        })
        out = input_dir(catalogue_root, day).path / "part-0.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        pq.write_table(table, tmp, row_group_size=64)
        tmp.replace(out)
        written.append(out)
        log.info("wrote %s: %d photos, %d verified", out, table.num_rows, int(shown.sum()))
    return written


def run_loop_demo(workdir: Path | str, photos: Path | str, dates: list[str], *,
                  reveal: float = LoopDemoPolicy.reveal, params: dict | None = None,
                  train: dict | None = None, gate: dict | None = None,
                  data_dir: Path | str | None = None) -> LoopDemoRun:
    """The loop end to end on the real DAG: a photo folder spread over `dates`, one run a day.

    Per day: whether the run succeeded, what the gate did (from the registry's event log),
    the champion with its holdout figures, the live quality of the day's published tags, and
    which earlier days were re-tagged; all of it also in `<workdir>/loop-demo.json`.
    """
    from tagging.model.registry import open_registry

    local = _local_airflow(workdir, data_dir)
    real_photo_days(photos, local.catalogue, dates, reveal=reveal)
    local.setup()
    conf = {**(params or {}), "train": train or {}, "gate": gate or {}}
    registry = open_registry(local.registry)
    days = []
    for day in dates:
        seen = len(registry.events())
        before = {d: _tagged_by(local.catalogue, d) for d in dates}
        ok = local.dag_test(day, conf)
        events = registry.events()[seen:]
        champion = registry.champion()
        real = (registry.get(champion).metadata["metrics"].get("real_photos") or {}
                if champion else {})
        days.append(LoopDay(
            partition=day, ok=ok,
            trained=[e["version"] for e in events if e["event"] == "register"],
            gate=[GateEvent(e["version"], e["event"], e["reasons"]) for e in events
                  if e["event"] in ("promoted", "refused")],
            champion=champion, holdout_photos=real.get("n"),
            holdout_accuracy=real.get("accuracy"),
            holdout_coverage=real.get("published_coverage"),
            quality=(read_manifest(local.catalogue, day) or {}).get("quality", {}),
            retagged=[d for d in dates if d != day and before[d] is not None
                      and _tagged_by(local.catalogue, d) != before[d]],
            error=None if ok else last_error(local.dag_test_log(day))))
    run = LoopDemoRun(airflow_home=str(local.home), catalogue=str(local.catalogue),
                      registry=str(local.registry), champion=registry.champion(), days=days,
                      details=str(Path(workdir).absolute() / "loop-demo.json"))
    Path(run.details).write_text(json.dumps(asdict(run), indent=2))
    return run


def _tagged_by(catalogue_root: Path, day: str) -> str | None:
    """The model version of the day's published partition (None: not published)."""
    return (read_manifest(catalogue_root, day) or {}).get("model_version")

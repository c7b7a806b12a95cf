"""Every location of a catalogue, in one place (readers of published output:
catalogue.published). A catalogue root is a local folder or an
s3://bucket/prefix (tagging.storage); the layout is the same on both:

    incoming/dt=YYYY-MM-DD/*.parquet             input, never modified
    _staging/dt=YYYY-MM-DD/<run_id>/shard-N      one object per shard, written whole
    tagged/                                      the Delta Lake table, partitioned by dt
    tagged/_manifests/dt=YYYY-MM-DD/<n>.json     a publication's manifest (tagging.catalogue
                                                 .table: the commit points at it)
    images/                                      image_uri root (default; TAGGING_IMAGE_ROOT)
    labels/                                      the label store (tagging.loop.labelstore)
    reviews/dt=YYYY-MM-DD/answers.parquet        the day's review answers (tagging.catalogue
                                                 .answers; written by tagging.review.export)
"""

from __future__ import annotations

from tagging import storage
from tagging.errors import PartitionNotFound
from tagging.settings import Settings
from tagging.storage import Root, as_root

ANSWERS = "answers.parquet"
PARTITION_KEY = "dt"  # readers take the hive key from the path: an input column must not


def incoming_root(catalogue_root: Root | str) -> Root:
    """incoming/: the input partitions."""
    return as_root(catalogue_root) / "incoming"


def input_dir(catalogue_root: Root | str, date: str) -> Root:
    return incoming_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def input_files(catalogue_root: Root | str, date: str) -> list[Root]:
    """The partition's input Parquet files, sorted; PartitionNotFound when there are none.

    Listed as Parquet readers list a dataset: names starting with "." or "_" (a writer's
    temporary file, _SUCCESS, _metadata) are not part of it; nor are sub-folders.
    """
    folder = input_dir(catalogue_root, date)
    files = [o.root for o in storage.list_objects(folder)
             if o.root.parent == folder and o.root.name.endswith(".parquet")
             and not o.root.name.startswith((".", "_"))]
    if not files:
        raise PartitionNotFound(f"no input files in {folder}")
    return files


def has_input(catalogue_root: Root | str, date: str) -> bool:
    """Whether the day has input files (input_files would find some)."""
    try:
        return bool(input_files(catalogue_root, date))
    except PartitionNotFound:
        return False


def tagged_root(catalogue_root: Root | str) -> Root:
    """tagged/: the Delta table (read it through tagging.catalogue.published)."""
    return as_root(catalogue_root) / "tagged"


def published_dir(catalogue_root: Root | str, date: str) -> Root:
    """Where the day's rows are in the tagged table (read them with Delta, not a glob)."""
    return tagged_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def images_dir(catalogue_root: Root | str) -> Root:
    """images/: where `image_uri` values resolve unless TAGGING_IMAGE_ROOT says otherwise."""
    return as_root(catalogue_root) / "images"


def image_root_for(catalogue_root: Root | str, settings: Settings | None = None) -> Root:
    """Root that `image_uri` values are resolved under (never escaped): TAGGING_IMAGE_ROOT
    (settings.image_root), else the catalogue's images/."""
    settings = settings or Settings.from_env()
    return settings.image_root or images_dir(catalogue_root)


def label_store_dir(catalogue_root: Root | str) -> Root:
    """labels/: the label store (tagging.loop.labelstore)."""
    return as_root(catalogue_root) / "labels"


def staging_root(catalogue_root: Root | str) -> Root:
    """_staging/: shards written by runs not yet published."""
    return as_root(catalogue_root) / "_staging"


def staging_day(catalogue_root: Root | str, date: str) -> Root:
    """_staging/dt=DATE: one folder of shard objects per run tagging the day."""
    return staging_root(catalogue_root) / f"{PARTITION_KEY}={date}"


def staging_dir(catalogue_root: Root | str, date: str, run_id: str) -> Root:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return staging_day(catalogue_root, date) / safe


def shard_path(catalogue_root: Root | str, date: str, run_id: str, index: int) -> Root:
    """Where shard `index` of a run is staged."""
    return staging_dir(catalogue_root, date, run_id) / f"shard-{index:05d}.parquet"


def reviews_root(catalogue_root: Root | str) -> Root:
    return as_root(catalogue_root) / "reviews"


def answers_path(catalogue_root: Root | str, date: str) -> Root:
    """reviews/dt=DATE/answers.parquet: the day's winning review answers."""
    return reviews_root(catalogue_root) / f"{PARTITION_KEY}={date}" / ANSWERS

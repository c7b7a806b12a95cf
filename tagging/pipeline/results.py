"""What the pipeline's steps return: typed, JSON-able (they travel through XCom).

Only typing here: the DAG imports this module when it is parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from tagging.catalogue.validate import ValidationReport
    from tagging.loop.labelstore import HarvestedSource


class HarvestSummary(TypedDict):
    """The label store after a harvest, and what the harvest did."""

    store: str
    harvested: list[HarvestedSource]  # sources that were new or changed
    unchanged: list[str]  # sources skipped: unchanged since their last harvest
    labels: int
    train: int
    holdout: int
    rejected: dict[str, int]  # reason -> rows, over the whole store


class CandidateRef(TypedDict):
    version: str
    reused: bool  # the champion was reused: nothing new to gate
    reason: str  # why the champion was reused although the labels changed ("" otherwise)


class GateOutcome(TypedDict):
    candidate: str
    promoted: bool
    reasons: list[str]
    champion: str


class RunPlan(TypedDict):
    """Pinned once per run, so every shard uses the same model and timestamp."""

    partition: str
    model_version: str
    already_published: bool
    tagged_at: str


class Publication(TypedDict):
    path: str
    newly_published: bool


class RetaggedDay(TypedDict):
    partition: str
    model_version: str
    rows: int


class ValidatedRun(TypedDict):
    """The run's partition as validated, and whether the run published it."""

    validation: ValidationReport
    path: str
    newly_published: bool

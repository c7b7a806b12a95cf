"""What the pipeline's steps return: typed, JSON-able (they travel through XCom)."""

from __future__ import annotations

from typing import TypedDict


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

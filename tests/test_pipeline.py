"""The DAG's steps as plain functions, without Airflow: real registry, real catalogue."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from helpers import copy_registry

from tagging.errors import TaggingError
from tagging.model.registry import open_registry
from tagging.pipeline.learn import promote_unless_reused
from tagging.pipeline.results import CandidateRef
from tagging.pipeline.tag import choose_partition, plan_run


def test_partition_comes_from_the_param_then_the_logical_date():
    logical = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert choose_partition("2026-02-01", logical, None) == ("2026-02-01", "the 'partition' param")
    assert choose_partition(None, logical, None) == ("2026-03-01", "the run's logical date")
    assert choose_partition(None, None, logical)[1] == "the run's data interval start"


@pytest.mark.parametrize(("requested", "message"), [
    ("2026-13-01", "not a YYYY-MM-DD date"),
    (None, "no logical date"),
])
def test_bad_partition_is_a_clear_error(requested, message):
    with pytest.raises(TaggingError, match=message):
        choose_partition(requested, None, None)


@pytest.fixture
def registry(tmp_path, champion_registry, monkeypatch):
    """A private copy of the quick champion's registry, configured through the environment."""
    root = copy_registry(champion_registry, tmp_path / "registry")
    monkeypatch.setenv("TAGGING_REGISTRY", str(root))
    monkeypatch.setenv("TAGGING_CATALOGUE", str(tmp_path / "catalogue"))
    return open_registry(root)


def test_a_reused_champion_is_not_gated_again(registry):
    outcome = promote_unless_reused(CandidateRef(version="v0001", reused=True), {}, actor="t")
    assert outcome == {"candidate": "v0001", "promoted": False, "reasons": [],
                       "champion": "v0001"}
    assert [e["event"] for e in registry.events()] == ["register", "promoted"]  # no new event


def test_a_refused_candidate_keeps_the_champion(registry, tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(registry.get("v0001").path, artifact,
                    ignore=shutil.ignore_patterns("metadata.json"))
    for path in [artifact, *artifact.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    meta = registry.get("v0001").metadata
    caller = {k: meta[k] for k in ("input", "eval_data_fingerprint",
                                   "training_data_fingerprint", "hyperparameters",
                                   "library_versions")}
    worse = registry.register(artifact, {**caller, "metrics": {**meta["metrics"], "accuracy": 0.1}},
                              created_by="t")
    outcome = promote_unless_reused(CandidateRef(version=worse, reused=False), {}, actor="t")
    assert outcome["promoted"] is False and outcome["champion"] == "v0001"
    assert any("accuracy 0.1000 < floor" in r for r in outcome["reasons"]), outcome


def test_bad_gate_param_and_no_champion_are_clear_errors(registry, tmp_path, monkeypatch):
    with pytest.raises(TaggingError, match="bad 'gate' param"):
        promote_unless_reused(CandidateRef(version="v0001", reused=True), {"floor": 1},
                              actor="t")
    monkeypatch.setenv("TAGGING_REGISTRY", str(tmp_path / "empty"))
    with pytest.raises(TaggingError, match="no champion model"):
        promote_unless_reused(CandidateRef(version="v0001", reused=True), {}, actor="t")


def test_run_plan_pins_the_champion(registry):
    plan = plan_run("2026-03-01", None)
    assert plan["model_version"] == "v0001" and plan["already_published"] is False
    assert datetime.fromisoformat(plan["tagged_at"]).tzinfo is not None

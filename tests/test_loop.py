"""The loop's steps on a small catalogue of photos: harvest, holdout scores, re-tagging."""

from __future__ import annotations

import pytest
from conftest import LOW_GATE
from helpers import read_input

from model_registry import GatePolicy, Registry
from tagging.catalogue.published import read_manifest, read_published
from tagging.catalogue.table import history
from tagging.encoder import DEFAULT_ENCODER
from tagging.loop.holdout import holdout_comparison
from tagging.model.config import TrainConfig
from tagging.model.inputs import ModelInput
from tagging.model.train import train_candidate
from tagging.ops.demo import real_photo_days
from tagging.pipeline.learn import current_labels, days_to_retag, harvest_labels, retag
from tagging.pipeline.tag import tag_partition

DAYS = ["2026-04-01", "2026-04-02", "2026-04-03"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, photo_set):
    """The 41 labelled photos (one broken) spread over DAYS, 70 % of rows verified."""
    root = tmp_path_factory.mktemp("catalogue")
    real_photo_days(photo_set, root, DAYS, reveal=0.7, seed=1)
    return root


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, fmnist_dir):
    """A registry with two tiny versions; v0001 is champion."""
    root = tmp_path_factory.mktemp("registry")
    for seed in (0, 1):
        train_candidate(TrainConfig(train_subset=1500, epochs=1, hidden_units=(16,), seed=seed),
                        labelled=None, registry_root=root, data_dir=fmnist_dir,
                        created_by="tests")
    Registry(root).promote("v0001", policy=GatePolicy(**LOW_GATE), actor="tests", force=True)
    return root


def test_demo_days_reveal_part_of_each_day(catalogue):
    tables = [read_input(catalogue, d) for d in DAYS]
    assert sum(t.num_rows for t in tables) == 41
    verified = sum(t["verified_category"].null_count for t in tables)
    assert 0 < verified < 41
    for table in tables:
        assert table["true_category"].null_count == 0
        assert len(set(table["product_id"].to_pylist())) == table.num_rows


def test_harvest_labels_counts_and_is_idempotent(catalogue):
    first = harvest_labels(catalogue, DAYS[-1], harvest_days=30, workers=2,
                           encoder=DEFAULT_ENCODER)
    verified = sum(read_input(catalogue, d)["verified_category"]
                   .drop_null().__len__() for d in DAYS)
    assert len(first["harvested"]) == 3
    accepted = sum(h["accepted"] for h in first["harvested"])
    rejected = sum(first["rejected"].values())
    assert accepted + rejected == verified and first["labels"] == accepted
    assert first["train"] + first["holdout"] == accepted
    again = harvest_labels(catalogue, DAYS[-1], harvest_days=30, workers=2,
                           encoder=DEFAULT_ENCODER)
    assert again["harvested"] == [] and again["unchanged"] == [f"dt={d}" for d in DAYS]
    assert {k: again[k] for k in ("labels", "train", "holdout")} == {
        k: first[k] for k in ("labels", "train", "holdout")}
    # a window of one day only looks at that day
    one = harvest_labels(catalogue, DAYS[0], harvest_days=1, encoder=DEFAULT_ENCODER)
    assert one["unchanged"] == [f"dt={DAYS[0]}"]
    # the features of another encoder are another harvest
    other = harvest_labels(catalogue, DAYS[0], harvest_days=1, encoder="efficientnet-lite1")
    assert [h["source"] for h in other["harvested"]] == [f"dt={DAYS[0]}"]
    harvest_labels(catalogue, DAYS[0], harvest_days=1, encoder=DEFAULT_ENCODER)


def test_holdout_comparison_scores_both_versions_on_the_same_photos(catalogue, two_versions):
    harvest_labels(catalogue, DAYS[-1], workers=2, encoder=DEFAULT_ENCODER)
    holdout = current_labels(catalogue).holdout
    assert holdout.features[ModelInput(DEFAULT_ENCODER).key].shape[1] == 1280
    scores = holdout_comparison(two_versions, "v0002", "v0001", holdout)
    assert scores["photos"] == len(holdout.labels) > 0
    n = scores["photos"]
    difference = scores["candidate_only_correct"] - scores["champion_only_correct"]
    assert scores["candidate_accuracy"] - scores["champion_accuracy"] == pytest.approx(
        difference / n, abs=1e-3)
    assert holdout_comparison(two_versions, "v0002", None, holdout) is None


def test_retag_republishes_the_previous_days_with_the_new_champion(catalogue, two_versions):
    for day in DAYS[:2]:
        tag_partition(catalogue, day, registry_root=two_versions, model="v0001", workers=2)
    commits = len(history(catalogue, DAYS[0]))
    assert days_to_retag(catalogue, DAYS[2], 7, "v0002") == DAYS[:2]
    assert days_to_retag(catalogue, DAYS[2], 1, "v0002") == DAYS[1:2]
    assert days_to_retag(catalogue, DAYS[2], 7, "v0001") == []
    done = retag(catalogue, DAYS[:2], registry_root=two_versions, version="v0002", workers=2)
    assert [d["partition"] for d in done] == DAYS[:2]
    for day in DAYS[:2]:
        manifest = read_manifest(catalogue, day)
        assert manifest["model_version"] == "v0002"
        table = read_published(catalogue, day)
        assert set(table["model_version"].to_pylist()) == {"v0002"}
    assert len(history(catalogue, DAYS[0])) == commits + 1
    assert days_to_retag(catalogue, DAYS[2], 7, "v0002") == []


def holdout_scores(n: int, candidate_only: int, champion_only: int, base: int) -> dict:
    """Paired holdout figures: `base` photos both get right, plus the discordant ones."""
    return {"photos": n, "champion": "v0001", "candidate": "v0002",
            "candidate_accuracy": (base + candidate_only) / n,
            "champion_accuracy": (base + champion_only) / n,
            "candidate_only_correct": candidate_only, "champion_only_correct": champion_only}


def test_gate_refuses_a_candidate_clearly_worse_on_the_holdout():
    from model_registry.gate import evaluate_gate

    meta = {"metrics": {"accuracy": 0.88, "per_class_recall": [0.8] * 10},
            "eval_data_fingerprint": "same"}
    worse_fmnist = {**meta, "metrics": {**meta["metrics"], "accuracy": 0.86}}
    policy = GatePolicy()

    # 400 photos, the candidate loses 40 more than it wins: worse beyond noise -> refused
    refused = evaluate_gate("v0002", meta, "v0001", meta, policy,
                            holdout=holdout_scores(400, 10, 50, 250))
    assert not refused.passed
    assert refused.reasons[0].startswith("holdout (400 real photos, champion re-scored)")
    # the same share worse on 20 photos is within the noise: the benefit of the doubt
    small = evaluate_gate("v0002", meta, "v0001", meta, policy,
                          holdout=holdout_scores(20, 0, 2, 12))
    assert small.passed, small.reasons
    # with holdout scores, Fashion-MNIST only has to meet the floors (0.86 >= 0.85)
    better = evaluate_gate("v0002", worse_fmnist, "v0001", meta, policy,
                           holdout=holdout_scores(400, 30, 5, 250))
    assert better.passed, better.reasons
    # scores measured against another champion are not a comparison
    stale = evaluate_gate("v0002", meta, "v0003", meta, policy,
                          holdout=holdout_scores(400, 30, 5, 250))
    assert not stale.passed and "for champion v0001" in stale.reasons[0]


def test_labels_and_quality_commands(catalogue, two_versions, tmp_path, capsys):
    """`tagging labels harvest|status` and `tagging quality` on the module's catalogue."""
    from tagging.cli import main

    assert main(["labels", "harvest", "--catalogue", str(catalogue), "--date", DAYS[-1],
                 "--days", "3"]) == 0
    assert "unchanged since its last harvest" in capsys.readouterr().out
    assert main(["labels", "status", "--catalogue", str(catalogue)]) == 0
    out = capsys.readouterr().out
    assert "label store" in out and "Ankle boot" in out and f"dt={DAYS[0]}" in out
    assert main(["quality", "--catalogue", str(catalogue), "--out",
                 str(tmp_path / "q.png")]) == 0
    out = capsys.readouterr().out
    assert DAYS[0] in out and "v0002" in out
    assert (tmp_path / "q.png").stat().st_size > 5000

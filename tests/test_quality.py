"""Live quality of published tags against verified rows, and the checks built on it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from model_registry import Registry
from tagging.catalogue.demo import generate_demo_catalogue
from tagging.catalogue.publications import publication_history
from tagging.catalogue.quality import check_live_quality, live_quality
from tagging.catalogue.table import commit_day
from tagging.catalogue.validate import validate_partition
from tagging.errors import PartitionInvalid
from tagging.labels import is_holdout
from tagging.loop.quality import (
    expectations,
    expected_of,
    plot_quality,
    quality_history,
    trained_products,
)
from tagging.model.train import expected_review_rate
from tagging.pipeline.tag import tag_partition


def published(categories, review, verified) -> pa.Table:
    return pa.table({"category": pa.array(categories, pa.string()),
                     "needs_review": pa.array(review, pa.bool_()),
                     "verified_category": pa.array(verified, pa.string())})


def test_live_quality_counts_only_verified_tagged_rows():
    table = published(
        ["bag", "bag", "coat", "dress", None, "trouser"],
        [False, True, False, True, True, False],
        ["bag", "8", "shirt", None, "bag", "not-a-class"])
    quality = live_quality(table)
    assert quality["rows"] == 6 and quality["tagged"] == 5
    assert quality["verified"] == 3  # the untagged row and the unknown label do not count
    assert quality["accuracy"] == round(2 / 3, 4)
    assert quality["unflagged_precision"] == 0.5  # bag right, coat wrong
    assert quality["coverage"] == round(2 / 3, 4)
    assert quality["review_rate"] == 0.4
    assert quality["predicted"]["bag"] == 2 and sum(quality["predicted"].values()) == 5


def test_only_rows_the_version_did_not_train_on_are_graded():
    """A version is not graded on its own homework: the holdout side (hash split), or every
    product outside its train side when that is known."""
    ids = [f"sku-{i}" for i in range(40)]
    held = is_holdout(ids)
    assert 0 < held.sum() < 20
    # the model is right on every row it trained on, wrong on every other
    table = pa.table({"product_id": ids,
                      "category": ["bag" if not h else "coat" for h in held],
                      "needs_review": [False] * 40, "verified_category": ["bag"] * 40})
    quality = live_quality(table)
    assert quality["verified_all"] == 40 and quality["verified"] == held.sum()
    assert quality["accuracy"] == 0.0 and quality["graded_on"] == "holdout side"
    trained = {p for p, h in zip(ids, held, strict=True) if not h and p != "sku-0"}
    known = live_quality(table, trained_on=trained)
    assert known["verified"] == held.sum() + (not held[0])  # sku-0 arrived after training
    assert known["graded_on"] == "products the version did not train on"
    assert live_quality(table, trained_on=set(ids))["accuracy"] is None  # nothing unseen


def test_trained_products_are_the_train_side_up_to_the_versions_newest_label(tmp_path,
                                                                            photo_set):
    from tagging.loop.labelstore import LabelStore

    store = LabelStore(tmp_path / "labels")
    store.add_photo_folder(photo_set)
    table = store.table()
    newest = max(table["harvested_at"].to_pylist()).isoformat()
    meta = {"hyperparameters": {"label_store": str(store.root)},
            "metrics": {"labels": {"harvested_through": newest}}}
    train_side = {p for p, h in zip(table["product_id"].to_pylist(),
                                    table["holdout"].to_pylist(), strict=True) if not h}
    assert trained_products(tmp_path, meta) == train_side
    before = {**meta, "metrics": {"labels": {"harvested_through": "2000-01-01T00:00:00+00:00"}}}
    assert trained_products(tmp_path, before) == frozenset()
    assert trained_products(tmp_path, {"metrics": {}}) == frozenset()  # no label store


def test_checks_fail_below_the_holdout_and_above_the_expected_review_rate():
    expected = {"holdout_accuracy": 0.8, "expected_review_rate": 0.4}
    fine = {"verified": 200, "accuracy": 0.74, "review_rate": 0.5}
    assert check_live_quality(fine, expected, version="v0002") == ([], [])
    bad = {"verified": 200, "accuracy": 0.6, "review_rate": 0.6}
    problems = check_live_quality(bad, expected, version="v0002").problems
    assert len(problems) == 2
    assert problems[0].startswith("live accuracy 0.600 on 200 verified rows")
    assert "v0002's expected 0.400" in problems[1]
    # 0.64 on 25 rows is within the noise (not on 200), but a drop: a warning (alerted);
    # on 5 rows it is not checked at all
    noisy = check_live_quality({"verified": 25, "accuracy": 0.64}, expected, version="v")
    assert noisy.problems == []
    assert noisy.warnings == ["live accuracy 0.640 on 25 verified rows is more than 0.1 below "
                              "v's holdout accuracy 0.800 (too few rows to fail the day)"]
    assert check_live_quality({"verified": 200, "accuracy": 0.64}, expected,
                              version="v").problems
    assert not check_live_quality({"verified": 5, "accuracy": 0.0}, expected,
                                  version="v").problems
    assert check_live_quality(bad, {}, version="v") == ([], [])  # no real-photo figures


def test_a_tiny_holdout_sets_no_firm_expectation():
    """3 of 4 held-out photos right says little: 0.49 live is within both noises; not 0.2."""
    expected = {"holdout_accuracy": 0.75, "holdout_photos": 4, "expected_review_rate": 1.0}
    assert not check_live_quality({"verified": 37, "accuracy": 0.486}, expected,
                                  version="v").problems
    [problem] = check_live_quality({"verified": 37, "accuracy": 0.2}, expected,
                                   version="v").problems
    assert "on 4 photos (lower bound" in problem
    firm = {**expected, "holdout_photos": 400}
    assert check_live_quality({"verified": 37, "accuracy": 0.486}, firm, version="v").problems


def test_expectations_come_from_the_versions_held_out_figures():
    meta = {"metrics": {"real_photos": {"accuracy": 0.71, "expected_review_rate": 0.55}},
            "review": {"confidence_threshold": 0.8}}
    assert expectations(meta) == {"holdout_accuracy": 0.71, "holdout_photos": None,
                                  "expected_review_rate": 0.55, "reviews_everything": False}
    assert expectations({"metrics": {}}) == {"holdout_accuracy": None, "holdout_photos": None,
                                             "expected_review_rate": None,
                                             "reviews_everything": False}


def test_the_expected_review_rate_is_the_stored_policys():
    """A threshold of 1.0 reviews everything: expected 1.0, whatever else was measured."""
    assert expected_review_rate({"confidence_threshold": 1.0, "selection_coverage": 0.0}) == 1.0
    assert expected_review_rate({"confidence_threshold": 0.9, "selection_coverage": 0.62}) == 0.38
    # an old version's contradiction: threshold 1.0 stored, 0.844 from another calculation
    old = {"metrics": {"real_photos": {"accuracy": 0.7, "n": 20, "expected_review_rate": 0.844}},
           "review": {"confidence_threshold": 1.0}}
    assert expectations(old)["expected_review_rate"] == 1.0
    check = check_live_quality({"verified": 60, "accuracy": 0.7, "review_rate": 1.0},
                               expectations(old), version="v0004")
    assert check.problems == []
    assert check.warnings == [
        "v0004's review policy sends every tag to review (needs-review rate 1.000): it had too "
        "little held-out evidence to certify its target precision, so search gets no trusted "
        "tag from it"]


@pytest.fixture
def careful_registry(tmp_path, champion_registry) -> Registry:
    """The champion's weights registered twice more: as a version whose policy reviews
    everything (with the contradictory expected rate of issue 18), and as one that reviews
    little but expects less."""
    registry = Registry(tmp_path / "registry")
    champion = Registry(champion_registry).get("champion")
    for threshold, expected in ((1.0, 0.844), (0.0, 0.1)):
        artifact = tmp_path / f"artifact-{threshold}"
        shutil.copytree(champion.path, artifact,
                        ignore=shutil.ignore_patterns("metadata.json"))
        meta = {k: champion.metadata[k] for k in (
            "input", "eval_data_fingerprint", "training_data_fingerprint", "hyperparameters",
            "library_versions", "calibration")}
        meta["metrics"] = {**champion.metadata["metrics"], "real_photos": {
            "accuracy": 0.7, "n": 20, "expected_review_rate": expected}}
        meta["review"] = {"confidence_threshold": threshold}
        registry.register(artifact, meta, created_by="tests")
    return registry


def test_a_version_that_reviews_everything_passes_validation_with_a_warning(
        tmp_path, careful_registry, fmnist_dir):
    """Issue 18's day 4 in miniature: everything flagged by a careful version is valid."""
    catalogue = tmp_path / "catalogue"
    day = "2026-06-04"
    generate_demo_catalogue(catalogue, [day], rows_per_day=30, data_dir=fmnist_dir, workers=1)
    tag_partition(catalogue, day, registry_root=careful_registry.root, model="v0001",
                  workers=1)
    expected = expected_of(careful_registry.root, "v0001")
    report = validate_partition(catalogue, day, max_error_rate=0.2, expected=expected)
    assert report["review_rate"] == 1.0 and report["problems"] == []
    assert "sends every tag to review" in report["warnings"][0]
    # a version that promised a low review rate still fails when it reviews far more
    tag_partition(catalogue, day, registry_root=careful_registry.root, model="v0002",
                  review_threshold=1.0, workers=1)
    with pytest.raises(PartitionInvalid, match=r"needs-review rate 1\.000 > v0002.s expected"):
        validate_partition(catalogue, day, max_error_rate=0.2,
                           expected=expected_of(careful_registry.root, "v0002"))
    # what search saw: both publications of the day, in order
    history = publication_history(catalogue)
    assert [(h["model_version"], h["publication"]) for h in history] == [
        ("v0001", 1), ("v0002", 2)]
    assert history[0]["quality"]["review_rate"] == 1.0 and history[0]["counts"]["rows"] == 35
    # ... and the CLI lists them, oldest first
    shown = subprocess.run([sys.executable, "-m", "tagging.cli", "quality", "--catalogue",
                            str(catalogue), "--publications"], capture_output=True, text=True,
                           check=True).stdout
    rows = [line for line in shown.splitlines() if day in line]
    assert len(rows) == 2 and "v0001" in rows[0] and "v0002" in rows[1], shown
    assert "1.00" in rows[0]  # the first publication reviewed everything


def test_history_reads_manifests_and_plots(tmp_path):
    catalogue = tmp_path / "catalogue"
    for day, version, quality in (("2026-03-01", "v0001", {"accuracy": 0.5}),
                                  ("2026-03-02", "v0002", None)):
        rows = published(["bag", "coat"], [False, True], ["bag", "coat"])
        manifest = {"partition": day, "model_version": version, "columns": rows.column_names}
        if quality:
            manifest["quality"] = quality
        commit_day(catalogue, day, lambda rows=rows: rows.to_reader(), manifest)
    history = quality_history(catalogue)
    assert [h["partition"] for h in history] == ["2026-03-01", "2026-03-02"]
    assert history[0]["accuracy"] == 0.5  # recorded in the manifest
    assert history[1]["accuracy"] == 1.0 and history[1]["coverage"] == 0.5  # computed
    path = plot_quality(history, tmp_path / "quality.png")
    assert path.stat().st_size > 5000

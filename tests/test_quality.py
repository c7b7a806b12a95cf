"""Live quality of published tags against verified rows, and the checks built on it."""

from __future__ import annotations

import pyarrow as pa

from tagging.catalogue.table import commit_day
from tagging.loop.quality import (
    check_live_quality,
    expectations,
    live_quality,
    plot_quality,
    quality_history,
)


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


def test_checks_fail_below_the_holdout_and_above_the_expected_review_rate():
    expected = {"holdout_accuracy": 0.8, "expected_review_rate": 0.4}
    fine = {"verified": 200, "accuracy": 0.74, "review_rate": 0.5}
    assert check_live_quality(fine, expected, version="v0002") == []
    bad = {"verified": 200, "accuracy": 0.6, "review_rate": 0.6}
    problems = check_live_quality(bad, expected, version="v0002")
    assert len(problems) == 2
    assert problems[0].startswith("live accuracy 0.600 on 200 verified rows")
    assert "v0002's expected 0.400" in problems[1]
    # 0.64 on 25 rows is within the noise (not on 200); on 5 rows it is not checked at all
    assert check_live_quality({"verified": 25, "accuracy": 0.64}, expected, version="v") == []
    assert check_live_quality({"verified": 200, "accuracy": 0.64}, expected, version="v")
    assert check_live_quality({"verified": 5, "accuracy": 0.0}, expected, version="v") == []
    assert check_live_quality(bad, {}, version="v") == []  # a version without real photos


def test_a_tiny_holdout_sets_no_firm_expectation():
    """3 of 4 held-out photos right says little: 0.49 live is within both noises; not 0.2."""
    expected = {"holdout_accuracy": 0.75, "holdout_photos": 4, "expected_review_rate": 1.0}
    assert check_live_quality({"verified": 37, "accuracy": 0.486}, expected, version="v") == []
    [problem] = check_live_quality({"verified": 37, "accuracy": 0.2}, expected, version="v")
    assert "on 4 photos (lower bound" in problem
    firm = {**expected, "holdout_photos": 400}
    assert check_live_quality({"verified": 37, "accuracy": 0.486}, firm, version="v")


def test_expectations_come_from_the_versions_held_out_figures():
    meta = {"metrics": {"real_photos": {"accuracy": 0.71, "expected_review_rate": 0.55}}}
    assert expectations(meta) == {"holdout_accuracy": 0.71, "holdout_photos": None,
                                  "expected_review_rate": 0.55}
    assert expectations({"metrics": {}}) == {"holdout_accuracy": None, "holdout_photos": None,
                                             "expected_review_rate": None}


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

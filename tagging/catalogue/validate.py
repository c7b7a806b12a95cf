"""Check a published partition against its input, the output contract and quality limits."""

from __future__ import annotations

import logging
from typing import TypedDict

import pyarrow.compute as pc

from tagging.catalogue.layout import input_files, published_dir
from tagging.catalogue.publish import parquet_file
from tagging.catalogue.published import published_schema, read_manifest, read_published
from tagging.catalogue.quality import check_live_quality, published_quality
from tagging.errors import PartitionInvalid
from tagging.schema import OUTPUT_FIELDS, OUTPUT_NAMES
from tagging.settings import LoopPolicy, TaggingLimits
from tagging.storage import Root

log = logging.getLogger(__name__)


class ValidationReport(TypedDict):
    partition: str
    rows: int
    input_rows: int
    error_rate: float
    review_rate: float
    model_version: str
    problems: list[str]
    warnings: list[str]  # reported, not failed (a version that reviews every tag)


def validate_partition(catalogue_root: Root | str, date: str, *,
                       max_error_rate: float = TaggingLimits.max_error_rate,
                       max_review_rate: float = TaggingLimits.max_review_rate,
                       expected: dict | None = None,
                       live_accuracy_margin: float = LoopPolicy.live_accuracy_margin,
                       review_rate_margin: float = LoopPolicy.review_rate_margin
                       ) -> ValidationReport:
    """Check a published partition against its input and the quality limits.

    expected: the tagging version's held-out real-photo figures, as the caller passes them
    (tagging.loop.quality.expectations); the live quality of the verified rows is checked
    against them, and an expected review rate replaces the fixed max_review_rate. A version
    that reviews every tag is reported in `warnings`, never failed for it.
    """
    manifest = read_manifest(catalogue_root, date)
    if manifest is None:
        raise PartitionInvalid(f"{published_dir(catalogue_root, date)}: not published")
    problems = []
    input_rows = sum(parquet_file(p).metadata.num_rows
                     for p in input_files(catalogue_root, date))
    schema = published_schema(catalogue_root, date)
    missing = [] if schema is None else [
        f"column {wanted.name} missing or not {wanted.type}" for wanted in OUTPUT_FIELDS
        if wanted.name not in schema.names or schema.field(wanted.name).type != wanted.type]
    problems += missing
    table = (read_published(catalogue_root, date, columns=["product_id", *OUTPUT_NAMES])
             if schema is not None and not missing else None)
    rows = (table.num_rows if table is not None
            else manifest["counts"]["rows"] if schema is not None else 0)
    if rows != input_rows:
        problems.append(f"{rows} published rows, input has {input_rows}")
    counts = manifest["counts"]
    error_rate = counts["errors"] / max(counts["rows"], 1)
    review_rate = counts["needs_review"] / max(counts["rows"], 1)
    if error_rate > max_error_rate:
        problems.append(f"error rate {error_rate:.3f} > limit {max_error_rate}")
    expected = expected or {}
    quality = manifest.get("quality") or published_quality(catalogue_root, date)
    live = check_live_quality(quality, expected, version=manifest["model_version"],
                              accuracy_margin=live_accuracy_margin,
                              review_margin=review_rate_margin)
    problems += live.problems
    warnings = live.warnings
    if expected.get("expected_review_rate") is None and review_rate > max_review_rate:
        problems.append(f"needs-review rate {review_rate:.3f} > limit {max_review_rate}")
    if table is not None:
        confidences = pc.list_flatten(table["category_top3"]).flatten()[1]
        for name, values in [("category_confidence", table["category_confidence"]),
                             ("category_top3 confidence", confidences)]:
            present = values.drop_null()
            bad = len(present) - (pc.sum(pc.and_(pc.is_finite(present),
                                                 pc.and_(pc.greater_equal(present, 0),
                                                         pc.less_equal(present, 1))))
                                  .as_py() or 0)
            if bad:
                problems.append(f"{bad} {name} values are non-finite or outside [0, 1]")
        ids = table["product_id"].drop_null()
        duplicates = pc.filter(pc.value_counts(ids).field("counts"),
                               pc.greater(pc.value_counts(ids).field("counts"), 1))
        if len(duplicates):
            problems.append(f"{len(duplicates)} product_id values occur more than once")
    report = ValidationReport(partition=date, rows=rows, input_rows=input_rows,
                              error_rate=round(error_rate, 4), review_rate=round(review_rate, 4),
                              model_version=manifest["model_version"], problems=problems,
                              warnings=warnings)
    for warning in warnings:
        log.warning("partition %s: %s", date, warning)
    if problems:
        raise PartitionInvalid(f"partition {date} failed validation: " + "; ".join(problems))
    log.info("partition %s valid: %s", date, report)
    return report


def truth_agreement(catalogue_root: Root | str, date: str) -> dict:
    """Accuracy of the model's tags against a known label column, when the input has one.

    `verified_category` (merchandiser-confirmed) wins over `true_category` (demo data).
    Rows with `verified_category` are published with the person's answer
    (tagging.catalogue.answers), so their figures are the manifest's live quality, measured on
    the model's own tags at publication; otherwise the model's guess is `category_top3[0]`.
    Rows without a label or without a tag are left out; `unflagged` covers rows not
    marked needs_review.
    """
    schema = published_schema(catalogue_root, date)
    names = schema.names if schema is not None else []
    truth = next((c for c in ("verified_category", "true_category") if c in names), None)
    if truth is None:
        return {}
    if truth == "verified_category":
        quality = (read_manifest(catalogue_root, date) or {}).get("quality") or {}
        return {"accuracy_vs_verified_category": quality.get("accuracy"),
                "unflagged_precision": quality.get("unflagged_precision"),
                "unflagged_coverage": quality.get("coverage")}
    table = read_published(catalogue_root, date,
                           columns=[truth, "category_top3", "needs_review"])
    guess = pc.struct_field(pc.list_element(table["category_top3"], 0), "category")
    table = table.append_column("guess", guess)
    rows = table.filter(pc.and_(pc.is_valid(table[truth]), pc.is_valid(table["guess"])))
    correct = pc.equal(rows[truth], rows["guess"])
    unflagged = pc.invert(rows["needs_review"])
    n_unflagged = pc.sum(unflagged).as_py() or 0
    return {
        f"accuracy_vs_{truth}": round(pc.mean(correct).as_py() or 0.0, 4),
        "unflagged_precision": round(
            (pc.sum(pc.and_(correct, unflagged)).as_py() or 0) / max(n_unflagged, 1), 4),
        "unflagged_coverage": round(n_unflagged / max(rows.num_rows, 1), 4),
    }

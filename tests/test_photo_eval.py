"""evaluate_photos on a small labelled set of photos, with a real (nearest-centroid) classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tagging.model.evaluate import check_on_photos, evaluate_photos
from tagging.model.inputs import ModelInput
from tagging.photos.folder import load_labelled_photos, read_photo_manifest, stratified_folds


class CentroidClassifier:
    """A real, if simple, classifier: softmax over similarities to class mean images."""

    def __init__(self, x: np.ndarray, y: np.ndarray, threshold: float):
        flat = x.reshape(len(x), -1).astype(np.float64)
        self.centroids = np.stack([flat[y == k].mean(axis=0) for k in range(10)])
        self.centroids /= np.linalg.norm(self.centroids, axis=1, keepdims=True)
        self.review_policy = {"confidence_threshold": threshold}
        self.model_input = ModelInput("pixels")

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        flat = pixels.reshape(len(pixels), -1).astype(np.float64)
        flat /= np.linalg.norm(flat, axis=1, keepdims=True) + 1e-9
        z = 30 * flat @ self.centroids.T
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def result(photo_set, fmnist, tmp_path_factory):
    classifier = CentroidClassifier(fmnist.x_train[:20_000], fmnist.y_train[:20_000], 0.6)
    out = tmp_path_factory.mktemp("report")
    report = evaluate_photos(photo_set / "images", photo_set / "manifest.csv", classifier, out,
                             workers=2)
    raw = classifier.predict_proba(fmnist.x_test[:40]).argmax(axis=1) == fmnist.y_test[:40]
    return report, out, raw.mean()


def test_report_figures_are_consistent(result):
    report, _, raw_accuracy = result
    assert report["images"] == report["n"] == 41
    assert set(report["per_source"]) == {"shop", "studio"}
    assert report["per_source"]["shop"]["n"] == 21 and report["per_source"]["studio"]["n"] == 20
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 11) and confusion.sum() == 41
    assert report["accuracy"] == pytest.approx(np.trace(confusion[:, :10]) / 41)
    # the photos were preprocessed back to (nearly) the 28x28 images the classifier knows
    assert report["accuracy"] >= raw_accuracy * 40 / 41 - 0.1
    assert 0 < report["published_coverage"] < 1 and 0 <= report["ece"] <= 1
    assert set(report["per_class_recall"]) >= {"T-shirt/top", "Ankle boot"}


def test_broken_photo_is_an_error_counted_wrong_and_flagged(result):
    report, _, _ = result
    assert list(report["errors"]) == ["3_shop_broken.jpg"]
    assert report["errors"]["3_shop_broken.jpg"].startswith("undecodable image")
    assert np.array(report["confusion"])[3, 10] == 1
    shop = report["per_source"]["shop"]
    assert shop["published_coverage"] <= 20 / 21


def test_files_written(result):
    report, out, _ = result
    assert json.loads((out / "report.json").read_text()) == report
    for name in ("contact_sheet.png", "reliability.png", "confusion.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_manifest_needs_file_and_label(tmp_path):
    (tmp_path / "m.csv").write_text("name,category\na.jpg,1\n")
    with pytest.raises(ValueError, match="'file' and 'label'"):
        read_photo_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("file,label\na.jpg,12\n")
    with pytest.raises(ValueError, match="not 0-9"):
        read_photo_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("file,label\n4_cd_001.jpg,4\nplain.jpg,2\n")
    assert read_photo_manifest(tmp_path / "m.csv") == [("4_cd_001.jpg", 4, "cd"),
                                                        ("plain.jpg", 2, "all")]


def test_labelled_photos_leave_out_undecodable_ones(photo_set, fmnist):
    photos = load_labelled_photos(photo_set, workers=2)
    assert photos.pixels.shape == (40, 28, 28) and photos.pixels.dtype == np.uint8
    assert photos.labels.tolist() == fmnist.y_test[:40].tolist()
    assert "3_shop_broken.jpg" not in photos.files and len(photos.files) == 40
    assert set(photos.sources) == {"shop", "studio"}
    assert "40 labelled photos" in photos.description
    half = photos.subset(np.arange(40) % 2 == 0)
    assert half.pixels.shape == (20, 28, 28) and half.files == photos.files[::2]


def test_a_folder_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a labelled photo folder"):
        load_labelled_photos(tmp_path / "nowhere")


def test_stratified_folds_spread_every_class_and_source():
    labels = np.repeat(np.arange(10), 25)
    sources = np.where(np.arange(250) % 25 < 12, "cd", "myn")
    folds = stratified_folds(labels, sources, 5, seed=0)
    assert np.bincount(folds).tolist() == [50] * 5
    for k in range(10):
        for s in ("cd", "myn"):
            counts = np.bincount(folds[(labels == k) & (sources == s)], minlength=5)
            assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, sources, 5, seed=0))
    assert not np.array_equal(folds, stratified_folds(labels, sources, 5, seed=1))


def test_check_on_photos_scores_each_fold_by_the_others(photo_set, fmnist, tmp_path):
    photos = load_labelled_photos(photo_set, workers=2)
    classifier = CentroidClassifier(fmnist.x_train[:20_000], fmnist.y_train[:20_000], 0.6)
    probs = classifier.predict_proba(photos.pixels)
    folds = stratified_folds(photos.labels, photos.sources, 2, seed=0)
    check = check_on_photos(photos, probs, folds, target_precision=0.9)
    assert check.probs.shape == probs.shape
    assert np.array_equal(check.probs.argmax(axis=1), probs.argmax(axis=1))  # T keeps ranks
    summary = check.summary()
    correct = probs.argmax(axis=1) == photos.labels
    assert summary["accuracy"] == pytest.approx(correct.mean())
    assert summary["published_coverage"] == pytest.approx(np.mean(~check.flagged))
    assert set(summary["accuracy_per_source"]) == {"shop", "studio"}
    # 20 photos per fold are too few for a safe threshold: everything is reviewed
    assert check.flagged.all() and summary["published_precision"] is None
    report = check.write(tmp_path, {"confidence_threshold": 1.0})
    assert report["n"] == 40 and (tmp_path / "contact_sheet.png").exists()
    assert len(report["misclassified"]) == int((~correct).sum())
    assert set(report["misclassified"]) == {f for f, ok in zip(photos.files, correct,
                                                                strict=True) if not ok}

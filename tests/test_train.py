"""Training, evaluation, the report, registration and the gate, with real TensorFlow."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import LOW_GATE, QUICK, REPO

from model_registry import GatePolicy, Registry
from tagging.labels import is_holdout
from tagging.loop.labelled import Labelled, load_labelled
from tagging.loop.labelstore import LabelStore
from tagging.model.config import TrainConfig
from tagging.model.features import as_input
from tagging.model.inference import Classifier
from tagging.model.policy import reviews_everything
from tagging.model.train import (
    too_few_new_labels,
    train_candidate,
    train_model,
    trained_before,
)
from tagging.pipeline.learn import train_and_promote


def test_quick_training_registers_a_complete_version(champion_registry, fmnist):
    registry = Registry(champion_registry)
    info = registry.get("champion")
    meta = info.metadata
    assert meta["input"]["kind"] == "encoder"  # the default: an encoder's features
    assert meta["input"]["encoder"] == "efficientnet-lite0"
    assert meta["input"]["input_size"] == 224 and len(meta["input"]["weights_sha256"]) == 64
    assert meta["hyperparameters"]["model_input"] == "efficientnet-lite0"
    assert meta["training_data_fingerprint"] != meta["eval_data_fingerprint"]
    assert meta["eval_data_fingerprint"] == fmnist.test_fingerprint
    assert meta["hyperparameters"]["hidden_units"] == [256, 128]
    assert set(meta["library_versions"]) >= {"tensorflow-cpu", "keras", "numpy"}
    assert meta["metrics"]["accuracy"] > 0.8  # 4 epochs on 12k images
    assert len(meta["metrics"]["confusion_matrix"]) == 10
    assert np.sum(meta["metrics"]["confusion_matrix"]) == 10_000
    for name in ("metrics.json", "learning_curves.png", "confusion_matrix.png"):
        assert (info.path / "report" / name).stat().st_size > 1000
    report = json.loads((info.path / "report" / "metrics.json").read_text())
    assert len(report["history"]["val_loss"]) == meta["metrics"]["epochs_run"]


def test_keras_model_loads_in_safe_mode_and_matches_numpy_path(champion_registry, fmnist):
    """An encoder version: the Keras head on the features gives the NumPy path's answers."""
    registry = Registry(champion_registry)
    model = registry.load_keras_model("champion")
    classifier = Classifier.from_registry(champion_registry)
    features = as_input(classifier.model_input, fmnist.x_test[:500])
    assert features.shape == (500, 1280) and not classifier.mirror_average
    single_view = Classifier(classifier.kernels, classifier.biases,
                             model_input=classifier.model_input)
    np.testing.assert_allclose(model.predict(features, verbose=0),
                               single_view.predict_proba(features), atol=1e-4)


def test_pixels_version_predicts_from_both_views(tmp_path, fmnist_dir, fmnist):
    """The pixels baseline: Keras on pixels / 255 matches NumPy; the version averages the
    logits of each image and its mirror image."""
    candidate, _ = train_and_promote(
        TrainConfig(model_input="pixels", train_subset=2000, epochs=1), registry_root=tmp_path,
        data_dir=fmnist_dir, created_by="tests", policy=GatePolicy(**LOW_GATE))
    model = Registry(tmp_path).load_keras_model(candidate.version)
    classifier = Classifier.from_registry(tmp_path)
    assert classifier.model_input.is_pixels
    x = fmnist.x_test[:500]
    keras_probs = model.predict(x.astype("float32") / 255, verbose=0)
    assert classifier.mirror_average and classifier.temperature != 1.0
    single_view = Classifier(classifier.kernels, classifier.biases)
    np.testing.assert_allclose(keras_probs, single_view.predict_proba(x), atol=1e-4)
    # the version predicts from both views: the same answer for an image and its mirror
    np.testing.assert_allclose(classifier.predict_proba(x), classifier.predict_proba(x[:, :, ::-1]),
                               atol=1e-5)
    assert not np.allclose(single_view.predict_proba(x), single_view.predict_proba(x[:, :, ::-1]),
                           atol=1e-3)
    both = Classifier.from_keras(model, {"mirror_average": True})
    mean_logits = (single_view.logits(x) + single_view.logits(x[:, :, ::-1])) / 2
    np.testing.assert_array_equal(both.predict_proba(x).argmax(1), mean_logits.argmax(1))


def test_training_is_reproducible(fmnist):
    config = TrainConfig(train_subset=3000, epochs=2)
    a, b = train_model(config, fmnist), train_model(config, fmnist)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
    for wa, wb in zip(a.classifier.kernels, b.classifier.kernels, strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_gate_refuses_worse_model_and_champion_stays(champion_registry, fmnist_dir):
    registry = Registry(champion_registry)
    champion = registry.champion()
    worse = TrainConfig(model_input="pixels", train_subset=2000, epochs=1, hidden_units=(16,))
    candidate, decision = train_and_promote(
        worse, registry_root=champion_registry, data_dir=fmnist_dir, created_by="tests",
        policy=GatePolicy(**LOW_GATE))
    assert not candidate.reused
    assert decision is not None and not decision.passed
    assert any("champion" in r for r in decision.reasons)
    assert registry.champion() == champion
    assert registry.events()[-1]["event"] == "refused"


def test_unchanged_data_and_config_reuse_the_champion(champion_registry, fmnist_dir):
    registry = Registry(champion_registry)
    before = registry.version_ids()
    candidate = train_candidate(TrainConfig.from_dict(QUICK), labelled=None,
                                registry_root=champion_registry, data_dir=fmnist_dir,
                                created_by="tests")
    assert candidate.reused and candidate.version == registry.champion()
    assert registry.version_ids() == before


def test_config_round_trip_and_unknown_options():
    config = TrainConfig(hidden_units=(64, 32), train_subset=10)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.slow
def test_full_training_reaches_088(tmp_path, fmnist_dir):
    """The pixels baseline's recipe on all 60,000 images, through the gate's default floors
    (the encoder's figure on the same split: benchmarks/README.md)."""
    candidate, decision = train_and_promote(
        TrainConfig(model_input="pixels"), registry_root=tmp_path, data_dir=fmnist_dir,
        created_by="tests", policy=GatePolicy())
    assert decision is not None and decision.passed, decision.reasons
    metrics = Registry(tmp_path).get(candidate.version).metadata["metrics"]
    assert metrics["accuracy"] >= 0.88, metrics["accuracy"]


def test_unchanged_config_is_not_trained_twice_even_if_refused(champion_registry, fmnist_dir):
    """A refused version with the same data and config is gated again, not retrained."""
    registry = Registry(champion_registry)
    config = TrainConfig(train_subset=1500, epochs=1, hidden_units=(8,))
    first = train_candidate(config, labelled=None, registry_root=champion_registry,
                            data_dir=fmnist_dir, created_by="tests")
    again = train_candidate(config, labelled=None, registry_root=champion_registry,
                            data_dir=fmnist_dir, created_by="tests")
    assert again.version == first.version and not again.reused
    assert registry.version_ids()[-1] == first.version


def test_training_on_real_photos_calibrates_on_holdout_and_out_of_fold(
        tmp_path, fmnist_dir, fmnist, photo_set, caplog):
    """Base, photo stage and cross-fit: the review policy's evidence is the holdout plus
    every train-side photo predicted out of fold; the base is stored and reused."""
    config = TrainConfig(train_subset=3000, epochs=2, hidden_units=(64,),
                         real_photos=str(photo_set), real_photo_repeats=5, photo_epochs=1,
                         replay=1000, cross_fit_folds=3)
    labelled = load_labelled(real_photos=photo_set, encoder=config.model_input)
    with caplog.at_level("INFO", logger="tagging.model.train"):
        candidate = train_candidate(config, labelled=labelled, registry_root=tmp_path,
                                    data_dir=fmnist_dir, created_by="tests")
    assert sum("trained in" in r.getMessage() for r in caplog.records) == 1
    held = is_holdout(labelled.table["product_id"].to_pylist())
    assert 0 < held.sum() < 20 and len(labelled.holdout.labels) == held.sum()
    registry = Registry(tmp_path)
    info = registry.get(candidate.version)
    meta = info.metadata
    assert meta["metrics"]["labels"]["train"] == 40 - held.sum()
    assert meta["metrics"]["labels"]["holdout"] == held.sum()
    source = meta["review"]["selection_source"]
    assert source.startswith(f"{held.sum()} held-out labels of ") and "train-side" in source
    assert meta["review"]["selection_samples"] == 40
    assert meta["metrics"]["real_photos"]["evidence"] == {
        "holdout": held.sum(), "out_of_fold": 40 - held.sum()}
    assert meta["hyperparameters"]["review_target_precision"] == 0.95
    check = meta["metrics"]["real_photos"]
    # the review rate its stored policy produces (everything, when the threshold is 1.0)
    policy = meta["review"]
    assert check["expected_review_rate"] == (
        1.0 if reviews_everything(policy) else round(1 - policy["selection_coverage"], 4))
    report = json.loads((info.path / "report" / "real-photos" / "report.json").read_text())
    assert report["n"] == 40
    assert (info.path / "base.npz").is_file() and not meta["base"]["reused"]

    # another photo-stage recipe: the stored base is reused, not trained again
    other = train_candidate(dataclasses.replace(config, photo_epochs=2), labelled=labelled,
                            registry_root=tmp_path, data_dir=fmnist_dir, created_by="tests")
    reused = registry.get(other.version)
    assert reused.metadata["base"]["reused"]
    assert reused.metadata["base"]["key"] == meta["base"]["key"]
    with np.load(info.path / "base.npz") as first, np.load(reused.path / "base.npz") as second:
        assert all(np.array_equal(first[k], second[k]) for k in first.files)

    assert trained_before(registry, config, fmnist, labelled) == candidate.version
    table = labelled.table.to_pylist()
    for side in (True, False):  # relabel one product on each side
        changed = [dict(r) for r in table]
        row = next(r for r in changed if r["holdout"] == side)
        row["label"] = (row["label"] + 1) % 10
        relabelled = Labelled.of(pa.Table.from_pylist(changed, labelled.table.schema), "x")
        same = trained_before(registry, config, fmnist, relabelled) == candidate.version
        assert same == side  # the fingerprint covers the train side only


def test_champion_is_kept_until_enough_new_labels(tmp_path, photo_set):
    """min_new_labels counts train-side labels harvested after the champion's newest."""
    store = LabelStore(tmp_path / "labels")
    store.add_photo_folder(photo_set)
    labelled = load_labelled(store.root)
    registry = Registry(tmp_path / "registry")
    config = TrainConfig(label_store=str(store.root))
    assert too_few_new_labels(registry, config, labelled, 50) is None  # no champion yet

    def champion_trained_through(moment: str | None) -> None:
        """Register and promote a version (no real model needed) trained up to `moment`."""
        artifact = tmp_path / f"artifact-{len(registry.version_ids())}"
        artifact.mkdir()
        (artifact / "model.keras").write_text("weights")
        metrics = {"accuracy": 0.9, "loss": 0.3, "per_class_recall": [0.9] * 10,
                   "labels": {"harvested_through": moment}}
        version = registry.register(artifact, {
            "metrics": metrics, "eval_data_fingerprint": "e", "training_data_fingerprint": "t",
            "hyperparameters": config.to_dict(), "library_versions": {}}, created_by="tests")
        registry.promote(version, policy=GatePolicy(), actor="tests", force=True)

    champion_trained_through(labelled.harvested_through())
    why = too_few_new_labels(registry, config, labelled, 50)
    assert why.startswith("only 0 new train-side labels since champion v0001")
    champion_trained_through("2000-01-01T00:00:00+00:00")
    assert labelled.new_train_labels("2000-01-01T00:00:00+00:00") == len(labelled.train.labels)
    assert too_few_new_labels(registry, config, labelled, 20) is None
    assert "(< min_new_labels 50)" in too_few_new_labels(registry, config, labelled, 50)
    other_recipe = TrainConfig(label_store=str(store.root), epochs=3)
    assert too_few_new_labels(registry, other_recipe, labelled, 50) is None


def test_a_shop_moves_from_pixels_to_the_encoder_through_the_gate(tmp_path, fmnist_dir):
    """A pixels champion, an encoder candidate: both scored on the same held-out real photos,
    each through its own input; the candidate is promoted only when better, and a pixels
    candidate cannot take the champion's place back."""
    dev = REPO.parent / "shared" / "real-photos-dev"
    recipe = {"train_subset": 3000, "epochs": 2, "real_photos": str(dev),
              "real_photo_repeats": 10, "photo_epochs": 2, "cross_fit_folds": 0}
    registry = Registry(tmp_path)

    def through_gate(model_input: str, seed: int):
        config = TrainConfig.from_dict({**recipe, "model_input": model_input, "seed": seed})
        candidate, decision = train_and_promote(config, registry_root=tmp_path,
                                                data_dir=fmnist_dir, created_by="tests",
                                                policy=GatePolicy(**LOW_GATE))
        return candidate.version, decision

    pixels, _ = through_gate("pixels", 0)
    assert registry.champion() == pixels
    encoder, decision = through_gate("efficientnet-lite0", 0)
    assert decision.passed and registry.champion() == encoder, decision.reasons
    event = registry.events()[-1]
    assert event["event"] == "promoted"
    scores = event["holdout"]
    assert scores["champion"] == pixels and scores["photos"] >= 40
    assert scores["candidate_accuracy"] > scores["champion_accuracy"] + 0.1, scores
    _, decision = through_gate("pixels", 1)
    assert not decision.passed and registry.champion() == encoder
    assert decision.reasons[0].startswith("holdout (")

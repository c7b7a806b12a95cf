"""Training, evaluation, the report, registration and the gate, with real TensorFlow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import LOW_GATE, QUICK

from model_registry import GatePolicy, Registry
from tagging.inference import Classifier
from tagging.train import TrainConfig, train_and_promote, train_candidate, train_model


def test_quick_training_registers_a_complete_version(champion_registry, fmnist):
    registry = Registry(champion_registry)
    info = registry.get("champion")
    meta = info.metadata
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
    registry = Registry(champion_registry)
    model = registry.load_keras_model("champion")
    classifier = Classifier.from_registry(champion_registry)
    keras_probs = model.predict(fmnist.x_test[:500].astype("float32") / 255, verbose=0)
    numpy_probs = classifier.predict_proba(fmnist.x_test[:500])
    if classifier.temperature == 1.0:
        np.testing.assert_allclose(keras_probs, numpy_probs, atol=1e-4)
    assert np.array_equal(keras_probs.argmax(1), numpy_probs.argmax(1))


def test_training_is_reproducible(fmnist):
    config = TrainConfig(train_subset=3000, epochs=2)
    a, b = train_model(config, fmnist), train_model(config, fmnist)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
    for wa, wb in zip(a.classifier.kernels, b.classifier.kernels, strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_gate_refuses_worse_model_and_champion_stays(champion_registry, fmnist_dir):
    registry = Registry(champion_registry)
    champion = registry.champion()
    worse = TrainConfig(train_subset=2000, epochs=1, hidden_units=(16,))
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
    candidate = train_candidate(TrainConfig.from_dict(QUICK), registry_root=champion_registry,
                                data_dir=fmnist_dir, created_by="tests")
    assert candidate.reused and candidate.version == registry.champion()
    assert registry.version_ids() == before


def test_config_round_trip_and_unknown_options():
    config = TrainConfig(hidden_units=(64, 32), train_subset=10)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.slow
def test_full_training_reaches_088(tmp_path, fmnist_dir):
    """The default recipe on all 60,000 images, through the gate's default floors."""
    candidate, decision = train_and_promote(
        TrainConfig(), registry_root=tmp_path, data_dir=fmnist_dir, created_by="tests",
        policy=GatePolicy())
    assert decision is not None and decision.passed, decision.reasons
    metrics = Registry(tmp_path).get(candidate.version).metadata["metrics"]
    assert metrics["accuracy"] >= 0.88, metrics["accuracy"]


def test_unchanged_config_is_not_trained_twice_even_if_refused(champion_registry, fmnist_dir):
    """A refused version with the same data and config is gated again, not retrained."""
    registry = Registry(champion_registry)
    config = TrainConfig(train_subset=1500, epochs=1, hidden_units=(8,))
    first = train_candidate(config, registry_root=champion_registry, data_dir=fmnist_dir,
                            created_by="tests")
    again = train_candidate(config, registry_root=champion_registry, data_dir=fmnist_dir,
                            created_by="tests")
    assert again.version == first.version and not again.reused
    assert registry.version_ids()[-1] == first.version

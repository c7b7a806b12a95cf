"""Model registry: versions, gate, alias, rollback, corruption, on a local folder and on S3.

Every test here runs against both roots (`registry_root`: a folder, and a prefix on the real
S3 server): the behaviour is the same. Processes, races and crashes: test_registry_races.py.
Only the Keras test imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from model_registry import (
    CorruptMetadataError,
    GatePolicy,
    Registry,
    RegistryError,
    VersionNotFound,
)
from model_registry.render import render_version, render_version_list
from model_registry.store import LocalObjects

POLICY = GatePolicy()
ALIAS = "aliases/champion.json"

# The registry knows nothing of clothing: its user names the classes.
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def metadata(accuracy: float = 0.9, recall: float | list[float] = 0.8,
             eval_fp: str = "eval-A", photos: tuple[float, str] | None = None,
             **extra: object) -> dict:
    """photos: (held-out accuracy, photo-set fingerprint) on labelled real photos."""
    recalls = recall if isinstance(recall, list) else [recall] * 10
    real = {} if photos is None else {"real_photos": {
        "photos": f"photo set {photos[1]}", "fingerprint": photos[1], "accuracy": photos[0]}}
    return {
        "metrics": {"accuracy": accuracy, "loss": 0.3, "per_class_recall": recalls,
                    "f1": [0.8] * 10, **real},
        "eval_data_fingerprint": eval_fp,
        "training_data_fingerprint": "train-A",
        "hyperparameters": {"hidden": [256, 128], "seed": 1},
        "library_versions": {"keras": "3.15.1"},
        **extra,
    }


def make_artifact(directory: Path, payload: str = "model") -> Path:
    (directory / "report").mkdir(parents=True)
    (directory / "model.keras").write_text(payload)
    (directory / "weights.npz").write_text(f"weights of {payload}")
    (directory / "report" / "metrics.json").write_text("{}")
    return directory


def edit(reg: Registry, key: str, data: bytes | None) -> None:
    """Change an object behind the registry's back, as a person with write access would
    (None: delete it); on a local folder, first undo the registry's read-only bits."""
    if isinstance(reg.store, LocalObjects):
        path = Path(reg.root, key)
        for item in (path.parent, path):
            if item.exists():
                item.chmod(item.stat().st_mode | stat.S_IWUSR)
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
    elif data is None:
        reg.store.delete(key)
    else:
        reg.store.put(key, data)


def read(reg: Registry, key: str) -> bytes:
    blob = reg.store.get(key)
    assert blob is not None, key
    return blob[0]


@pytest.fixture
def reg(registry_root, tmp_path) -> Registry:
    return Registry(registry_root, class_names=CLASSES, cache_dir=tmp_path / "cache")


@pytest.fixture
def add(reg: Registry, tmp_path: Path):
    """Register a fresh artifact dir with metadata(**kwargs); return the version id."""
    counter = iter(range(10_000))

    def _add(created_by: str = "test", **kwargs: object) -> str:
        n = next(counter)
        artifact = make_artifact(tmp_path / f"artifact-{n}", payload=f"model {n}")
        return reg.register(artifact, metadata(**kwargs), created_by=created_by)

    return _add


# --------------------------------------------------------------------------- register


def test_register_writes_an_immutable_version_with_lineage(reg, add, tmp_path):
    caller_meta = metadata(calibration={"temperature": 1.3}, review={"threshold": 0.6})
    artifact = make_artifact(tmp_path / "art", payload="first")
    v1 = reg.register(artifact, caller_meta, created_by="trainer-run-1")
    assert v1 == "v0001"
    assert caller_meta == metadata(calibration={"temperature": 1.3}, review={"threshold": 0.6})

    info = reg.get(v1)
    assert info.location == f"{reg.url}/versions/v0001"
    assert info.model_path.read_text() == "first"
    meta = info.metadata
    assert {k: meta[k] for k in caller_meta} == caller_meta
    assert meta["version"] == "v0001"
    assert meta["created_by"] == "trainer-run-1"
    assert meta["parent_champion"] is None
    assert meta["created_at"].endswith("+00:00")
    assert set(meta["sha256"]) == {"model.keras", "weights.npz", "report/metrics.json",
                                   "metadata.json"}
    stored = {o.key for o in reg.store.list("versions/v0001/")}
    assert stored == {f"versions/v0001/{name}" for name in
                      (".claim", "model.keras", "weights.npz", "report/metrics.json",
                       "metadata.json")}
    if isinstance(reg.store, LocalObjects):  # a local version is read-only too
        assert info.path == reg.root / "versions" / "v0001"
        for path in [info.path, *info.path.rglob("*")]:
            assert stat.S_IMODE(path.stat().st_mode) == (0o555 if path.is_dir() else 0o444)
    assert (artifact / "model.keras").read_text() == "first"

    reg.promote(v1, policy=POLICY, actor="test")
    v2 = add()
    assert v2 == "v0002"
    assert reg.get(v2).metadata["parent_champion"] == "v0001"
    assert [e["event"] for e in reg.events()] == ["register", "promoted", "register"]


def test_register_accepts_numpy_numbers(reg, tmp_path):
    meta = metadata(accuracy=np.float32(0.875))
    meta["metrics"]["per_class_recall"] = np.linspace(0.6, 0.9, 10)
    version = reg.register(make_artifact(tmp_path / "a"), meta, created_by="t")
    stored = reg.get(version).metadata["metrics"]
    assert stored["accuracy"] == pytest.approx(0.875)
    assert stored["per_class_recall"] == pytest.approx(list(np.linspace(0.6, 0.9, 10)))


def _drop_metrics(meta):
    del meta["metrics"]


def _string_accuracy(meta):
    meta["metrics"]["accuracy"] = "0.9"


def _nine_recalls(meta):
    meta["metrics"]["per_class_recall"] = [0.8] * 9


def _reserved_key(meta):
    meta["version"] = "v0042"


def _nan_anywhere(meta):
    meta["calibration"] = {"temperature": float("nan")}


@pytest.mark.parametrize(("spoil", "message"), [
    (_drop_metrics, "missing key 'metrics'"),
    (_string_accuracy, "'metrics.accuracy' must be a number"),
    (_nine_recalls, "list of 10 numbers"),
    (_reserved_key, "set by the registry"),
    (_nan_anywhere, "not valid JSON"),
])
def test_register_rejects_bad_metadata(reg, tmp_path, spoil, message):
    meta = metadata()
    spoil(meta)
    with pytest.raises(RegistryError, match=message):
        reg.register(make_artifact(tmp_path / "a"), meta, created_by="t")
    assert reg.version_ids() == []


def test_register_rejects_bad_artifact_dirs(reg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match=r"empty: no model.keras"):
        reg.register(empty, metadata(), created_by="t")
    clash = make_artifact(tmp_path / "clash")
    (clash / "metadata.json").write_text("{}")
    with pytest.raises(RegistryError, match=r"contains metadata\.json"):
        reg.register(clash, metadata(), created_by="t")
    assert reg.version_ids() == []


def test_a_copied_version_folder_registers_again(reg, add, tmp_path):
    """Copying a version's folder (without metadata.json) registers the same artifacts; the
    registry's own files in it (.claim) are not artifacts."""
    source = reg.get(add()).path
    copy = tmp_path / "copy"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("metadata.json"))
    version = reg.register(copy, metadata(), created_by="t")
    assert reg.get(version).metadata["sha256"] == {
        **reg.get("v0001").metadata["sha256"],
        "metadata.json": reg.get(version).metadata["sha256"]["metadata.json"]}


def test_list_resolve_and_get(reg, add):
    assert reg.list_versions() == [] and reg.champion() is None and reg.events() == []
    ids = [add(accuracy=a) for a in (0.86, 0.9, 0.88)]
    assert [v.version for v in reg.list_versions()] == ids == ["v0001", "v0002", "v0003"]
    with pytest.raises(VersionNotFound, match="no champion"):
        reg.resolve("champion")
    reg.promote("v0002", policy=POLICY, actor="t")
    assert reg.resolve("champion") == "v0002"
    assert reg.get("champion").metadata["metrics"]["accuracy"] == 0.9
    for bad in ("v0099", "../versions/v0001", "latest", "v1"):
        with pytest.raises(VersionNotFound, match=f"no version '{bad}'"):
            reg.get(bad)


# --------------------------------------------------------------------------- gate


def test_first_promotion_passes_and_logs_the_alias_move(reg, add, caplog):
    v1 = add(accuracy=0.86)
    with caplog.at_level(logging.INFO, logger="model_registry"):
        decision = reg.promote(v1, policy=POLICY, actor="alice")
    assert decision.passed and not decision.forced
    assert (decision.candidate, decision.champion) == ("v0001", None)
    assert decision.reasons == ["accuracy 0.8600 >= floor 0.8500",
                                "every class recall >= floor 0.5000"]
    assert reg.champion() == "v0001"
    assert any(r.levelno == logging.INFO and "champion None -> v0001 by alice" in r.getMessage()
               for r in caplog.records)
    event = reg.events()[-1]
    assert event["event"] == "promoted" and event["actor"] == "alice"
    assert event["version"] == "v0001" and event["previous"] is None
    assert event["generation"] == 1


def test_gate_refuses_a_worse_model_and_the_champion_stays(reg, add):
    reg.promote(add(accuracy=0.8912), policy=POLICY, actor="t")
    worse = add(accuracy=0.8523)
    decision = reg.promote(worse, policy=POLICY, actor="bob")
    assert not decision.passed
    assert decision.reasons == ["accuracy 0.8523 < champion 0.8912 - 0.005"]
    assert (decision.candidate_accuracy, decision.champion_accuracy) == (0.8523, 0.8912)
    assert reg.champion() == "v0001"
    event = reg.events()[-1]
    assert event["event"] == "refused" and event["actor"] == "bob"
    assert event["reasons"] == decision.reasons and "generation" not in event


def test_gate_tolerance(reg, add):
    reg.promote(add(accuracy=0.89), policy=POLICY, actor="t")
    assert not reg.promote(add(accuracy=0.8849), policy=POLICY, actor="t").passed
    assert reg.promote(add(accuracy=0.8851), policy=POLICY, actor="t").passed
    assert reg.champion() == "v0003"
    strict = GatePolicy(tolerance=0.0)
    assert not reg.check_gate(add(accuracy=0.885), strict).passed


def test_gate_floors_are_enforced_and_configurable(reg, add):
    low_accuracy = add(accuracy=0.80)
    recalls = [0.9] * 10
    recalls[6] = 0.31
    weak_shirt = add(accuracy=0.9, recall=recalls)

    decision = reg.check_gate(low_accuracy, POLICY)
    assert not decision.passed and decision.reasons == ["accuracy 0.8000 < floor 0.8500"]
    decision = reg.check_gate(weak_shirt, POLICY)
    assert not decision.passed
    assert decision.reasons == ["recall below floor 0.5000: class 6 (shirt) 0.3100"]

    lenient = GatePolicy(min_accuracy=0.75, min_class_recall=0.3)
    assert reg.check_gate(low_accuracy, lenient).passed
    assert reg.check_gate(weak_shirt, lenient).passed
    assert reg.champion() is None


def test_gate_refuses_a_model_evaluated_on_different_data(reg, add):
    reg.promote(add(accuracy=0.88), policy=POLICY, actor="t")
    other = add(accuracy=0.95, eval_fp="eval-B")
    decision = reg.promote(other, policy=POLICY, actor="t")
    assert not decision.passed
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("evaluated on different data")
    assert "'eval-B'" in decision.reasons[0] and "'eval-A'" in decision.reasons[0]
    assert reg.champion() == "v0001"


def test_gate_keeps_a_champion_that_is_better_on_real_photos(reg, add):
    reg.promote(add(accuracy=0.885, photos=(0.71, "set-A")), policy=POLICY, actor="t")
    decision = reg.check_gate(add(accuracy=0.893), POLICY)  # never measured on real photos
    assert not decision.passed
    assert decision.reasons == ["champion v0001 was measured on real photos (photo set set-A); "
                                "the candidate was not"]
    decision = reg.check_gate(add(accuracy=0.893, photos=(0.68, "set-A")), POLICY)
    assert decision.reasons == ["real-photo accuracy 0.6800 < champion 0.7100 - 0.02"]
    assert reg.check_gate(add(accuracy=0.885, photos=(0.695, "set-A")), POLICY).passed
    decision = reg.check_gate(add(accuracy=0.885, photos=(0.60, "set-B")), POLICY)
    assert decision.passed and decision.reasons[-1].endswith("not compared")
    assert reg.champion() == "v0001"


def test_promoting_the_champion_again_is_a_noop(reg, add):
    v1 = add()
    reg.promote(v1, policy=POLICY, actor="t")
    decision = reg.promote("champion", policy=POLICY, actor="t")
    assert decision.passed and decision.reasons == ["v0001 is already champion: nothing to do"]
    alias = json.loads(read(reg, ALIAS))
    assert alias["previous"] == [] and alias["generation"] == 1


def test_check_gate_has_no_side_effects(reg, add):
    reg.promote(add(accuracy=0.9), policy=POLICY, actor="t")
    better, worse = add(accuracy=0.95), add(accuracy=0.7)
    before = (read(reg, ALIAS), reg.events())
    assert reg.check_gate(better, POLICY).passed
    assert not reg.check_gate(worse, POLICY).passed
    assert (read(reg, ALIAS), reg.events()) == before


def test_forced_promotion_moves_the_alias_and_is_logged_as_forced(reg, add, caplog):
    reg.promote(add(accuracy=0.9), policy=POLICY, actor="t")
    worse = add(accuracy=0.7)
    with caplog.at_level(logging.INFO, logger="model_registry"):
        decision = reg.promote(worse, policy=POLICY, actor="oncall", force=True)
    assert not decision.passed and decision.forced
    assert reg.champion() == worse
    event = reg.events()[-1]
    assert event["event"] == "promoted" and event["forced"] is True
    assert event["reasons"] == decision.reasons and event["actor"] == "oncall"
    assert any("FORCED" in r.getMessage() for r in caplog.records)


def test_rollback_walks_back_and_then_refuses(reg, add):
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback(actor="t")
    v1, v2, v3 = add(accuracy=0.86), add(accuracy=0.88), add(accuracy=0.9)
    for version in (v1, v2, v3):
        assert reg.promote(version, policy=POLICY, actor="t").passed
    assert reg.rollback(actor="carol") == v2
    assert reg.champion() == v2
    assert reg.rollback(actor="carol") == v1
    with pytest.raises(RegistryError, match=r"champion\.json: nothing to roll back to"):
        reg.rollback(actor="carol")
    assert reg.champion() == v1
    rollbacks = [e for e in reg.events() if e["event"] == "rollback"]
    assert [(e["previous"], e["version"], e["actor"], e["generation"]) for e in rollbacks] == [
        (v3, v2, "carol", 4), (v2, v1, "carol", 5)]
    assert reg.promote(v3, policy=POLICY, actor="t").passed
    assert reg.rollback(actor="t") == v1


# --------------------------------------------------------------------------- corruption


def _bad_json(reg, version):
    edit(reg, f"versions/{version}/metadata.json", b'{"metrics": ')


def _missing_key(reg, version):
    meta = json.loads(read(reg, f"versions/{version}/metadata.json"))
    del meta["eval_data_fingerprint"]
    edit(reg, f"versions/{version}/metadata.json", json.dumps(meta).encode())


def _wrong_type(reg, version):
    meta = json.loads(read(reg, f"versions/{version}/metadata.json"))
    meta["metrics"]["per_class_recall"] = "high"
    edit(reg, f"versions/{version}/metadata.json", json.dumps(meta).encode())


def _modified_model(reg, version):
    edit(reg, f"versions/{version}/model.keras", b"swapped weights")


def _extra_file(reg, version):
    edit(reg, f"versions/{version}/notes.txt", b"hi")


def _deleted_weights(reg, version):
    edit(reg, f"versions/{version}/weights.npz", None)


@pytest.mark.parametrize(("tamper", "message"), [
    (_bad_json, r"v0001/metadata\.json: cannot be read as JSON"),
    (_missing_key, r"v0001/metadata\.json: missing key 'eval_data_fingerprint'"),
    (_wrong_type, r"v0001/metadata\.json: 'metrics\.per_class_recall' must be a list"),
    (_modified_model, r"v0001/model\.keras has sha256 .* \(modified after registration\)"),
    (_extra_file, r"v0001/notes\.txt was not part of the registered artifacts"),
    (_deleted_weights, r"v0001/weights\.npz is missing"),
])
def test_hand_edited_versions_are_reported_clearly(reg, add, tamper, message):
    version = add()
    reg.promote(version, policy=POLICY, actor="t")
    reg.get(version)  # a remote version is now cached: the check must still see the edit
    tamper(reg, version)
    for call in (lambda: reg.get(version), lambda: reg.check_gate(version, POLICY),
                 lambda: reg.promote(version, policy=POLICY, actor="t")):
        with pytest.raises(CorruptMetadataError, match=message):
            call()


def test_a_copied_version_directory_is_detected(reg, add):
    add()
    for name in ("model.keras", "weights.npz", "metadata.json"):
        edit(reg, f"versions/v0002/{name}", read(reg, f"versions/v0001/{name}"))
    with pytest.raises(CorruptMetadataError, match=r"v0002/metadata\.json: 'version' is 'v0001'"):
        reg.get("v0002")


@pytest.mark.parametrize(("alias", "message"), [
    ({"version": "v0042", "previous": []}, "points to 'v0042', which does not exist"),
    ({"version": "v0001"}, "expected"),
    ({"version": "../../etc", "previous": []}, "expected"),
    ("not json", "cannot be read as JSON"),
])
def test_a_broken_alias_file_is_reported_clearly(reg, add, alias, message):
    reg.promote(add(), policy=POLICY, actor="t")
    edit(reg, ALIAS, (alias if isinstance(alias, str) else json.dumps(alias)).encode())
    for call in (reg.champion, lambda: reg.get("champion"), lambda: reg.rollback(actor="t"),
                 lambda: reg.promote("v0001", policy=POLICY, actor="t")):
        with pytest.raises(CorruptMetadataError, match=rf"aliases/champion\.json: .*{message}"):
            call()


def test_a_corrupt_event_is_reported_by_name(reg, add):
    add()
    add()
    second = [o.key for o in reg.store.list("events/")][1]
    edit(reg, second, b"{oops")
    with pytest.raises(CorruptMetadataError, match=rf"{second}: not valid JSON"):
        reg.events()


def test_a_legacy_event_log_is_read_first(reg, add):
    """A registry written before events were objects: its events.jsonl comes first (a torn
    last line skipped, a bad one reported by line number); it is never written again."""
    old = [{"ts": "2025-01-01T00:00:00+00:00", "event": "register", "version": "v0001"}]
    edit(reg, "events.jsonl", (json.dumps(old[0]) + '\n{"ts": "2025-01-02", "ev').encode())
    add()
    assert [e["event"] for e in reg.events()] == ["register", "register"]
    assert reg.events()[0] == old[0]
    edit(reg, "events.jsonl", (json.dumps(old[0]) + "\n{oops\n").encode())
    with pytest.raises(CorruptMetadataError, match=r"events\.jsonl:2: not valid JSON"):
        reg.events()


# --------------------------------------------------------------------------- keras, cli


def test_load_keras_model_round_trips_and_uses_safe_mode(reg, tmp_path):
    import keras

    safe_dir, unsafe_dir = tmp_path / "safe", tmp_path / "unsafe"
    safe_dir.mkdir()
    unsafe_dir.mkdir()
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(safe_dir / "model.keras")
    keras.Sequential([keras.Input((28, 28)), keras.layers.Lambda(lambda t: t * 2.0),
                      keras.layers.Flatten()]).save(unsafe_dir / "model.keras")
    safe = reg.register(safe_dir, metadata(), created_by="t")
    unsafe = reg.register(unsafe_dir, metadata(), created_by="t")

    images = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    loaded = reg.load_keras_model(safe)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match="safe_mode"):
        reg.load_keras_model(unsafe)


def test_cli_renderings(reg, add):
    assert "has no versions yet" in render_version_list(reg)
    add(accuracy=0.8812, created_by="trainer-7")
    add(accuracy=0.8901, photos=(0.7123, "set-A"))
    reg.promote("v0002", policy=POLICY, actor="t")
    text = render_version_list(reg)
    rows = {line.split()[1]: line for line in text.splitlines() if " v000" in line}
    assert "0.8812" in rows["v0001"] and "trainer-7" in rows["v0001"]
    assert "0.7123" in rows["v0002"] and "0.7123" not in rows["v0001"]
    assert rows["v0002"].rstrip(" │|").endswith("*") and "*" not in rows["v0001"]

    shown = render_version(reg, "champion")
    assert "v0002 (champion)" in shown and "recall shirt" in shown and "0.8901" in shown
    assert "photo set set-A" in shown and "0.7123" in shown
    assert json.loads(shown[shown.index("\n{") + 1:])["version"] == "v0002"

    edit(reg, "versions/v0001/metadata.json", b"{")
    assert "CORRUPT" in render_version_list(reg)

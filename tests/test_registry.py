"""Model registry: versions, gate, alias, rollback, corruption, locking and crashes.

Real files and real processes throughout; only the Keras test imports TensorFlow.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
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

REPO = Path(__file__).resolve().parents[1]
POLICY = GatePolicy()

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


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", class_names=CLASSES)


@pytest.fixture
def add(reg: Registry, tmp_path: Path):
    """Register a fresh artifact dir with metadata(**kwargs); return the version id."""
    counter = iter(range(10_000))

    def _add(created_by: str = "test", **kwargs: object) -> str:
        n = next(counter)
        artifact = make_artifact(tmp_path / f"artifact-{n}", payload=f"model {n}")
        return reg.register(artifact, metadata(**kwargs), created_by=created_by)

    return _add


def writable(path: Path) -> Path:
    """Undo the registry's read-only bits so a test can tamper like a person would."""
    path.chmod(0o755 if path.is_dir() else 0o644)
    return path


def run_python(code: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- register


def test_register_writes_an_immutable_version_with_lineage(reg, add, tmp_path):
    caller_meta = metadata(calibration={"temperature": 1.3}, review={"threshold": 0.6})
    artifact = make_artifact(tmp_path / "art", payload="first")
    v1 = reg.register(artifact, caller_meta, created_by="trainer-run-1")
    assert v1 == "v0001"
    assert caller_meta == metadata(calibration={"temperature": 1.3}, review={"threshold": 0.6})

    info = reg.get(v1)
    assert info.path == reg.root / "versions" / "v0001"
    assert info.model_path.read_text() == "first"
    meta = info.metadata
    assert {k: meta[k] for k in caller_meta} == caller_meta
    assert meta["version"] == "v0001"
    assert meta["created_by"] == "trainer-run-1"
    assert meta["parent_champion"] is None
    assert meta["created_at"].endswith("+00:00")
    assert set(meta["sha256"]) == {"model.keras", "weights.npz", "report/metrics.json",
                                 "metadata.json"}
    for path in [info.path, *info.path.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o555 if path.is_dir() else 0o444), path
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
    assert event["reasons"] == decision.reasons


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
    assert json.loads(reg.alias_path.read_text())["previous"] == []


def test_check_gate_has_no_side_effects(reg, add):
    reg.promote(add(accuracy=0.9), policy=POLICY, actor="t")
    better, worse = add(accuracy=0.95), add(accuracy=0.7)
    before = (reg.alias_path.read_bytes(), reg.events_path.read_bytes())
    assert reg.check_gate(better, POLICY).passed
    assert not reg.check_gate(worse, POLICY).passed
    assert (reg.alias_path.read_bytes(), reg.events_path.read_bytes()) == before


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
    assert [(e["previous"], e["version"], e["actor"]) for e in rollbacks] == [
        (v3, v2, "carol"), (v2, v1, "carol")]
    assert reg.promote(v3, policy=POLICY, actor="t").passed
    assert reg.rollback(actor="t") == v1


# --------------------------------------------------------------------------- corruption


def _bad_json(path: Path) -> None:
    writable(path / "metadata.json").write_text('{"metrics": ')


def _missing_key(path: Path) -> None:
    meta = json.loads((path / "metadata.json").read_text())
    del meta["eval_data_fingerprint"]
    writable(path / "metadata.json").write_text(json.dumps(meta))


def _wrong_type(path: Path) -> None:
    meta = json.loads((path / "metadata.json").read_text())
    meta["metrics"]["per_class_recall"] = "high"
    writable(path / "metadata.json").write_text(json.dumps(meta))


def _modified_model(path: Path) -> None:
    writable(path / "model.keras").write_text("swapped weights")


def _extra_file(path: Path) -> None:
    (writable(path) / "notes.txt").write_text("hi")


def _deleted_weights(path: Path) -> None:
    writable(path)
    (path / "weights.npz").unlink()


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
    tamper(reg.root / "versions" / version)
    for call in (lambda: reg.get(version), lambda: reg.check_gate(version, POLICY),
                 lambda: reg.promote(version, policy=POLICY, actor="t")):
        with pytest.raises(CorruptMetadataError, match=message):
            call()


def test_a_copied_version_directory_is_detected(reg, add):
    add()
    source, copy = reg.root / "versions" / "v0001", reg.root / "versions" / "v0002"
    copy.mkdir()
    for name in ("model.keras", "weights.npz", "metadata.json"):
        (copy / name).write_bytes((source / name).read_bytes())
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
    reg.alias_path.write_text(alias if isinstance(alias, str) else json.dumps(alias))
    for call in (reg.champion, lambda: reg.get("champion"), lambda: reg.rollback(actor="t"),
                 lambda: reg.promote("v0001", policy=POLICY, actor="t")):
        with pytest.raises(CorruptMetadataError, match=rf"aliases/champion\.json: .*{message}"):
            call()


def test_a_corrupt_event_line_is_reported_with_its_line_number(reg, add):
    add()
    add()
    lines = reg.events_path.read_text().splitlines()
    reg.events_path.write_text(f"{lines[0]}\n{{oops\n{lines[1]}\n")
    with pytest.raises(CorruptMetadataError, match=r"events\.jsonl:2: not valid JSON"):
        reg.events()


def test_a_torn_last_event_line_is_ignored_then_repaired(reg, add):
    add()
    with reg.events_path.open("a") as handle:
        handle.write('{"ts": "2026-01-01", "event": "regi')
    assert [e["version"] for e in reg.events()] == ["v0001"]
    add()
    assert [e["version"] for e in reg.events()] == ["v0001", "v0002"]
    assert all(json.loads(line) for line in reg.events_path.read_text().splitlines())


# --------------------------------------------------------------------------- lock, processes


def test_a_held_lock_makes_writers_wait_then_time_out(reg, add):
    reg.root.mkdir(parents=True)
    impatient = Registry(reg.root, class_names=CLASSES, lock_timeout=0.3)
    with open(reg.root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"\.lock: another process has held"):
            impatient.rollback(actor="t")
        assert time.monotonic() - started >= 0.3
    add()
    assert reg.version_ids() == ["v0001"]


WORKER = """
    import random, sys, time
    from pathlib import Path
    from model_registry import GatePolicy, Registry

    root, scratch, worker, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    registry, rng = Registry(root), random.Random(worker)
    while not (scratch / "go").exists():
        time.sleep(0.005)
    for i in range(count):
        payload = f"{worker}-{i}"
        artifact = scratch / payload
        (artifact / "report").mkdir(parents=True)
        (artifact / "model.keras").write_text(payload)
        (artifact / "report" / "r.json").write_text(payload)
        meta = {"metrics": {"accuracy": round(rng.uniform(0.86, 0.95), 4), "loss": 0.3,
                            "per_class_recall": [0.8] * 10},
                "eval_data_fingerprint": "eval-A", "training_data_fingerprint": "t",
                "hyperparameters": {}, "library_versions": {}, "payload": payload}
        version = registry.register(artifact, meta, created_by=worker)
        registry.promote(version, policy=GatePolicy(), actor=worker)
"""


def test_concurrent_processes_registering_and_promoting_do_not_corrupt(reg, tmp_path):
    workers, per_worker = 3, 8
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER), str(reg.root),
                               str(scratch), f"w{n}", str(per_worker)],
                              env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
             for n in range(workers)]
    time.sleep(1.0)  # let every interpreter start, then release them together
    (scratch / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err

    total = workers * per_worker
    assert reg.version_ids() == [f"v{n:04d}" for n in range(1, total + 1)]
    for version in reg.version_ids():
        info = reg.get(version)  # metadata valid and checksums match
        assert info.model_path.read_text() == info.metadata["payload"]
        assert info.metadata["payload"].startswith(info.metadata["created_by"])
    assert not list((reg.root / "versions").glob(".tmp-*"))

    events = [json.loads(line) for line in reg.events_path.read_text().splitlines()]
    assert events == reg.events()
    assert sorted(e["version"] for e in events if e["event"] == "register") == reg.version_ids()
    assert len([e for e in events if e["event"] in ("promoted", "refused")]) == total
    # Replaying the log reproduces the alias and every version's parent_champion: the
    # writes were serialised, none lost.
    champion, history = None, []
    for event in events:
        if event["event"] == "register":
            assert reg.get(event["version"]).metadata["parent_champion"] == champion
        elif event["event"] == "promoted" and event["version"] != champion:
            assert event["previous"] == champion
            history.append(champion)
            champion = event["version"]
    alias = json.loads(reg.alias_path.read_text())
    assert alias["version"] == champion == reg.champion()
    assert alias["previous"] == [v for v in history if v is not None]
    assert len({e["actor"] for e in events if e["event"] == "promoted"}) > 1


def test_crash_between_register_and_promote_leaves_the_champion(reg, add):
    reg.promote(add(accuracy=0.88), policy=POLICY, actor="t")
    result = run_python("""
        import os, sys
        from pathlib import Path
        from model_registry import Registry
        artifact = Path(sys.argv[2])
        artifact.mkdir()
        (artifact / "model.keras").write_text("new")
        meta = {"metrics": {"accuracy": 0.95, "loss": 0.2, "per_class_recall": [0.9] * 10},
                "eval_data_fingerprint": "eval-A", "training_data_fingerprint": "t",
                "hyperparameters": {}, "library_versions": {}}
        Registry(sys.argv[1]).register(artifact, meta, created_by="crasher")
        os._exit(1)  # dies before promote
    """, reg.root, reg.root.parent / "crash-artifact")
    assert result.returncode == 1, result.stderr
    assert reg.champion() == "v0001"
    assert reg.get("v0002").metadata["created_by"] == "crasher"
    assert reg.promote("v0002", policy=POLICY, actor="t").passed


def test_sigkill_inside_register_leaves_the_registry_readable(reg, add):
    reg.promote(add(), policy=POLICY, actor="t")
    result = run_python("""
        import os, signal, sys
        from pathlib import Path
        from model_registry import Registry
        artifact = Path(sys.argv[2])
        artifact.mkdir()
        (artifact / "model.keras").write_text("never committed")
        meta = {"metrics": {"accuracy": 0.95, "loss": 0.2, "per_class_recall": [0.9] * 10},
                "eval_data_fingerprint": "eval-A", "training_data_fingerprint": "t",
                "hyperparameters": {}, "library_versions": {}}
        # Die at the commit point: staging dir complete and sealed, lock held.
        os.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        Registry(sys.argv[1]).register(artifact, meta, created_by="crasher")
    """, reg.root, reg.root.parent / "crash-artifact")
    assert result.returncode == -signal.SIGKILL, result.stderr
    strays = list((reg.root / "versions").glob(".tmp-*"))
    assert len(strays) == 1 and (strays[0] / "metadata.json").is_file()

    assert [v.version for v in reg.list_versions()] == ["v0001"]
    assert reg.champion() == "v0001" and reg.get("champion").version == "v0001"
    assert [e["event"] for e in reg.events()] == ["register", "promoted"]

    patient = Registry(reg.root, lock_timeout=5)  # the dead process's lock was released
    v2 = patient.register(make_artifact(reg.root.parent / "after"), metadata(), created_by="t")
    assert v2 == "v0002"
    assert not strays[0].exists()


def test_sigkill_while_moving_the_alias_keeps_the_old_champion(reg, add):
    reg.promote(add(accuracy=0.88), policy=POLICY, actor="t")
    better = add(accuracy=0.93)
    result = run_python("""
        import os, signal, sys
        from model_registry import GatePolicy, Registry
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        Registry(sys.argv[1]).promote(sys.argv[2], policy=GatePolicy(), actor="crasher")
    """, reg.root, better)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert list(reg.alias_path.parent.glob(".tmp-*"))  # it died after writing the temp file
    assert reg.champion() == "v0001"
    assert not any(e["actor"] == "crasher" for e in reg.events())

    assert Registry(reg.root, lock_timeout=5).promote(better, policy=POLICY, actor="t").passed
    assert reg.champion() == better
    assert not list(reg.alias_path.parent.glob(".tmp-*"))


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

    writable(reg.root / "versions" / "v0001" / "metadata.json").write_text("{")
    assert "CORRUPT" in render_version_list(reg)

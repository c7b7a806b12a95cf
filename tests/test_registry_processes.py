"""Model registry with real processes: races, kills and pauses, on a local folder and on S3
(`registry_root`); then what an S3 registry says when the bucket or the credentials are wrong.

No lock is shared by writers: ids are claimed create-only, metadata.json is the create-only
commit point, the champion alias moves by compare-and-swap on its ETag.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from test_registry import CLASSES, POLICY, make_artifact, metadata

from model_registry import GatePolicy, Registry, RegistryError, VersionNotFound
from model_registry.gate import evaluate_gate
from model_registry.render import render_version_list

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def reg(registry_root, tmp_path) -> Registry:
    return Registry(registry_root, class_names=CLASSES, cache_dir=tmp_path / "cache")


def add(reg: Registry, directory: Path, accuracy: float = 0.9, created_by: str = "t") -> str:
    return reg.register(make_artifact(directory, payload=directory.name),
                        metadata(accuracy=accuracy), created_by=created_by)


def python(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def run_python(code: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(python(code, *args), env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def objects_of(reg: Registry, version: str) -> set[str]:
    return {o.key.removeprefix(f"versions/{version}/")
            for o in reg.store.list(f"versions/{version}/")}


# --------------------------------------------------------------------------- races

WORKER = """
    import logging, random, sys, time
    from pathlib import Path
    from model_registry import GatePolicy, Registry

    logging.basicConfig(level=logging.INFO)
    root, scratch, worker, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    registry, rng = Registry(root, cache_dir=scratch / f"cache-{worker}"), random.Random(worker)
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


def release(procs: list[subprocess.Popen], go: Path) -> list[str]:
    """Let every interpreter start, release them together; their stderr once they are done."""
    time.sleep(1.0)
    go.touch()
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        errors.append(err)
    return errors


def test_concurrent_registrants_and_promoters_do_not_corrupt(reg, tmp_path):
    """Three processes register and promote at once: distinct ids without gaps (a taken id
    is retried), every version intact, and the alias history replays from the events."""
    workers, per_worker = 3, 6
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(python(WORKER, reg.root, scratch, f"w{n}", per_worker), env=env,
                              cwd=REPO, stderr=subprocess.PIPE, text=True)
             for n in range(workers)]
    logs = release(procs, scratch / "go")

    total = workers * per_worker
    assert reg.version_ids() == [f"v{n:04d}" for n in range(1, total + 1)]
    for version in reg.version_ids():
        info = reg.get(version)  # metadata valid and checksums match
        assert info.model_path.read_text() == info.metadata["payload"]
        assert info.metadata["payload"].startswith(info.metadata["created_by"])
    retries = sum(log.count("was taken by another registrant") for log in logs)
    print(f"\n{workers} registrants x {per_worker}: {total} ids, {retries} claim retries")

    events = reg.events()
    assert sorted(e["version"] for e in events if e["event"] == "register") == reg.version_ids()
    assert len([e for e in events if e["event"] in ("promoted", "refused")]) == total
    assert_alias_replays(reg, events)


def assert_alias_replays(reg: Registry, events: list[dict]) -> list[dict]:
    """The alias moves, ordered by generation, form one unbroken chain that ends in the
    alias: no move was lost or made against a stale champion. Returns the moves."""
    moves = sorted((e for e in events if "generation" in e), key=lambda e: e["generation"])
    assert [e["generation"] for e in moves] == list(range(1, len(moves) + 1))
    champion, history = None, []
    for move in moves:
        assert move["previous"] == champion, move
        history.append(champion)
        champion = move["version"]
    alias = json.loads(reg.store.get("aliases/champion.json")[0])
    assert (alias["version"], alias["generation"]) == (champion, len(moves))
    assert alias["previous"] == [v for v in history if v is not None]
    return moves


RACER = """
    import sys, time
    from pathlib import Path
    from model_registry import GatePolicy, Registry

    root, scratch, name, candidates = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
    registry = Registry(root, cache_dir=scratch / f"cache-{name}")
    for round_, candidate in enumerate(candidates):
        while not (scratch / f"go-{round_}").exists():
            time.sleep(0.002)
        registry.promote(candidate, policy=GatePolicy(tolerance=0.0), actor=name)
        (scratch / f"done-{round_}-{name}").touch()
"""


def test_promote_race_has_one_winner_per_round_and_logs_every_attempt(reg, tmp_path):
    """Each round, every racer promotes its own candidate over the same champion at once.
    Exactly one compare-and-swap wins against that champion; each loser logs a conflict,
    re-reads and runs the gate again against the new champion (tolerance 0: only a better
    candidate moves it again), so each round ends with its best candidate as champion."""
    racers, rounds = 4, 3
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    reg.promote(add(reg, tmp_path / "base", 0.86), policy=POLICY, actor="setup")
    plan = []  # per round: racer -> (candidate, accuracy)
    for r in range(rounds):
        accuracies = [round(0.87 + 0.02 * r + 0.002 * k, 4) for k in range(racers)]
        random.Random(r).shuffle(accuracies)
        plan.append({f"racer{k}": (add(reg, tmp_path / f"r{r}k{k}", a), a)
                     for k, a in enumerate(accuracies)})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(python(RACER, reg.root, scratch, name,
                                     *(plan[r][name][0] for r in range(rounds))),
                              env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
             for name in plan[0]]
    time.sleep(1.0)
    starts = []
    for r in range(rounds):
        starts.append(reg.champion())
        (scratch / f"go-{r}").touch()
        deadline = time.monotonic() + 300
        while len(list(scratch.glob(f"done-{r}-*"))) < racers:
            assert time.monotonic() < deadline and all(p.poll() in (None, 0) for p in procs)
            time.sleep(0.01)
        best = max(plan[r].values(), key=lambda c: c[1])[0]
        assert reg.champion() == best
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    events = [e for e in reg.events() if e["actor"] != "setup"]
    moves = assert_alias_replays(reg, reg.events())
    conflicts = [e for e in events if e["event"] == "conflict"]
    for r, start in enumerate(starts):
        mine = {c for c, _ in plan[r].values()}
        assert len([m for m in moves if m["previous"] == start and m["version"] in mine]) == 1
        for name, (candidate, _) in plan[r].items():  # one decision per attempt, logged
            final = [e for e in events if e["actor"] == name and e["version"] == candidate
                     and e["event"] in ("promoted", "refused")]
            assert len(final) == 1, final
    for move in moves[1:]:  # every move was gated against the champion it replaced
        ours, theirs = reg.get(move["version"]).metadata, reg.get(move["previous"]).metadata
        assert evaluate_gate(move["version"], ours, move["previous"], theirs,
                             GatePolicy(tolerance=0.0)).passed
    assert all(c["champion"] != c["previous"] for c in conflicts)
    print(f"\n{racers} racers x {rounds} rounds: {len(moves) - 1} champion moves, "
          f"1 first-swap winner per round, {len(conflicts)} lost swaps (logged, re-gated)")


# --------------------------------------------------------------------------- crashes

DIE_AT = """
    import json, os, signal, sys
    from pathlib import Path
    from model_registry import GatePolicy, Registry

    root, action, key, how = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    registry = Registry(root, cache_dir=Path(sys.argv[5]) / "cache")
    put = registry.store.put

    def put_or_die(name, data, mode="overwrite"):
        if name.endswith(key):
            os.kill(os.getpid(), getattr(signal, how))
        return put(name, data, mode)

    registry.store.put = put_or_die
    if action == "register":
        artifact = Path(sys.argv[5]) / "artifact"
        artifact.mkdir()
        (artifact / "model.keras").write_text("never committed")
        meta = {"metrics": {"accuracy": 0.95, "loss": 0.2, "per_class_recall": [0.9] * 10},
                "eval_data_fingerprint": "eval-A", "training_data_fingerprint": "t",
                "hyperparameters": {}, "library_versions": {}}
        registry.register(artifact, meta, created_by="crasher")
    else:
        registry.promote(action, policy=GatePolicy(), actor="crasher")
"""


def test_a_register_killed_before_its_commit_point_is_invisible_then_abandoned(reg, tmp_path):
    reg.promote(add(reg, tmp_path / "first"), policy=POLICY, actor="t")
    result = run_python(DIE_AT, reg.root, "register", "metadata.json", "SIGKILL", tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert objects_of(reg, "v0002") == {".claim", "model.keras"}  # files, no commit point

    assert [v.version for v in reg.list_versions()] == reg.version_ids() == ["v0001"]
    assert reg.champion() == "v0001" and reg.get("champion").version == "v0001"
    assert [e["event"] for e in reg.events()] == ["register", "promoted"]
    assert "v0002" not in render_version_list(reg)
    with pytest.raises(VersionNotFound, match="no version 'v0002'"):
        reg.get("v0002")

    assert add(reg, tmp_path / "next") == "v0003"  # the id stays claimed; too fresh to clean
    assert objects_of(reg, "v0002") == {".claim", "model.keras"}
    cleaner = Registry(reg.root, class_names=CLASSES, abandon_after=0,
                       cache_dir=tmp_path / "cache")
    assert add(cleaner, tmp_path / "cleaner") == "v0004"
    assert objects_of(reg, "v0002") == {".claim", ".abandoned", "metadata.json"}
    assert reg.version_ids() == ["v0001", "v0003", "v0004"]
    abandoned = [e for e in reg.events() if e["event"] == "abandoned"]
    assert [e["version"] for e in abandoned] == ["v0002"]
    add(cleaner, tmp_path / "again")  # nothing left to abandon
    assert len([e for e in reg.events() if e["event"] == "abandoned"]) == 1


def test_a_paused_register_cannot_commit_once_abandoned(reg, tmp_path):
    """A registrant paused past abandon_after (SIGSTOP) loses the create-only commit point
    to the tombstone and says so: nothing half-registered, ever."""
    reg.promote(add(reg, tmp_path / "first"), policy=POLICY, actor="t")
    proc = subprocess.Popen(python(DIE_AT, reg.root, "register", "metadata.json", "SIGSTOP",
                                   tmp_path), env={**os.environ, "PYTHONPATH": str(REPO)},
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        cleaner = Registry(reg.root, class_names=CLASSES, abandon_after=0,
                           cache_dir=tmp_path / "cache")
        assert add(cleaner, tmp_path / "cleaner") == "v0003"
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "another registrant abandoned it" in err, err
    assert objects_of(reg, "v0002") == {".claim", ".abandoned", "metadata.json"}
    assert reg.version_ids() == ["v0001", "v0003"]
    assert all(reg.get(v) for v in reg.version_ids())


def test_a_version_that_committed_while_being_abandoned_is_kept(reg, tmp_path):
    """A cleaner marked a slow register `.abandoned`, lost the commit point to it and died
    before taking the mark back: the next cleaner sees the real metadata.json and restores
    the version (whatever its metadata says)."""
    version = reg.register(make_artifact(tmp_path / "slow", "slow"),
                           metadata(abandoned="a key of the caller's"), created_by="slow")
    reg.store.put(f"versions/{version}/.abandoned", b"{}", mode="create")
    assert reg.version_ids() == []
    cleaner = Registry(reg.root, class_names=CLASSES, abandon_after=0,
                       cache_dir=tmp_path / "cache")
    add(cleaner, tmp_path / "next")
    assert reg.version_ids() == [version, "v0002"]
    assert reg.get(version).model_path.read_text() == "slow"


def test_crash_between_register_and_promote_leaves_the_champion(reg, tmp_path):
    reg.promote(add(reg, tmp_path / "first", 0.88), policy=POLICY, actor="t")
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
    """, reg.root, tmp_path / "crash-artifact")
    assert result.returncode == 1, result.stderr
    assert reg.champion() == "v0001"
    assert reg.get("v0002").metadata["created_by"] == "crasher"
    assert reg.promote("v0002", policy=POLICY, actor="t").passed


def test_sigkill_while_moving_the_alias_keeps_the_old_champion(reg, tmp_path):
    reg.promote(add(reg, tmp_path / "first", 0.88), policy=POLICY, actor="t")
    better = add(reg, tmp_path / "better", 0.93)
    alias = reg.store.get("aliases/champion.json")
    result = run_python(DIE_AT, reg.root, better, "champion.json", "SIGKILL", tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert reg.store.get("aliases/champion.json") == alias
    assert reg.champion() == "v0001"
    assert not any(e["actor"] == "crasher" for e in reg.events())
    assert reg.promote(better, policy=POLICY, actor="t").passed
    assert reg.champion() == better


def test_local_alias_swap_lock_times_out_clearly(tmp_path):
    """On a local folder the compare-and-swap holds a lock beside the alias for the compare
    and the replace (obstore's LocalStore has no conditional update); nothing else locks."""
    reg = Registry(tmp_path / "registry", class_names=CLASSES, lock_timeout=0.3)
    reg.promote(add(reg, tmp_path / "first"), policy=POLICY, actor="t")
    second = add(reg, tmp_path / "second", 0.95)
    with open(reg.root / "aliases" / ".champion.json.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(RegistryError, match=r"\.champion\.json\.lock: another process has"):
            reg.promote(second, policy=POLICY, actor="t")
        assert add(reg, tmp_path / "third") == "v0003"  # registering takes no lock
    assert reg.champion() == "v0001"
    assert reg.promote(second, policy=POLICY, actor="t").passed


# --------------------------------------------------------------------------- S3 faults


def test_a_missing_bucket_is_a_clear_error_and_is_not_created(s3_env, tmp_path):
    reg = Registry("s3://no-such-bucket/registry", cache_dir=tmp_path / "cache")
    for call in (reg.version_ids, reg.champion, reg.events,
                 lambda: add(reg, tmp_path / "a"),
                 lambda: reg.promote("v0001", policy=POLICY, actor="t"), reg.version_ids):
        with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist"):
            call()


def test_wrong_or_missing_credentials_are_clear_errors(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    reg = Registry("s3://tagging/denied", cache_dir=tmp_path / "cache")
    for call in (reg.version_ids, reg.champion, lambda: add(reg, tmp_path / "a")):
        with pytest.raises(RegistryError, match="access denied") as raised:
            call()
        assert "not-the-secret" not in str(raised.value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(RegistryError, match="set AWS_ACCESS_KEY_ID"):
        Registry("s3://tagging/denied")


@pytest.mark.parametrize(("bucket", "secret", "message"), [
    ("no-such-bucket", None, "does not exist"),
    ("tagging", "not-the-secret", "access denied"),
])
def test_the_cli_reports_s3_faults_in_one_line(s3_env, bucket, secret, message):
    env = {**os.environ, "TAGGING_REGISTRY": f"s3://{bucket}/registry", "COLUMNS": "80"}
    if secret:
        env["AWS_SECRET_ACCESS_KEY"] = secret
    for command in (["list"], ["events"], ["promote", "v0001"], ["rollback"]):
        proc = subprocess.run([sys.executable, "-m", "tagging.cli", "registry", *command],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert out.count("error:") == 1 and "Traceback" not in out, out
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], out
        assert secret is None or secret not in out


def test_the_cli_manages_an_s3_registry(s3_env, tmp_path):
    root = "s3://tagging/cli-registry"
    reg = Registry(root, class_names=CLASSES, cache_dir=tmp_path / "cache")
    first, second = add(reg, tmp_path / "first", 0.9), add(reg, tmp_path / "second", 0.91)
    env = {**os.environ, "TAGGING_REGISTRY": root, "COLUMNS": "200",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}

    def tagging(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tagging.cli", "registry", *args],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert f"{first} promoted" in tagging("promote", first)
    assert f"{second} promoted" in tagging("promote", second)
    listing = tagging("list")
    assert first in listing and second in listing and root in listing
    shown = tagging("show", "champion")
    assert f"{second} (champion)" in shown and f"{root}/versions/{second}" in shown
    assert f"rolled back to {first}" in tagging("rollback")
    events = [json.loads(line) for line in tagging("events").splitlines()]
    assert [e["event"] for e in events] == ["register", "register", "promoted", "promoted",
                                            "rollback"]
    assert reg.champion() == first
    assert (tmp_path / "xdg" / "model-registry").is_dir()  # `show` verified a cached copy

"""The model registry on a local folder vs on S3 (SeaweedFS on loopback): latency and races.

    .venv/bin/python benchmarks/bench_registry.py                 # 10 repeats, 8 racers x 5
    .venv/bin/python benchmarks/bench_registry.py --repeats 5 --racers 4 --rounds 3

Starts its own S3 server (tagging.ops.s3server) under WORKDIR, then for each root:

* register: a model-sized artifact (model.keras + weights.npz of `--model-mb` MB each, a
  report file) into a fresh version (claim, upload, create-only metadata.json, event);
* promote: gate + compare-and-swap of the alias + event (a new champion every time);
* resolve: `resolve("champion")` (read alias, check its version exists);
* get (cold): `get(version)` with checksums; on S3 this downloads the files into the cache;
* get (warm): the same again (S3: the cached copy is re-hashed; local: hashed in place);
* events: reading the whole log (one object per event).

Then the promote race: `--racers` processes, each with its own candidate per round, released
together `--rounds` times; counts the alias moves, the first-swap winners per round (each
round starts from one champion: exactly one racer may move it from there) and the lost swaps
(each logged as a "conflict" event, then gated again). Prints a table, writes WORKDIR/registry.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_registry import GatePolicy, Registry  # noqa: E402
from tagging.ops.s3server import S3Server  # noqa: E402

META = {"metrics": {"accuracy": 0.9, "loss": 0.3, "per_class_recall": [0.8] * 10},
        "eval_data_fingerprint": "e", "training_data_fingerprint": "t",
        "hyperparameters": {}, "library_versions": {}}
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


def artifact(folder: Path, megabytes: float, tag: str) -> Path:
    (folder / "report").mkdir(parents=True)
    size = int(megabytes * 2**20)
    (folder / "model.keras").write_bytes(os.urandom(size))
    (folder / "weights.npz").write_bytes(os.urandom(size))
    (folder / "report" / "metrics.json").write_text(json.dumps({"tag": tag}))
    return folder


def timed(call: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, float]:
    """(what call(*args, **kwargs) returned, milliseconds it took)."""
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return result, (time.perf_counter() - start) * 1000


def latencies(root: str | Path, work: Path, repeats: int, megabytes: float) -> dict:
    """Milliseconds per operation (median, max) on one registry root."""
    reg = Registry(root, cache_dir=work / "cache")
    ms: dict[str, list[float]] = {k: [] for k in ("register", "promote", "resolve",
                                                  "get (cold)", "get (warm)", "events")}
    for i in range(repeats):
        folder = artifact(work / f"artifact-{i}", megabytes, str(i))
        meta = {**META, "metrics": {**META["metrics"], "accuracy": 0.86 + 0.001 * i}}
        version, took = timed(reg.register, folder, meta, created_by="bench")
        ms["register"].append(took)
        ms["promote"].append(timed(reg.promote, version, policy=GatePolicy(), actor="b")[1])
        ms["resolve"].append(timed(reg.resolve, "champion")[1])
        shutil.rmtree(work / "cache", ignore_errors=True)
        ms["get (cold)"].append(timed(reg.get, version)[1])
        ms["get (warm)"].append(timed(reg.get, version)[1])
        ms["events"].append(timed(reg.events)[1])
    return {op: {"median_ms": round(statistics.median(v), 1), "max_ms": round(max(v), 1)}
            for op, v in ms.items()} | {"events_at_end": len(reg.events())}


def race(root: str | Path, work: Path, racers: int, rounds: int) -> dict:
    """Racers promote their own candidates over one champion, released together."""
    reg = Registry(root, cache_dir=work / "cache")
    reg.promote(reg.register(artifact(work / "base", 0.01, "base"), META, created_by="setup"),
                policy=GatePolicy(), actor="setup")
    plan = [[reg.register(artifact(work / f"r{r}k{k}", 0.01, f"{r}-{k}"),
                          {**META, "metrics": {**META["metrics"],
                                               "accuracy": 0.91 + 0.02 * r + 0.001 * k}},
                          created_by="setup") for k in range(racers)] for r in range(rounds)]
    scratch = work / "race"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(RACER), str(root),
                               str(scratch), f"racer{k}", *(plan[r][k] for r in range(rounds))],
                              env=env, cwd=REPO, stderr=(scratch / f"racer{k}.log").open("w"))
             for k in range(racers)]
    time.sleep(2.0)
    starts, seconds = [], []
    for r in range(rounds):
        starts.append(reg.champion())
        begin = time.perf_counter()
        (scratch / f"go-{r}").touch()
        while len(list(scratch.glob(f"done-{r}-*"))) < racers:
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit("a racer failed")
            time.sleep(0.005)
        seconds.append(time.perf_counter() - begin)
    for proc in procs:
        proc.wait(60)
    events = [e for e in reg.events() if e["actor"] != "setup"]
    moves = [e for e in events if "generation" in e]
    first_winners = [sum(1 for m in moves if m["previous"] == start and m["version"] in plan[r])
                     for r, start in enumerate(starts)]
    return {"racers": racers, "rounds": rounds, "moves": len(moves),
            "first_swap_winners_per_round": first_winners,
            "lost_swaps_logged": sum(1 for e in events if e["event"] == "conflict"),
            "decisions_logged": sum(1 for e in events if e["event"] in ("promoted", "refused")),
            "champion_is_best_of_last_round": reg.champion() == plan[-1][-1],
            "round_seconds_median": round(statistics.median(seconds), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model-mb", type=float, default=1.0,
                        help="size of model.keras and of weights.npz (the default model's "
                        "are ~1 MB each)")
    parser.add_argument("--racers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-registry-"))
    server = S3Server(work / "s3").start(buckets=("bench",))
    os.environ.update(server.env())
    try:
        results = {}
        for name, root in (("local", work / "local-registry"), ("s3", "s3://bench/registry")):
            (work / name).mkdir(parents=True, exist_ok=True)
            results[name] = latencies(root, work / name, args.repeats, args.model_mb)
            race_root = work / "local-race" if name == "local" else "s3://bench/race"
            (work / f"{name}-race").mkdir(parents=True, exist_ok=True)
            results[name]["race"] = race(race_root, work / f"{name}-race", args.racers,
                                         args.rounds)
    finally:
        server.stop()
    print(f"{'operation':<14}{'local ms':>12}{'S3 ms':>12}   (median of {args.repeats}; "
          f"max in brackets; {args.model_mb:g} MB x 2 files)")
    for op in ("register", "promote", "resolve", "get (cold)", "get (warm)", "events"):
        cells = [f"{results[r][op]['median_ms']:.1f} ({results[r][op]['max_ms']:.0f})"
                 for r in ("local", "s3")]
        print(f"{op:<14}{cells[0]:>12}{cells[1]:>12}")
    for name in ("local", "s3"):
        print(f"race on {name}: {json.dumps(results[name]['race'])}")
    (work / "registry.json").write_text(json.dumps(results, indent=2))
    print(f"written: {work / 'registry.json'}")


if __name__ == "__main__":
    main()

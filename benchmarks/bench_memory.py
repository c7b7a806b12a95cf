"""Memory per kind of worker (issue 26): peak resident memory and address space of every
process the job runs, as the real commands run them; one command, one report.

    .venv/bin/python benchmarks/bench_memory.py                 # 2,000 real photos
    .venv/bin/python benchmarks/bench_memory.py --rows 10000

1. the training worker: `tagging train --real-photos <shared>/real-photos-dev` (the default
   input, the default recipe), into a fresh registry;
2. a tagging worker: `tagging tag` on --rows rows (the shared real photos cycled), with that
   version: the main process and its decoding processes;
3. the review app: `tagging review fill`, then the app (uvicorn, as `tagging review serve`
   runs it) answering --answers photos, one reviewer, page after page.

Each is a fresh process tree sampled every 50 ms (bench_tagging.TreeMonitor): peak RSS and
peak address space (VmSize, what `ulimit -v` / `prlimit --as` limits) per kind of process.
Prints the table and writes WORKDIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bench_encoder import SHARED, write_partition  # this script's folder is on sys.path
from bench_review import DAY, Client, answer_cycle, start_app
from bench_tagging import REPO, TreeMonitor, log

TAGGING = [sys.executable, "-m", "tagging.cli"]


def monitored(command: list[str]) -> dict:
    """Run a command to its end as a monitored process tree."""
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    monitor = TreeMonitor(proc.pid)
    monitor.start()
    code = proc.wait()
    usage = monitor.stop()
    if code != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed (exit {code})")
    return usage


def review_app(catalogue: Path, registry: Path, work: Path, answers: int) -> dict:
    db = work / "review.db"
    subprocess.run([*TAGGING, "review", "fill", "--catalogue", str(catalogue), "--db", str(db),
                    "--date", DAY], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    proc = start_app(catalogue, db, port=8767, log=work / "app.log")
    monitor = TreeMonitor(proc.pid)
    monitor.start()
    try:
        done = answer_cycle(Client(8767, "bench"), [], answers)
    finally:
        usage = monitor.stop()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return {**usage, "answers": done}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="photos tagged")
    parser.add_argument("--answers", type=int, default=200, help="answers given on the page")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench-memory")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    catalogue, registry = work / "catalogue", work / "registry"
    results = {}
    log("the training worker: tagging train --real-photos real-photos-dev")
    results["training"] = monitored([*TAGGING, "train", "--registry", str(registry),
                                     "--real-photos", str(SHARED / "real-photos-dev")])
    log(f"a tagging worker: tagging tag on {args.rows} real photos")
    write_partition(catalogue, args.rows, DAY)
    results["tagging"] = monitored([*TAGGING, "tag", "--catalogue", str(catalogue),
                                    "--date", DAY, "--registry", str(registry)])
    log(f"the review app: {args.answers} answers")
    results["review app"] = review_app(catalogue, registry, work, args.answers)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print("| worker | process | peak RSS MB | peak address space MB |")
    print("| --- | --- | --- | --- |")
    for worker, usage in results.items():
        for role, rss in usage["peak_rss_mb_per_process"].items():
            print(f"| {worker} | {role} | {rss:.0f} | "
                  f"{usage['peak_vms_mb_per_process'][role]:.0f} |")
        print(f"| {worker} | whole tree | {usage['peak_rss_mb']:.0f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the catalogue tagging path on this machine (issues 5, 13); one command, one report.

The figures here are the pixels baseline's (its 28x28 input: segmentation is the work); the
encoder's tagging throughput and its TensorFlow peer are bench_encoder.py's (issue 25).

    .venv/bin/python benchmarks/bench_tagging.py            # the full figure set
    .venv/bin/python benchmarks/bench_tagging.py --quick    # small sizes, a few minutes

Renders a pool of shop-style photos (762x1000, from Fashion-MNIST test images) once and cycles
through it to build partitions of any size, then measures, each run in its own process with
the whole process tree (workers included) sampled for memory and CPU:
training, the full `tagging tag` path (10k and 100k photos, plus a small-image variant),
the decode+preprocess lower bound (same worker pool, no Parquet, no model), a naive
baseline (pandas, full-size decode, per-row Keras `model.predict`) and a scale-out run
(one partition as one shard vs several shards in parallel processes).
Real photos (issue 13; `benchmarks/real_photos.py`): the labelled dev photos (a tenth
re-encoded as PNG, a tenth as WebP) cycled to a 10k partition, tagged by the job and by a
tf.data peer with the same registered model (trained with those photos), both also scored on
the held-out stream photos; the decode-only bound on the same photos; CPU per photo by format;
the wall time of a training with the labelled photos next to a plain one.
Figures are printed and written to WORKDIR/results.json. Needs Fashion-MNIST in
TAGGING_FASHION_MNIST_DIR (else it is downloaded, as `tagging train` does).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import real_photos  # benchmarks/real_photos.py (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
TAGGED_AT = "2026-01-01T03:00:00+00:00"
DATES = {"small": "2030-01-01", "big": "2030-01-02", "thumbs": "2030-01-03",
         "scale": "2030-01-04", "tiny": "2030-01-05", "real": "2030-01-06",
         "held_out": "2030-01-07"}
ROW_GROUP_ROWS = 256  # as tagging.catalogue.demo writes them
BROKEN_EVERY = 2000  # one set of broken rows (undecodable, truncated, ...) per this many photos
THUMB_LONG_EDGE = 250  # the small-image variant: listing thumbnails
FULL = {"rows": 100_000, "small_rows": 10_000, "pool": 2000, "naive_sample": 300,
        "scale_rows": 4000, "lower_bound_rows": 2000, "thumb_rows": 2000,
        "train": {"model_input": "pixels"},
        "real_rows": 10_000, "per_format": 100}
QUICK = {"rows": 3000, "small_rows": 1000, "pool": 300, "naive_sample": 40,
         "scale_rows": 1000, "lower_bound_rows": 300, "thumb_rows": 300,
         "train": {"model_input": "pixels", "train_subset": 12_000, "epochs": 4},
         "real_rows": 1000, "per_format": 30}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measuring a process tree


class TreeMonitor(threading.Thread):
    """Samples a process and all its descendants: peak summed RSS, CPU seconds per process,
    peak RSS and address space (VmSize) per kind of process."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (role, peak RSS)
        self.vms: dict[int, int] = {}  # pid -> peak address space
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            rss = 0
            for proc in procs:
                try:
                    with proc.oneshot():
                        memory = proc.memory_info()
                        mine = memory.rss
                        self.vms[proc.pid] = max(memory.vms, self.vms.get(proc.pid, 0))
                        times = proc.cpu_times()
                        self.cpu[proc.pid] = times.user + times.system
                        role = self.peaks.get(proc.pid, (None, 0))[0] or role_of(proc, root)
                except psutil.Error:
                    continue
                rss += mine
                self.peaks[proc.pid] = (role, max(mine, self.peaks.get(proc.pid, ("", 0))[1]))
            self.peak_rss = max(self.peak_rss, rss)
            self.done.wait(self.interval)

    def stop(self) -> dict:
        self.done.set()
        self.join()
        by_role: dict[str, float] = {}
        vms_by_role: dict[str, float] = {}
        for pid, (role, peak) in self.peaks.items():
            by_role[role] = max(by_role.get(role, 0.0), round(peak / 2**20, 1))
            vms_by_role[role] = max(vms_by_role.get(role, 0.0), round(self.vms[pid] / 2**20, 1))
        return {"peak_rss_mb": round(self.peak_rss / 2**20, 1),
                "peak_rss_mb_per_process": by_role,
                "peak_vms_mb_per_process": vms_by_role,
                "cpu_s": round(sum(self.cpu.values()), 2)}


def role_of(proc, root) -> str:
    """main / forkserver / resource_tracker / worker: how a process of the tree is used."""
    if proc.pid == root.pid:
        return "main"
    if proc.ppid() == root.pid:
        command = " ".join(proc.cmdline())
        return next((r for r in ("forkserver", "resource_tracker") if r in command), "child")
    return "worker (max)"


def run_child(kind: str, params: dict, script: str = __file__) -> dict:
    """Run a script's `kind` step (`script --child kind params`: this one's by default) in a
    fresh process; its result plus wall, memory, CPU."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, "--child", kind, json.dumps(params)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    monitor = TreeMonitor(proc.pid)
    monitor.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    usage = monitor.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {kind} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_s": round(wall, 2), **usage}


# ---------------------------------------------------------------- the catalogue


def render_pool(path: Path, size: int, data_dir: str | None, workers: int) -> None:
    """Render `size` demo photos (varied JPEG quality, some PNG/WebP) into one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tagging.labels import CATEGORY_SLUGS
    from tagging.model.data import load_fashion_mnist

    data = load_fashion_mnist(data_dir)
    picks = np.random.default_rng(0).choice(len(data.x_test), size=size, replace=False)
    with ProcessPoolExecutor(workers) as pool:
        photos = list(pool.map(_render, data.x_test[picks], range(size), chunksize=50))
    table = pa.table({"image": pa.array([b for b, _ in photos], pa.binary()),
                      "format": [f for _, f in photos],
                      "true_category": [CATEGORY_SLUGS[y] for y in data.y_test[picks]]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="none")


def _render(pixels: np.ndarray, seed: int) -> tuple[bytes, str]:
    from tagging.catalogue.demo import render_photo

    return render_photo(pixels, seed)


def thumbnail(data: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((THUMB_LONG_EDGE, THUMB_LONG_EDGE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_partition(root: Path, date: str, pool_path: Path, rows: int,
                    thumbs: bool = False) -> Path:
    """incoming/dt=DATE/part-0.parquet: `rows` photos cycled from the pool, plus broken rows,
    written row group by row group (never the whole partition in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tagging.catalogue.demo import broken_rows
    from tagging.catalogue.layout import input_dir

    pool = pq.read_table(pool_path)
    images, labels = pool["image"].to_pylist(), pool["true_category"].to_pylist()
    if thumbs:
        images = [thumbnail(b) for b in images]
    broken = broken_rows(images[0])
    out = input_dir(root, date).path / "part-0.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("product_id", pa.string()), ("image", pa.binary()),
                        ("image_uri", pa.string()), ("true_category", pa.string()),
                        ("title", pa.string())])
    rows_out = []
    with pq.ParquetWriter(out, schema, compression="none", use_dictionary=False) as writer:
        for i in range(rows):
            k = i % len(images)
            rows_out.append((f"{date}-{i:07d}", images[k], None, labels[k], "photo"))
            if i % BROKEN_EVERY == BROKEN_EVERY // 2:
                rows_out += [(f"{date}-{i:07d}-b{j}", image, uri, None, f"broken: {what}")
                             for j, (image, uri, what) in enumerate(broken)]
            if len(rows_out) >= ROW_GROUP_ROWS or i == rows - 1:
                writer.write_table(pa.Table.from_pylist(
                    [dict(zip(schema.names, r, strict=True)) for r in rows_out], schema))
                rows_out = []
    return out


# ---------------------------------------------------------------- child steps


def child_train(p: dict) -> dict:
    from model_registry import GatePolicy, Registry
    from tagging.model.config import TrainConfig
    from tagging.pipeline.learn import train_and_promote

    candidate, decision = train_and_promote(
        TrainConfig.from_dict(p["train"]), registry_root=p["registry"],
        data_dir=p["data_dir"], created_by="benchmark", policy=GatePolicy(**p["gate"]))
    metrics = Registry(p["registry"]).get(candidate.version).metadata["metrics"]
    return {"version": candidate.version, "promoted": bool(decision and decision.passed),
            "fit_s": metrics["train_wall_time_s"], "epochs": metrics["epochs_run"],
            "accuracy": metrics["accuracy"]}


def child_tag(p: dict) -> dict:
    """The CLI's path: tag_partition (plan, warm pool, tag every shard, publish)."""
    from tagging.catalogue.validate import truth_agreement
    from tagging.pipeline.tag import tag_partition

    summary = tag_partition(p["catalogue"], p["date"], registry_root=p["registry"],
                            model=p["model"], workers=p["workers"],
                            rows_per_shard=p["rows_per_shard"])
    return summary | truth_agreement(p["catalogue"], p["date"])


def child_shard(p: dict) -> dict:
    """One mapped DAG task: tag_shard in its own process."""
    start = time.perf_counter()
    from tagging.catalogue.tagger import tag_shard_to_staging

    staged = tag_shard_to_staging(p["shard"], catalogue_root=p["catalogue"],
                                  registry_root=p["registry"], model_version=p["version"],
                                  run_id=p["run_id"], tagged_at=TAGGED_AT, workers=p["workers"])
    return {"staged": staged, "inside_s": round(time.perf_counter() - start, 2)}


_POOL_IMAGES: list[bytes] = []


def _load_pool(path: str) -> None:
    import pyarrow.parquet as pq

    import tagging.photos.segment  # noqa: F401  (imported before the clock starts, as in a warm pool)

    _POOL_IMAGES[:] = pq.read_table(path, columns=["image"])["image"].to_pylist()


def _preprocess_indices(indices: list[int], decode_only: bool = False) -> float:
    """Worker: preprocess (or only decode) photos already in memory; returns CPU seconds."""
    from real_photos import decode_only as decode

    from tagging.errors import ImageError
    from tagging.photos.segment import preprocess

    function = decode if decode_only else preprocess
    start = time.process_time()
    for i in indices:
        with contextlib.suppress(ImageError):
            function(_POOL_IMAGES[i % len(_POOL_IMAGES)])
    return time.process_time() - start


def child_lower_bound(p: dict) -> dict:
    """Decode + preprocess only (or, with decode_only, decode + a plain 28x28 resize): the
    same warm forkserver pool and chunking, no Parquet, no model, photos already in the
    workers' memory."""
    from tagging.photos.pool import CHUNK_ROWS

    n, workers = p["rows"], p["workers"]
    chunks = [list(range(i, min(i + CHUNK_ROWS, n))) for i in range(0, n, CHUNK_ROWS)]
    work = functools.partial(_preprocess_indices, decode_only=p.get("decode_only", False))
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver"),
                             initializer=_load_pool, initargs=(p["pool"],)) as pool:
        list(pool.map(work, [[0]] * workers))  # workers up and warm
        start = time.perf_counter()
        cpu = sum(pool.map(work, chunks))
        wall = time.perf_counter() - start
    return {"rows": n, "seconds": round(wall, 2), "images_per_s": round(n / wall, 1),
            "worker_cpu_ms_per_image": round(1000 * cpu / n, 2)}


def child_naive(p: dict) -> dict:
    """pandas reads the whole file; per row: full-size Pillow decode, the same segmentation,
    Keras model.predict on one image."""
    import keras
    import pandas as pd
    from PIL import Image, ImageOps

    from model_registry import Registry
    from tagging.labels import CATEGORY_SLUGS
    from tagging.photos.segment import to_fashion_mnist

    model = keras.saving.load_model(Registry(p["registry"]).get("champion").model_path)
    model.predict(np.zeros((1, 28, 28), np.float32), verbose=0)  # first-call tracing, untimed
    start = time.perf_counter()
    frame = pd.read_parquet(p["file"])
    read_s = time.perf_counter() - start
    seconds = {"decode": 0.0, "preprocess": 0.0, "predict": 0.0}
    predictions: dict[str, str] = {}
    start = time.perf_counter()
    for product_id, data in zip(frame["product_id"][:p["sample"]],
                                frame["image"][:p["sample"]], strict=True):
        try:
            t0 = time.perf_counter()
            image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            t1 = time.perf_counter()
            pixels = to_fashion_mnist(image)
            t2 = time.perf_counter()
            probs = model.predict(pixels[None].astype(np.float32) / 255, verbose=0)
            t3 = time.perf_counter()
        except Exception:  # broken rows: the naive job skips them
            continue
        predictions[product_id] = CATEGORY_SLUGS[int(probs.argmax())]
        for stage, took in zip(seconds, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            seconds[stage] += took
    loop_s = time.perf_counter() - start
    n = min(p["sample"], len(frame))
    per_image = read_s / len(frame) + loop_s / n
    return {"file_rows": len(frame), "read_s": round(read_s, 2), "sample": n,
            "ms_per_image": {k: round(1000 * v / n, 2) for k, v in seconds.items()},
            "images_per_s": round(1 / per_image, 2), "predictions": predictions}


CHILDREN = {"train": child_train, "tag": child_tag, "shard": child_shard,
            "lower_bound": child_lower_bound, "naive": child_naive,
            "formats": real_photos.child_formats, "peer": real_photos.child_peer}


# ---------------------------------------------------------------- the benchmark steps


def machine() -> dict:
    import PIL
    import pyarrow

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(), "pillow": PIL.__version__,
            "pyarrow": pyarrow.__version__, "numpy": np.__version__}


def tag_run(root: Path, date: str, registry: Path, workers: int, model: str = "champion"
            ) -> dict:
    result = run_child("tag", {"catalogue": str(root), "date": date, "registry": str(registry),
                               "workers": workers, "rows_per_shard": 20_000, "model": model})
    result["end_to_end_images_per_s"] = round(result["rows"] / result["wall_s"], 1)
    result["cpu_ms_per_image"] = round(1000 * result["cpu_s"] / result["rows"], 2)
    result["ms_per_image"] = {k: round(1000 * v / result["rows"], 2)
                              for k, v in result.get("stage_seconds", {}).items()}
    log(f"tagged {result['rows']} rows: {result['end_to_end_images_per_s']} images/s end to end,"
        f" peak RSS {result['peak_rss_mb']} MB")
    return result


def s3_run(work: Path, root: Path, date: str, registry: Path, workers: int,
           version: str) -> dict:
    """The same partition tagged from an S3 server (SeaweedFS on loopback): input read
    through pyarrow's S3 filesystem, shards staged and the day published on S3."""
    from tagging import storage
    from tagging.ops.s3server import S3Server

    server = S3Server(work / "s3").start(buckets=("bench",))
    saved = dict(os.environ)
    try:
        os.environ.update(server.env())  # the child (tag_run) inherits them
        remote = storage.Root(f"s3://bench/catalogue-{time.time_ns()}")
        for path in sorted((root / "incoming" / f"dt={date}").glob("*.parquet")):
            storage.upload_file(path, remote / "incoming" / f"dt={date}" / path.name)
        log(f"tagging the partition from {server.endpoint}")
        return tag_run(remote, date, registry, workers, version)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        shutil.rmtree(work / "s3", ignore_errors=True)


def scale_out(root: Path, registry: Path, version: str, workers: int) -> dict:
    """One partition as 1 shard x `workers` decoding processes vs `workers` shards x 1,
    each shard in its own process (like the DAG's mapped tasks), then publish."""
    from tagging.catalogue.planning import plan_shards
    from tagging.catalogue.publish import publish_partition

    date = DATES["scale"]
    total = sum(s["rows"] for s in plan_shards(root, date, rows_per_shard=10**9))
    results = {}
    for name, n_shards, per_shard_workers in ((f"1 shard x {workers} workers", 1, workers),
                                               (f"{workers} shards x 1 worker", workers, 1)):
        shards = plan_shards(root, date, rows_per_shard=-(-total // n_shards))
        start = time.perf_counter()
        run_id = f"scale-{n_shards}"
        params = [{"shard": s, "catalogue": str(root), "registry": str(registry),
                   "version": version, "run_id": run_id, "workers": per_shard_workers}
                  for s in shards]
        staged = run_parallel(params, slots=n_shards)
        publish_partition(root, date, staged=staged, model_version=version, tagged_at=TAGGED_AT)
        wall = time.perf_counter() - start
        results[name] = {"shards": len(shards), "seconds": round(wall, 2),
                         "images_per_s": round(total / wall, 1)}
        log(f"scale-out {name}: {results[name]}")
    tiny = run_child("shard", {"shard": plan_shards(root, DATES["tiny"])[0],
                               "catalogue": str(root), "registry": str(registry),
                               "version": version, "run_id": "tiny", "workers": workers})
    return {"rows": total, "runs": results, "fixed_cost_per_shard_task_s": tiny["wall_s"]}


def run_parallel(params: list[dict], slots: int) -> list[str]:
    """Run shard tasks in separate processes, at most `slots` at a time; staged paths."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(slots) as threads:
        return [r["staged"] for r in threads.map(lambda p: run_child("shard", p), params)]


def recommend_rows_per_shard(throughput_per_task: float, fixed_cost_s: float) -> dict:
    """Large enough that the fixed cost of a task is <= 1 % of it, small enough that a
    retried shard costs at most ~10 minutes; a multiple of the row-group size."""
    low = 100 * fixed_cost_s * throughput_per_task
    high = 600 * throughput_per_task
    rows = int(max(low, min(high, 20_000)) // ROW_GROUP_ROWS * ROW_GROUP_ROWS) or ROW_GROUP_ROWS
    return {"rows_per_shard": rows, "min_rows_for_1pct_overhead": int(low),
            "rows_in_10_min": int(high), "minutes_per_shard": round(rows / throughput_per_task
                                                                    / 60, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--rows", type=int, help="photos in the big run (default 100000)")
    parser.add_argument("--small-rows", type=int, help="photos in the small run (10000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--skip", nargs="*", default=[], choices=[
        "train", "big", "thumbs", "naive", "scale", "photos", "photo-train", "peer", "s3"],
        help="steps to leave out")
    parser.add_argument("--real-photos", help="labelled dev photos (manifest.csv + images/; "
                        "default: $TAGGING_REAL_PHOTOS, else real-photos-dev beside the "
                        "Fashion-MNIST folder or in ../shared)")
    parser.add_argument("--held-out-photos", help="labelled photos never trained on, for "
                        "the accuracy figures (default: real-photos-stream, found likewise)")
    parser.add_argument("--keep", action="store_true", help="keep the generated catalogues")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))), flush=True)
        return 0
    return benchmark(args)


def benchmark(args) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    sizes["rows"] = args.rows or sizes["rows"]
    sizes["small_rows"] = args.small_rows or sizes["small_rows"]
    data_dir = os.environ.get("TAGGING_FASHION_MNIST_DIR")
    work, workers = args.workdir, args.workers
    root, registry = work / "catalogue", work / "registry"
    results: dict = {"machine": machine(), "sizes": sizes, "workers": workers,
                     "command": " ".join([Path(sys.executable).name, *sys.argv])}
    log(f"machine: {results['machine']}")
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()

    if "train" in args.skip and (registry / "aliases").exists():
        log("training skipped: using the champion in " + str(registry))
    else:
        shutil.rmtree(registry, ignore_errors=True)
        log("training the default model")
        results["training"] = run_child("train", {
            "registry": str(registry), "data_dir": data_dir, "train": sizes["train"],
            "gate": {} if not args.quick else {"min_accuracy": 0.5, "min_class_recall": 0.0}})
        log(f"training: {results['training']}")
    from model_registry import Registry

    version = Registry(registry).get("champion").version

    pool = work / f"pool-{sizes['pool']}.parquet"
    if not pool.exists():
        log(f"rendering a pool of {sizes['pool']} photos")
        render_pool(pool, sizes["pool"], data_dir, workers)
    log("writing partitions")
    small = write_partition(root, DATES["small"], pool, sizes["small_rows"])
    write_partition(root, DATES["tiny"], pool, 1)

    results["lower_bound"] = [run_child("lower_bound", {
        "pool": str(pool), "rows": sizes["lower_bound_rows"], "workers": workers})]
    log(f"lower bound: {results['lower_bound'][-1]}")
    results["small"] = tag_run(root, DATES["small"], registry, workers)
    results["lower_bound"].append(run_child("lower_bound", {
        "pool": str(pool), "rows": sizes["lower_bound_rows"], "workers": workers}))
    log(f"lower bound: {results['lower_bound'][-1]}")

    if "naive" not in args.skip:
        log(f"naive baseline on {sizes['naive_sample']} rows")
        naive = run_child("naive", {"file": str(small), "registry": str(registry),
                                    "sample": sizes["naive_sample"]})
        naive["agreement_with_job"] = agreement(root, DATES["small"], naive.pop("predictions"))
        results["naive"] = naive
        log(f"naive: {naive}")
    if "thumbs" not in args.skip:
        write_partition(root, DATES["thumbs"], pool, sizes["thumb_rows"], thumbs=True)
        results["thumbs"] = tag_run(root, DATES["thumbs"], registry, workers)
    if "scale" not in args.skip:
        write_partition(root, DATES["scale"], pool, sizes["scale_rows"])
        results["scale_out"] = scale_out(root, registry, version, workers)
    if "photos" not in args.skip:
        photo_steps(args, sizes, work, registry, pool, small, results)
    if "big" not in args.skip:
        log(f"writing the big partition ({sizes['rows']} rows)")
        write_partition(root, DATES["big"], pool, sizes["rows"])
        results["big"] = tag_run(root, DATES["big"], registry, workers)
    results["total_minutes"] = round((time.perf_counter() - started) / 60, 1)
    summarise(results)
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    log(f"results: {work / 'results.json'}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def photo_steps(args, sizes: dict, work: Path, registry: Path, demo_pool: Path,
                demo_file: Path, results: dict) -> None:
    """Issue 13: training with real photos; a real-photo catalogue tagged by the job and the
    tf.data peer; decode-only bounds; CPU per photo by format."""
    root, workers = work / "catalogue", args.workers
    dev = real_photos.photo_folder("real-photos-dev", args.real_photos)
    held_out = real_photos.photo_folder("real-photos-stream", args.held_out_photos)
    if dev is None:
        log("no labelled real photos found (--real-photos): real-photo steps skipped")
        return
    photo_registry = work / "registry-photos"
    if "photo-train" in args.skip and (photo_registry / "aliases").exists():
        log("training with real photos skipped: using the champion in " + str(photo_registry))
    else:
        shutil.rmtree(photo_registry, ignore_errors=True)
        log(f"training with the labelled photos in {dev}")
        results["photo_training"] = run_child("train", {
            "registry": str(photo_registry), "data_dir": os.environ.get(
                "TAGGING_FASHION_MNIST_DIR"), "train": {**sizes["train"], "real_photos": str(dev)},
            "gate": {"min_accuracy": 0.5, "min_class_recall": 0.0}})  # a benchmark's registry
        log(f"training with real photos: {results['photo_training']}")
    from model_registry import Registry

    photo_model = Registry(photo_registry).get("champion")
    results["photo_model"] = {"version": photo_model.version,
                              "real_photos": photo_model.metadata["metrics"].get("real_photos")}
    pool = work / "pool-real.parquet"
    results["real_pool"] = {"folder": dev.name,
                            "formats": real_photos.build_photo_pool(pool, dev)}
    real_file = write_partition(root, DATES["real"], pool, sizes["real_rows"])
    log("CPU per photo by format")
    results["formats"] = run_child("formats", {"pools": {"demo": str(demo_pool),
                                                         "real": str(pool)},
                                               "per_format": sizes["per_format"]})
    results["decode_bound"] = {}
    for name, photos in (("demo", demo_pool), ("real", pool)):
        results["decode_bound"][name] = run_child("lower_bound", {
            "pool": str(photos), "rows": sizes["lower_bound_rows"], "workers": workers,
            "decode_only": True})
        log(f"decode-only bound, {name} photos: {results['decode_bound'][name]}")
    results["real_lower_bound"] = run_child("lower_bound", {
        "pool": str(pool), "rows": sizes["lower_bound_rows"], "workers": workers})
    results["real"] = tag_run(root, DATES["real"], photo_registry, workers, photo_model.version)
    if "s3" not in args.skip:
        results["real_s3"] = s3_run(work, root, DATES["real"], photo_registry, workers,
                                    photo_model.version)
        results["real_local_again"] = tag_run(root, DATES["real"], photo_registry, workers,
                                              photo_model.version)
    peer_runs = {"demo": (demo_file, registry, Registry(registry).get("champion").version),
                 "real": (real_file, photo_registry, photo_model.version)}
    if held_out is not None:
        held_pool = work / "pool-held-out.parquet"
        formats = real_photos.build_photo_pool(held_pool, held_out)
        results["held_out_pool"] = {"folder": held_out.name, "formats": formats}
        held_file = write_partition(root, DATES["held_out"], held_pool, sum(formats.values()))
        results["held_out"] = tag_run(root, DATES["held_out"], photo_registry, workers,
                                      photo_model.version)
        peer_runs["held_out"] = (held_file, photo_registry, photo_model.version)
    if "peer" not in args.skip:
        results["peer"] = {}
        for name, (file, model_registry, version) in peer_runs.items():
            log(f"tf.data peer on the {name} partition")
            run = run_child("peer", {"file": str(file), "registry": str(model_registry),
                                     "version": version})
            run["end_to_end_images_per_s"] = round(run["rows"] / run["wall_s"], 1)
            results["peer"][name] = run
            log(f"peer, {name}: {run}")


def agreement(root: Path, date: str, predictions: dict[str, str]) -> float:
    """Share of the naive baseline's rows where the job published the same category."""

    from tagging.catalogue.published import read_published

    table = read_published(root, date, columns=["product_id", "category"])
    published = dict(zip(table["product_id"].to_pylist(), table["category"].to_pylist(),
                         strict=True))
    same = [published.get(pid) == cat for pid, cat in predictions.items()]
    return round(sum(same) / max(len(same), 1), 4)


def summarise(r: dict) -> None:
    """Print the figures of issue 5 as one table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="catalogue tagging benchmark", show_header=False)
    add = table.add_row
    m = r["machine"]
    add("machine", f"{m['nproc']} x {m['cpu']}, {m['memory_gb']} GB; load avg at start "
        f"{m['load_avg_at_start']}; {r['workers']} decoding workers")
    small = r["small"]
    bound = statistics.median(lb["images_per_s"] for lb in r["lower_bound"])
    add(f"tagging {small['rows']} photos (762x1000)",
        f"{small['end_to_end_images_per_s']} images/s end to end ({small['wall_s']} s, "
        f"CPU {small['cpu_ms_per_image']} ms/image), accuracy vs true_category "
        f"{small.get('accuracy_vs_true_category')}")
    add("  time per stage (ms/image)", ", ".join(
        f"{k} {v}" for k, v in small["ms_per_image"].items())
        + "  [decode = CPU of the decoding workers, summed; wait = main process blocked on them]")
    add("lower bound: decode+preprocess only", f"{bound} images/s (runs: "
        f"{[lb['images_per_s'] for lb in r['lower_bound']]}; worker CPU "
        f"{r['lower_bound'][0]['worker_cpu_ms_per_image']} ms/image)")
    add("  full job / lower bound", f"{small['end_to_end_images_per_s'] / bound:.0%} (wall); "
        f"{r['lower_bound'][0]['worker_cpu_ms_per_image'] / small['cpu_ms_per_image']:.0%} "
        "(CPU per image, robust to other load)")
    if "naive" in r:
        n = r["naive"]
        add("naive baseline", f"{n['images_per_s']} images/s (sample {n['sample']} rows, "
            f"pandas read {n['read_s']} s; ms/image {n['ms_per_image']}); same tag as the job "
            f"on {n['agreement_with_job']:.1%} of rows")
        add("  speed-up over naive", f"{small['end_to_end_images_per_s'] / n['images_per_s']:.1f}x")
    if "thumbs" in r:
        t = r["thumbs"]
        add(f"small-image variant ({THUMB_LONG_EDGE} px JPEG, {t['rows']} rows)",
            f"{t['end_to_end_images_per_s']} images/s; ms/image {t['ms_per_image']}")
    if "big" in r:
        big = r["big"]
        add(f"tagging {big['rows']} photos", f"{big['end_to_end_images_per_s']} images/s end "
            f"to end ({big['wall_s'] / 60:.1f} min)")
        add("peak RSS, whole process tree", f"{small['rows']} photos: {small['peak_rss_mb']} MB;"
            f" {big['rows']} photos: {big['peak_rss_mb']} MB; ratio "
            f"{big['peak_rss_mb'] / small['peak_rss_mb']:.2f}; per process at {big['rows']}: "
            f"{big['peak_rss_mb_per_process']}")
    else:
        add("peak RSS, whole process tree", f"{small['rows']} photos: {small['peak_rss_mb']} MB")
    if "training" in r:
        t = r["training"]
        add("training (default model)", f"{t['fit_s']} s fit, {t['epochs']} epochs, "
            f"{t['epochs'] / t['fit_s']:.2f} epochs/s, test accuracy {t['accuracy']}; "
            f"{t['wall_s']} s for the whole train command")
    if "scale_out" in r:
        s = r["scale_out"]
        for name, run in s["runs"].items():
            add(f"scale-out: {s['rows']} rows, {name}",
                f"{run['images_per_s']} images/s ({run['seconds']} s, incl. process start "
                "and publish)")
        best = max(s["runs"].values(), key=lambda x: x["images_per_s"])
        per_task = best["images_per_s"] / best["shards"] if best["shards"] > 1 else \
            best["images_per_s"]
        rec = recommend_rows_per_shard(per_task, s["fixed_cost_per_shard_task_s"])
        r["rows_per_shard_recommendation"] = rec
        add("  fixed cost of one shard task", f"{s['fixed_cost_per_shard_task_s']} s (a 1-row "
            "shard: process start, imports, model load, worker start, write)")
        add("  rows_per_shard", f"{rec['rows_per_shard']} (~{rec['minutes_per_shard']} min per "
            f"task; >= {rec['min_rows_for_1pct_overhead']} keeps the fixed cost <= 1 %, "
            f"<= {rec['rows_in_10_min']} keeps a retry <= 10 min)")
    if "real" in r:
        summarise_photos(add, r)
    add("benchmark wall time", f"{r['total_minutes']} min")
    Console(width=160).print(table)


def summarise_photos(add, r: dict) -> None:
    """The rows of issue 13: real photos, decode-only bounds, the tf.data peer, formats."""
    plain, photos = r.get("training"), r.get("photo_training")
    if photos:
        held = r["photo_model"]["real_photos"] or {}
        versus = (f"; plain training {plain['wall_s']} s (fit {plain['fit_s']} s): ratio "
                  f"{photos['wall_s'] / plain['wall_s']:.1f}x" if plain else "")
        add("training with labelled real photos", f"{photos['wall_s']} s for the whole train "
            f"command (fit {photos['fit_s']} s, + cross-fitting){versus}; test accuracy "
            f"{photos['accuracy']}, held-out (cross-fit) accuracy on the photos "
            f"{held.get('accuracy')}")
    pool = r["real_pool"]
    real, bound = r["real"], r["decode_bound"]
    add(f"tagging {real['rows']} real photos ({pool['folder']} cycled; formats "
        f"{pool['formats']})", f"{real['end_to_end_images_per_s']} images/s end to end "
        f"({real['wall_s']} s, CPU {real['cpu_ms_per_image']} ms/image, peak RSS "
        f"{real['peak_rss_mb']} MB), model {r['photo_model']['version']}")
    add("  time per stage (ms/image)", ", ".join(
        f"{k} {v}" for k, v in real["ms_per_image"].items()))
    if "real_s3" in r:
        s3, again = r["real_s3"], r["real_local_again"]
        local = max(real["end_to_end_images_per_s"], again["end_to_end_images_per_s"])
        ratio = s3["end_to_end_images_per_s"] / local
        add("  from S3 (SeaweedFS on loopback) vs local disk", f"{s3['end_to_end_images_per_s']}"
            f" vs {real['end_to_end_images_per_s']} / {again['end_to_end_images_per_s']} "
            f"images/s (local before / after): {ratio:.0%} of the better local run (target "
            f">= 80 %: {'met' if ratio >= 0.8 else 'not met'}); peak RSS {s3['peak_rss_mb']} "
            f"vs {real['peak_rss_mb']} / {again['peak_rss_mb']} MB")
    lower = r["real_lower_bound"]
    add("  lower bound: decode+preprocess only", f"{lower['images_per_s']} images/s (worker "
        f"CPU {lower['worker_cpu_ms_per_image']} ms/image)")
    for name, job, target in (("demo", r["small"], 0.5), ("real", real, 0.25)):
        b = bound[name]
        wall = job["end_to_end_images_per_s"] / b["images_per_s"]
        cpu = b["worker_cpu_ms_per_image"] / job["cpu_ms_per_image"]
        add(f"decode-only bound, {name} photos", f"{b['images_per_s']} images/s (worker CPU "
            f"{b['worker_cpu_ms_per_image']} ms/image: decode_photo + a 28x28 resize)")
        add(f"  job / decode-only bound, {name}", f"{wall:.0%} (wall); {cpu:.0%} (CPU per "
            f"image) — target >= {target:.0%}: {'met' if min(wall, cpu) >= target else 'not met'}"
            + (" by CPU" if cpu >= target > wall else ""))
    if "held_out" in r:
        h = r["held_out"]
        add(f"job on held-out photos ({r['held_out_pool']['folder']}, {h['rows']})",
            f"accuracy {h.get('accuracy_vs_true_category')}; unflagged precision "
            f"{h.get('unflagged_precision')} at coverage {h.get('unflagged_coverage')}")
    jobs = {"demo": r["small"], "real": real, "held_out": r.get("held_out")}
    notes = {"real": ", in-sample: the model trained on these photos",
             "held_out": ", never trained on"}
    for name, peer in r.get("peer", {}).items():
        job = jobs[name]
        add(f"tf.data peer, {name} partition ({peer['rows']} rows{notes.get(name, '')})",
            f"{peer['pipeline_images_per_s']} images/s in the pipeline, "
            f"{peer['end_to_end_images_per_s']} end to end (job: "
            f"{job['end_to_end_images_per_s']}); accuracy {peer['accuracy_vs_true_category']}"
            f" (job: {job.get('accuracy_vs_true_category')}); CPU "
            f"{1000 * peer['cpu_s'] / peer['rows']:.2f} ms/image; peak RSS "
            f"{peer['peak_rss_mb']} MB")
    for name, f in r["formats"]["by_format"].items():
        add(f"  CPU ms/photo, {name} ({f['photos']}, decoded {f['decoded_size']})",
            f"decode_photo {f['decode_photo_ms']} · OpenCV decode {f['opencv_decode_ms']} "
            f"(reduced 1/4: {f['opencv_decode_reduced_4_ms']}) · decode-only bound "
            f"{f['decode_only_bound_ms']} · to_fashion_mnist {f['to_fashion_mnist_ms']}")


if __name__ == "__main__":
    sys.exit(main())

"""The `tagging` command line, run as a user would run it (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tagging.catalogue.published import read_manifest

COMMANDS = ["train", "evaluate", "tag", "demo-catalogue", "evaluate-photos", "demo",
            "registry", "stack", "review"]


def tagging(*args: str, env: dict | None = None, check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "tagging.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"tagging {args} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    out = tagging(command, "--help").stdout
    assert "usage: tagging" in out and "--help" in out


def test_top_level_help_lists_commands():
    out = tagging("--help").stdout
    assert all(c in out for c in COMMANDS)


def test_train_then_worse_train_is_refused(tmp_path, fmnist_dir):
    env = {"TAGGING_HOME": str(tmp_path), "TAGGING_FASHION_MNIST_DIR": str(fmnist_dir)}
    low = ["--min-accuracy", "0.5", "--min-class-recall", "0"]
    first = tagging("train", "--train-subset", "8000", "--epochs", "3", *low, env=env)
    assert "v0001 promoted" in first.stdout and "champion: v0001" in first.stdout
    assert "accuracy" in first.stdout and "report:" in first.stdout
    worse = tagging("train", "--train-subset", "1000", "--epochs", "1", "--hidden-units", "8",
                    *low, env=env)
    assert "v0002 refused" in worse.stdout and "champion: v0001" in worse.stdout

    listing = tagging("registry", "list", env=env).stdout
    assert "v0001" in listing and "v0002" in listing
    assert "v0001" in tagging("registry", "show", "champion", env=env).stdout
    forced = tagging("registry", "promote", "v0002", "--force", env=env).stdout
    assert "forced" in forced
    assert "rolled back to v0001" in tagging("registry", "rollback", env=env).stdout
    refused = tagging("registry", "promote", "v0002", env=env, check=False)
    assert refused.returncode == 2 and "refused" in refused.stdout
    evaluated = tagging("evaluate", "v0001", "--out", str(tmp_path / "eval"), env=env).stdout
    assert "accuracy" in evaluated and (tmp_path / "eval" / "confusion_matrix.png").exists()
    events = tagging("registry", "events", env=env).stdout
    assert events.count('"event": "promoted"') == 2 and '"rollback"' in events


def test_tag_a_demo_partition(tmp_path, fmnist_dir, champion_registry):
    env = {"TAGGING_HOME": str(tmp_path), "TAGGING_FASHION_MNIST_DIR": str(fmnist_dir),
           "TAGGING_REGISTRY": str(champion_registry)}
    tagging("demo-catalogue", "--days", "1", "--end", "2026-11-02", "--rows-per-day", "30",
            env=env)
    tag = ("tag", "--date", "2026-11-02", "--workers", "1")
    strict = tagging(*tag, env=env, check=False)  # 5 broken rows of 35 break the 5 % limit
    assert strict.returncode == 1 and "error rate 0.143 > limit 0.05" in strict.stdout
    out = tagging(*tag, "--max-error-rate", "0.2", "--max-review-rate", "1", env=env).stdout
    assert "rows" in out and "35" in out and "accuracy vs true category" in out
    assert read_manifest(tmp_path / "catalogue", "2026-11-02")["counts"]["rows"] == 35


def test_demo_catalogue_fills_an_s3_root_as_a_folder(tmp_path, fmnist_dir, s3_env):
    """The same command, the same bytes, whether the catalogue is a folder or on S3."""
    from tagging import storage
    from tagging.catalogue.planning import plan_shards

    remote = f"s3://tagging/demo-{tmp_path.name}"
    for where in (remote, str(tmp_path / "catalogue")):
        tagging("demo-catalogue", "--catalogue", where, "--days", "2", "--end", "2026-11-02",
                "--rows-per-day", "6", env={"TAGGING_FASHION_MNIST_DIR": str(fmnist_dir)})
    for day in ("2026-11-01", "2026-11-02"):
        part = f"incoming/dt={day}/part-0.parquet"
        written = storage.Root(f"{remote}/{part}")
        assert storage.read_bytes(written) == (tmp_path / "catalogue" / part).read_bytes()
        assert [s["rows"] for s in plan_shards(remote, day)] == [11]  # 6 photos + 5 broken
    assert [o.root.name for o in storage.list_objects(storage.Root(remote))] == [
        "part-0.parquet"] * 2  # nothing else: no temporary object left


def test_clear_errors_not_tracebacks(tmp_path):
    env = {"TAGGING_HOME": str(tmp_path)}
    missing = tagging("tag", "--date", "2026-01-01", env=env, check=False)
    assert missing.returncode == 1 and "no input files" in missing.stdout
    assert "Traceback" not in missing.stdout + missing.stderr
    bad_date = tagging("tag", "--date", "yesterday", env=env, check=False)
    assert bad_date.returncode == 2 and "not a YYYY-MM-DD date" in bad_date.stderr
    no_champion = tagging("evaluate", "champion", env=env, check=False)
    assert no_champion.returncode == 1 and "no champion" in no_champion.stdout


@pytest.mark.slow
def test_train_on_real_photos_then_evaluate_them(tmp_path, fmnist_dir, photo_set):
    """Held-out figures after training; evaluating the same photos again warns: in-sample."""
    registry = str(tmp_path / "registry")
    out = tagging("train", "--registry", registry, "--data-dir", str(fmnist_dir),
                  "--train-subset", "6000", "--epochs", "2", "--real-photos", str(photo_set),
                  "--real-photo-repeats", "5", "--min-accuracy", "0.5",
                  "--min-class-recall", "0").stdout
    assert "held-out labels of" in out and "not flagged for review" in out
    out = tagging("evaluate-photos", "--registry", registry, "--images",
                  str(photo_set / "images"), "--manifest", str(photo_set / "manifest.csv"),
                  "--out", str(tmp_path / "eval")).stdout
    assert "in-sample" in out and (tmp_path / "eval" / "contact_sheet.png").exists()


def test_expected_errors_are_one_line_and_tracebacks_need_verbose(champion_registry):
    """A registry refusal (no earlier champion to roll back to) is reported, not raised."""
    args = ("registry", "--registry", str(champion_registry), "rollback")
    quiet = tagging(*args, check=False)
    assert quiet.returncode == 1
    assert quiet.stdout.strip().startswith("error:") and "nothing to roll back to" in quiet.stdout
    assert "Traceback" not in quiet.stdout + quiet.stderr
    verbose = tagging("-v", *args, check=False)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert "RegistryError" in verbose.stderr


def test_the_loop_demo_table_has_one_line_per_day_in_120_columns(monkeypatch, tmp_path):
    """`tagging demo --real-photos` output: the details go to the JSON file it names."""
    from rich.console import Console

    from tagging.cli import render
    from tagging.ops.demo import GateEvent, LoopDay, LoopDemoRun

    reasons = ["holdout: candidate 0.7412 vs champion 0.7021 on the same 51 photos " * 3]
    days = [LoopDay(partition=f"2026-05-0{i}", ok=i != 4, trained=[f"v000{i}"],
                    gate=[GateEvent(f"v000{i}", "promoted" if i % 2 else "refused", reasons)],
                    champion="v0001", holdout_photos=51, holdout_accuracy=0.7412,
                    holdout_coverage=0.39,
                    quality={"accuracy": 0.66, "coverage": 0.31, "review_rate": 0.62},
                    retagged=["2026-05-01", "2026-05-02"], error="TaggingError: x" * (i == 4))
            for i in range(1, 6)]
    run = LoopDemoRun(airflow_home=str(tmp_path / "airflow"), catalogue=str(tmp_path / "c"),
                      registry=str(tmp_path / "r"), champion="v0005", days=days,
                      details=str(tmp_path / "loop-demo.json"))
    with open(os.devnull, "w") as sink:
        console = Console(width=120, record=True, file=sink)
        monkeypatch.setattr(render, "console", console)
        render.print_loop_demo(run)
    lines = console.export_text().splitlines()
    rows = [line for line in lines if line.startswith("│ 2026-05-0")]
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert len(rows) == 5 and all(len(line) <= 120 for line in table)
    assert "refused v0002" in rows[1] and "FAIL" in rows[3] and "2026-05-04 failed" in lines[-3]
    assert any(run.details in line for line in lines)

"""The pictures of the documentation site, made from a real run, never by hand.

    .venv/bin/python docs/screenshots.py             # = make screenshots: all three
    .venv/bin/python docs/screenshots.py quality graph

* `quality`: docs/quality.png, drawn by `tagging quality` over the catalogue of the
  learning-loop demo (`tagging demo --real-photos … --workdir var/demo-loop`), which this
  script runs first when that catalogue is missing (a few minutes a day on 2 cores);
* `graph`: docs/airflow-graph.png, the DAG in Airflow's own UI (graph view of the demo's
  last run): an api-server on 127.0.0.1 over the demo's SQLite metadata DB, read by
  headless Chromium (Debian's, driven by its chromedriver; nothing is downloaded);
* `review`: docs/review-page.png, kept by the browser test
  (tests/test_review_browser.py, REVIEW_SCREENSHOT).

Every process this starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DAG_ID = "catalogue_tagging"


def log(message: str) -> None:
    print(f"screenshots: {message}", flush=True)


def real_photos() -> Path:
    """The labelled photo folder the demo spreads over its days."""
    if os.environ.get("TAGGING_REAL_PHOTOS"):
        return Path(os.environ["TAGGING_REAL_PHOTOS"])
    data = os.environ.get("TAGGING_FASHION_MNIST_DIR")
    shared = Path(data).parent if data else REPO.parent / "shared"
    return shared / "real-photos-dev"


def ensure_demo(workdir: Path, days: int) -> None:
    if (workdir / "catalogue" / "tagged" / "_delta_log").is_dir():
        log(f"using the learning-loop demo in {workdir}")
        return
    photos = real_photos()
    if not (photos / "manifest.csv").exists():
        raise SystemExit(f"no labelled photo folder at {photos}: set TAGGING_REAL_PHOTOS")
    log(f"running the learning-loop demo into {workdir} ({days} days; a few minutes a day)")
    subprocess.run([str(BIN / "tagging"), "demo", "--real-photos", str(photos),
                    "--workdir", str(workdir), "--days", str(days)], check=True)


def quality(workdir: Path) -> None:
    out = DOCS / "quality.png"
    subprocess.run([str(BIN / "tagging"), "quality", "--catalogue",
                    str(workdir / "catalogue"), "--out", str(out)], check=True)
    log(f"wrote {out}")


@contextlib.contextmanager
def api_server(workdir: Path) -> Iterator[str]:
    """Airflow's api-server (UI included) over the demo's metadata DB, loopback only, with
    every visitor an admin (no sign-in: it listens on 127.0.0.1 and lives for a minute)."""
    from tagging.ops.airflow import free_port, wait_http
    from tagging.ops.local import LocalAirflow, _stop

    local = LocalAirflow.in_workdir(workdir)
    port = free_port()
    env = local.env() | {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                         "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    local.log_dir.mkdir(parents=True, exist_ok=True)
    with open(local.log_dir / "screenshots-api-server.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/v2/monitor/health", alive=lambda: proc.poll() is None,
                  name=f"airflow api-server (see {local.log_dir})", timeout=180)
        yield url
    finally:
        _stop(proc, grace=30)


@contextlib.contextmanager
def chromium(width: int, height: int, scale: int = 1) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--window-size={width},{height}", f"--user-data-dir={profile}",
                     f"--force-device-scale-factor={scale}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
        try:
            yield driver
        finally:
            driver.quit()


def last_run(workdir: Path) -> str:
    from tagging.ops.local import LocalAirflow

    [(run_id,)] = LocalAirflow.in_workdir(workdir).query(
        "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY logical_date DESC LIMIT 1",
        DAG_ID)
    return run_id


def graph(workdir: Path) -> None:
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    out = DOCS / "airflow-graph.png"
    run_id = last_run(workdir)
    with api_server(workdir) as url, chromium(1300, 560, scale=2) as driver:
        driver.get(f"{url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
        wait = WebDriverWait(driver, 90)

        def click(label: str) -> None:
            wait.until(expected_conditions.element_to_be_clickable(
                (By.CSS_SELECTOR, f"button[aria-label^='{label}']"))).click()

        click("Show Graph")  # the run page opens on the grid
        click("Collapse Details Panel")  # the graph gets the whole width
        # one node per task, drawn once the DAG's structure and the run's states loaded
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".react-flow__node")) >= 10)
        time.sleep(3)  # the panel's collapse animation
        driver.execute_script(  # the minimap and the zoom buttons are not the DAG
            "for (const e of document.querySelectorAll('.react-flow__minimap, "
            ".react-flow__controls, .react-flow__attribution')) e.style.display = 'none';")
        driver.execute_script("document.querySelector('.react-flow__controls-fitview')"
                              ".click();")
        time.sleep(2)  # the fit-view animation
        flow = driver.find_element(By.CSS_SELECTOR, ".react-flow")
        flow.screenshot(str(out))
        box = driver.execute_script(  # the nodes' extent, relative to the flow's corner
            "const f = arguments[0].getBoundingClientRect();"
            "const r = [...document.querySelectorAll('.react-flow__node, .react-flow__edge')]"
            ".map(n => n.getBoundingClientRect());"
            "return [Math.min(...r.map(b => b.left)) - f.left, Math.min(...r.map(b => b.top))"
            " - f.top, Math.max(...r.map(b => b.right)) - f.left,"
            " Math.max(...r.map(b => b.bottom)) - f.top].map(v => v * devicePixelRatio);",
            flow)
    shrink(out, box)
    log(f"wrote {out} (run {run_id})")


def shrink(path: Path, box: list[float] | None = None, margin: int = 24) -> None:
    """Cropped to `box` (CSS pixels, plus a margin), as a palette PNG: a screenshot of flat
    UI colours stays sharp in a fraction of the bytes."""
    from PIL import Image

    with Image.open(path) as image:
        if box:
            image = image.crop((max(0, int(box[0]) - margin), max(0, int(box[1]) - margin),
                                min(image.width, int(box[2]) + margin),
                                min(image.height, int(box[3]) + margin)))
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def review() -> None:
    out = DOCS / "review-page.png"
    subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider",
                    "tests/test_review_browser.py", "-k", "two_reviewers_at_once"],
                   cwd=REPO, check=True, env={**os.environ, "REVIEW_SCREENSHOT": str(out)})
    log(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", choices=["quality", "graph", "review", []],
                        help="which pictures (default: all)")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "demo-loop",
                        help="the learning-loop demo's work folder (made when missing)")
    parser.add_argument("--days", type=int, default=3, help="days of the demo, if it runs")
    args = parser.parse_args(argv)
    wanted = args.only or ["quality", "graph", "review"]
    workdir = args.workdir.absolute()
    if {"quality", "graph"} & set(wanted):
        ensure_demo(workdir, args.days)
    if "quality" in wanted:
        quality(workdir)
    if "graph" in wanted:
        graph(workdir)
    if "review" in wanted:
        review()


if __name__ == "__main__":
    main()

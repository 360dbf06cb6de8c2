"""The README's screenshot of the MLflow runs table (docs/img/mlflow-runs-table.png), in headless Chromium.

    .venv/bin/python scripts/screenshot_runs.py --tracking-uri sqlite:///mlflow.db --experiment lambda
    make screenshot ARGS="--experiment lambda"

It serves the store with ``mlflow server`` (what ``mlflow ui`` runs) on a free loopback port, opens the
URL a run's "next:" line prints (the experiment's runs table in Model training mode,
benchmark/run/summary.py), hides the sweep parents (``tags.`groupbench.role` = 'job'``), sorts by
``rmse`` (which lists the jobs flat), adds the metric columns a reader should add (``--columns``,
README "Browsing runs") through the *Columns* menu, and saves the page. Needs Playwright and its
Chromium (``pip install playwright && playwright install chromium``) or a Chromium on PATH;
without one it says so in one line and exits 2 (tests/test_docs.py then skips).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmark.run.summary import runs_table_url  # noqa: E402

COLUMNS = ("rmse", "ndcg_at_10", "precision_at_10", "recall_at_10", "fit_seconds")
JOBS = "tags.`groupbench.role` = 'job'"


def chromium() -> str | None:
    """A headless Chromium: Playwright's own, else one on PATH; None when there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
        if path and Path(path).exists():
            return path
    except Exception:
        pass
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(uri: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"screenshot: mlflow server on {uri} did not start; check --tracking-uri")


def add_columns(page, columns) -> list[str]:
    """Tick ``columns`` in the runs table's *Columns* menu; returns those it could tick."""
    added = []
    try:
        page.get_by_role("button", name="Columns").click(timeout=5000)
    except Exception:
        return added
    for name in columns:
        try:
            search = page.get_by_placeholder("Search columns")
            search.fill(name)
            page.get_by_role("checkbox", name=name, exact=True).first.check(timeout=3000)
            added.append(name)
        except Exception:
            continue
    page.keyboard.press("Escape")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="groupbench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "mlflow-runs-table.png")
    parser.add_argument("--columns", nargs="*", default=list(COLUMNS), help="metric columns to add")
    args = parser.parse_args(argv)
    browser_path = chromium()
    if browser_path is None:
        print("screenshot: no headless Chromium (pip install playwright && playwright install chromium)",
              file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    from benchmark.tracking.tracker import existing_store

    uri = existing_store(args.tracking_uri)
    experiment = MlflowClient(uri).get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"screenshot: experiment {args.experiment!r} not found in {uri}; pass --experiment", file=sys.stderr)
        return 2
    port = free_port()
    server = serve(uri, port)
    try:
        url = (runs_table_url(f"http://127.0.0.1:{port}", experiment.experiment_id)
               + "&" + urllib.parse.urlencode({"searchFilter": JOBS, "orderByKey": "metrics.`rmse`", "orderByAsc": "true"}))
        with sync_playwright() as p:
            browser = p.chromium.launch(headless=True, executable_path=browser_path)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(url, wait_until="networkidle")
            page.keyboard.press("Escape")  # a first-visit popup, if any
            added = add_columns(page, args.columns)
            page.wait_for_timeout(1000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"{args.out} ({url}; columns added: {', '.join(added) or 'none'})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

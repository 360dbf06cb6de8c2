"""The README's screenshot of the MLflow runs table (docs/img/mlflow-runs-table.png), in headless Chromium.

    .venv/bin/python scripts/screenshot_runs.py --tracking-uri sqlite:///mlflow.db --experiment lambda
    make screenshot ARGS="--experiment lambda"

It serves the store with ``mlflow server`` (what ``mlflow ui`` runs) on a free loopback port, opens the
URL a run's "next:" line prints (the experiment's runs table in Model training mode,
benchmark/run/summary.py), hides the sweep parents (``tags.`groupbench.role` = 'job'``), sorts by
``rmse`` (which lists the jobs flat), adds the metric columns a reader should add (``--columns``,
README "Browsing runs") through the *Columns* menu, and saves the page. Needs Playwright and its
Chromium (``pip install -e '.[screenshot]'`` and ``playwright install chromium``) or a Chromium on
PATH (Debian's ``apt-get install chromium``, as on the machine that took the README's picture);
without one it says so in one line and exits 2 (tests/test_docs.py then skips). Chromium starts
with no background networking: on a closed network its own lookups never settle.
"""

from __future__ import annotations

import argparse
import re
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
HIDE = ("Dataset", "Source", "Models")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


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


def toggle_columns(page, names, group: str) -> list[str]:
    """Click the entries ``names`` of the *Columns* menu's ``group`` ("Metrics" to add, "Attributes"
    to hide a shown one); returns those it could click. MLflow 3.17's menu is a tree in which a
    search hit is split into highlighted parts ("val_" + "rmse"), so an entry is the tree node whose
    whole title is the name, and its group folds under a search."""
    done = []
    try:
        page.get_by_role("button", name="Columns").first.click(timeout=5000)
    except Exception as exc:
        print(f"screenshot: no Columns menu ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
              f"the picture keeps the default columns", file=sys.stderr)
        return done
    search = page.get_by_placeholder("Search columns")
    for name in names:
        try:
            search.fill(name)
            page.wait_for_timeout(500)
            folder = page.locator('[class*="-tree-treenode"]', has=page.locator(
                '[class*="-tree-title"]', has_text=re.compile(rf"^{group}( \(\d+\))?$"))).first
            if "switcher-close" in (folder.get_attribute("class", timeout=3000) or ""):
                folder.locator('[class*="-tree-switcher"]').first.click(timeout=3000)
            title = page.locator('[class*="-tree-title"]', has_text=re.compile(f"^{re.escape(name)}$"))
            page.locator('[class*="-tree-treenode"]', has=title).first.locator(
                '[class*="-tree-checkbox"]').first.click(timeout=3000)
            done.append(name)
        except Exception as exc:  # a menu of another MLflow version: the picture without this change
            print(f"screenshot: column {name} not changed ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                  file=sys.stderr)
    page.keyboard.press("Escape")
    return done


def close_assistant(page) -> None:
    """MLflow 3's assistant panel opens beside the table on a first visit: close it."""
    try:
        page.get_by_role("button", name="Close", exact=True).first.click(timeout=3000)
    except Exception:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="groupbench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "mlflow-runs-table.png")
    parser.add_argument("--columns", nargs="*", default=list(COLUMNS), help="metric columns to add")
    args = parser.parse_args(argv)
    browser_path = chromium()
    if browser_path is None:
        print("screenshot: no headless Chromium (pip install -e '.[screenshot]', then apt-get install chromium "
              "or playwright install chromium)",
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
            # no background connections: on a closed network Chromium's own lookups never settle
            browser = p.chromium.launch(headless=True, executable_path=browser_path, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 700})
            page.goto(url, wait_until="load", timeout=120_000)  # a loaded machine: MLflow's bundle is large
            page.get_by_text("matching runs").first.wait_for(timeout=120_000)  # the runs table has rendered
            page.keyboard.press("Escape")  # a first-visit popup, if any
            close_assistant(page)
            hidden = toggle_columns(page, HIDE, "Attributes")  # room for the metrics
            added = toggle_columns(page, args.columns, "Metrics")
            page.wait_for_timeout(1000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
        print(f"{args.out} ({url}; columns added: {', '.join(added) or 'none'}; hidden: {', '.join(hidden) or 'none'})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

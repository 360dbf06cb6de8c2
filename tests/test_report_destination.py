"""Where a report goes (benchmark/report/destination.py): an ad-hoc report never touches the shipped
ones nor ``git status``; a folder git tracks is written only from a checkout without uncommitted code;
the header names a store in the repository by its relative path."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.core.config import REPO
from benchmark.report import build as report
from benchmark.report.destination import shown_store
from benchmark.tracking.tracker import git_commit
from tests.test_report import make_sweep

SHIPPED = "shipped report\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_sweep(tmp_path_factory.mktemp("sweep")).uri


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with the project's .gitignore, some code and a shipped report, all committed."""
    repo = tmp_path / "checkout"
    (repo / "reports" / "paper").mkdir(parents=True)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    (repo / "reports" / "paper" / "report.md").write_text(SHIPPED)
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    return repo


def test_an_ad_hoc_report_leaves_git_status_clean(store, checkout, monkeypatch):
    monkeypatch.chdir(checkout)
    assert report.main(["--experiment", "smoke", "--tracking-uri", store, "--no-log"]) == 0
    assert "experiment `smoke`" in (checkout / "outputs" / "reports" / "smoke" / "report.md").read_text()
    assert git(checkout, "status", "--porcelain", "--untracked-files=all") == ""
    assert (checkout / "reports" / "paper" / "report.md").read_text() == SHIPPED


@pytest.mark.slow
def test_a_tracked_folder_is_written_only_from_a_clean_checkout(store, checkout, monkeypatch, caplog):
    monkeypatch.chdir(checkout)
    argv = ["--experiment", "smoke", "--tracking-uri", store, "--no-log", "--out", "reports/paper"]
    (checkout / "code.py").write_text("x = 2\n")  # uncommitted code: the report would name a -dirty commit
    with caplog.at_level(logging.ERROR):
        assert report.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "--out reports/paper is tracked by git" in errors[0] and "(code.py)" in errors[0]
    assert (checkout / "reports" / "paper" / "report.md").read_text() == SHIPPED  # untouched

    git(checkout, "commit", "-qam", "code")
    assert report.main(argv) == 0
    assert "experiment `smoke`" in (checkout / "reports" / "paper" / "report.md").read_text()
    # the regenerated report is a change, but not to code: the commit stays clean and the next shipped
    # report may follow (make reports writes reports/paper, then reports/tuned)
    assert git(checkout, "status", "--porcelain", "--untracked-files=no") == " M reports/paper/report.md\n"
    assert git_commit(checkout) == git(checkout, "rev-parse", "HEAD").strip()
    assert report.main([*argv[:-1], "reports/tuned"]) == 0


def test_the_header_names_a_store_in_the_repository_by_its_relative_path():
    assert shown_store(f"sqlite:///{REPO / 'reports' / 'mlflow.db'}") == \
        "sqlite:///reports/mlflow.db (relative to the repository root)"
    outside = f"sqlite:///{REPO.parent.resolve() / 'elsewhere' / 'mlflow.db'}"
    assert shown_store(outside) == outside
    assert shown_store("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
